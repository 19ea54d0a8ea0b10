"""``PlasticitySeries``: how plasticity, weight change and gradient norms move during finetuning.

Written by :class:`hf_plasticity.integrations.callbacks.PlasticityCallback`.
How a component's plasticity evolves while it
is finetuned is an open question in the paper; this keeps the measurements with their training step, as
JSON and as a figure.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..components import COMPONENTS
from ..errors import ReportFormatError
from ..io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCHEMA = "hf_plasticity.series"
SCHEMA_VERSION = 1


@dataclass
class PlasticitySeries:
    """Per training step: plasticity per component type (re-measured), relative weight change, gradient norm.

    Each list holds ``{"step": int, <component>: float, ...}`` rows in step order.
    """

    plasticity: list[dict[str, float]] = field(default_factory=list)
    weight_change: list[dict[str, float]] = field(default_factory=list)
    grad_norm: list[dict[str, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta,
            "plasticity": self.plasticity,
            "weight_change": self.weight_change,
            "grad_norm": self.grad_norm,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlasticitySeries:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ReportFormatError(
                "not an hf_plasticity plasticity series (its 'schema' field is missing or foreign)"
            )
        if not isinstance(d.get("schema_version"), int) or d["schema_version"] > SCHEMA_VERSION:
            raise ReportFormatError(
                f"series schema version {d.get('schema_version')!r} is newer than this version reads"
            )
        return cls(
            plasticity=list(d.get("plasticity", [])),
            weight_change=list(d.get("weight_change", [])),
            grad_norm=list(d.get("grad_norm", [])),
            meta=dict(d.get("meta", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the series as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlasticitySeries:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportFormatError(f"{os.fspath(path)!r} is not valid JSON: {exc}") from exc

    def plot(self, path: str | os.PathLike[str] | None = None, title: str | None = None) -> Figure:
        """Three panels against the training step: plasticity, relative weight change, gradient norm."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(13, 4), layout="constrained")
        axes = fig.subplots(1, 3)
        panels = (
            (self.plasticity, "plasticity (re-measured)", "||f(x) - f(y)|| / ||x - y||"),
            (self.weight_change, "relative weight change", "||W_t - W_0|| / ||W_0||"),
            (self.grad_norm, "gradient norm", "||grad||"),
        )
        for ax, (rows, name, ylabel) in zip(axes, panels, strict=True):
            for comp in COMPONENTS:
                pts = [(r["step"], r[comp]) for r in rows if comp in r]
                if pts:
                    steps, values = zip(*pts, strict=True)
                    ax.plot(steps, values, marker="o", ms=3, label=comp, color=f"C{COMPONENTS.index(comp)}")
            ax.set_title(name)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            if not rows:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:
            if not handles:
                handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize="small")
        fig.suptitle(title or "Plasticity during finetuning")
        if path is not None:
            suffix = Path(path).suffix.lstrip(".") or "png"
            atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
        return fig
