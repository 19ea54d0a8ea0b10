"""Data: pixel pairs for the estimator, and loaders for data sets that package registries ship."""

from __future__ import annotations

from .pairs import DEFAULT_MAX_PAIRS, PairBatches, make_pair_batches

__all__ = ["DEFAULT_MAX_PAIRS", "PairBatches", "make_pair_batches"]
