"""The bounds a report stores: weight-only terms per layer and head, and the attention formula over them.

They are computed from live weights in :mod:`hf_plasticity.measure.bounds`; they live here, beside the report,
because a merged report recomputes attention's bound at the merged embedding radius without the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WeightBounds:
    """The weight-only part of the bounds.

    ``layers`` is (layers, components) with the LayerNorm and linear bounds, NaN for ``mha``;
    ``heads`` is (layers, heads, 2): per head ||O_h|| ||V_h|| and ||Q_h K_h^T|| / sqrt(d_h).
    """

    components: tuple[str, ...]
    layers: np.ndarray
    heads: np.ndarray
    notes: dict[str, str] = field(default_factory=dict)
    """Per component, what its bound assumes or why it has none (then NaN: stored as null)."""

    def full(self, radius: float, seq_len: int) -> np.ndarray:
        """All bounds (layers, components), attention's from the embedding radius and sequence length."""
        out = self.layers.copy()
        if "mha" in self.components and self.heads.size:
            out[:, self.components.index("mha")] = attention_bound(self.heads, radius, seq_len)
        return out


def attention_bound(heads: np.ndarray, radius: float, seq_len: int) -> np.ndarray:
    """The paper's per-layer attention bound from the per-head terms (layers, heads, 2)."""
    ov, qk = heads[..., 0], heads[..., 1]
    n = float(seq_len)
    return (ov * np.sqrt(3 * n + (12 * n + 3) * radius**4 * qk**2)).sum(-1)
