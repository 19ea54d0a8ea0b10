"""Streaming rate statistics that merge exactly across batches and processes.

Only counts, sums and sums of squares are kept per (layer, component), so shards measured by several
processes combine by addition (what ``accelerate``'s reduce does) and nothing grows with the data but the
optional per-pair rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class RateStats:
    """Per (layer, component) count, sum, sum of squares and excluded-pair count, on the compute device."""

    count: torch.Tensor
    total: torch.Tensor
    total_sq: torch.Tensor
    excluded: torch.Tensor
    keep_rates: bool = True
    batch_rates: list[torch.Tensor] = field(default_factory=list, repr=False)
    batch_sums: list[torch.Tensor] = field(default_factory=list, repr=False)
    """Each batch's (count, sum, sum_sq, excluded), so shards re-add in batch order (``distributed.py``)."""

    @classmethod
    def zeros(cls, num_layers: int, num_components: int, device: torch.device, keep_rates: bool = True) -> RateStats:
        def z() -> torch.Tensor:
            return torch.zeros(num_layers, num_components, dtype=torch.float64, device=device)

        return cls(z(), z(), z(), z(), keep_rates)

    def update(self, rates: torch.Tensor, valid: torch.Tensor) -> None:
        """Add a batch of rates of shape (pairs, layers, components); ``valid`` marks pairs to count."""
        r = torch.where(valid, rates, torch.zeros((), dtype=rates.dtype, device=rates.device)).double()
        batch = torch.stack([valid.sum(0).double(), r.sum(0), (r * r).sum(0), (~valid).sum(0).double()])
        self.count += batch[0]
        self.total += batch[1]
        self.total_sq += batch[2]
        self.excluded += batch[3]
        self.batch_sums.append(batch)
        if self.keep_rates:
            kept = torch.where(valid, rates, torch.full_like(rates, float("nan")))
            self.batch_rates.append(kept if kept.dtype == torch.float64 else kept.float())

    def merge(self, other: RateStats) -> RateStats:
        """The statistics of both shards together (rates concatenated when both kept them)."""
        out = RateStats(
            self.count + other.count,
            self.total + other.total,
            self.total_sq + other.total_sq,
            self.excluded + other.excluded,
            self.keep_rates and other.keep_rates,
        )
        if out.keep_rates:
            out.batch_rates = [*self.batch_rates, *other.batch_rates]
        out.batch_sums = [*self.batch_sums, *other.batch_sums]
        return out

    def rates(self) -> np.ndarray | None:
        """All kept per-pair rates as one (pairs, layers, components) array; NaN marks excluded pairs."""
        if not self.keep_rates:
            return None
        if not self.batch_rates:
            return np.zeros((0, *self.count.shape), dtype=np.float32)
        return torch.cat(self.batch_rates).cpu().numpy()

    def numpy(self) -> dict[str, np.ndarray]:
        return {
            "count": self.count.cpu().numpy().astype(np.int64),
            "sum": self.total.cpu().numpy(),
            "sum_sq": self.total_sq.cpu().numpy(),
            "excluded": self.excluded.cpu().numpy().astype(np.int64),
        }


def mean_std(count: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1) from sums; NaN where too few were counted (0, or 1 for std)."""
    count = np.asarray(count, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = np.where(count > 1, (total_sq - count * mean * mean) / np.maximum(count - 1, 1), np.nan)
    return mean, np.sqrt(np.where(np.isnan(var), np.nan, np.clip(var, 0.0, None)))


@dataclass
class TokenStats:
    """Sums over measured images of the two embedding-output quantities the theory reads.

    Per image, with tokens z_1..z_n of width d: the radius sqrt(mean_t ||z_t||^2) (the paper's r, which
    enters the attention bound) and the token spread mean_t std(z_t) (a LayerNorm's rate of change scales
    like gain / spread). Kept as sums, so shards merge by addition like :class:`RateStats`.
    """

    images: torch.Tensor
    radius_sum: torch.Tensor
    spread_sum: torch.Tensor
    rms_sum: torch.Tensor
    seq_len: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> TokenStats:
        def z() -> torch.Tensor:
            return torch.zeros((), dtype=torch.float64, device=device)

        return cls(z(), z(), z(), z())

    def update(self, tokens: torch.Tensor) -> None:
        """Add the embedding outputs (images, tokens, width) of one batch."""
        t = tokens.float()
        self.images += t.shape[0]
        self.radius_sum += t.square().sum(-1).mean(-1).sqrt().sum().double()
        self.spread_sum += t.std(-1, correction=0).mean(-1).sum().double()
        self.rms_sum += t.square().mean(-1).sqrt().mean(-1).sum().double()
        self.seq_len = int(t.shape[1])

    def as_dict(self) -> dict[str, float | int]:
        return {
            "images": int(self.images.item()),
            "radius_sum": float(self.radius_sum.item()),
            "spread_sum": float(self.spread_sum.item()),
            "rms_sum": float(self.rms_sum.item()),
            "seq_len": self.seq_len,
        }


def merge_ranges(ranges: Any) -> list[list[int]]:
    """Sorted, disjoint ``[start, stop)`` ranges covering the same pairs (adjacent ones joined)."""
    out: list[list[int]] = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges):
        if start >= stop:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


def ranges_overlap(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    """The pair ranges that both range lists cover (empty when they are disjoint)."""
    out = []
    for s1, e1 in a:
        for s2, e2 in b:
            lo, hi = max(s1, s2), min(e1, e2)
            if lo < hi:
                out.append([lo, hi])
    return merge_ranges(out)
