"""Markdown tables of a :class:`~hf_plasticity.report.report.PlasticityReport`, for terminals, READMEs and cards."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import PlasticityReport


def report_markdown(report: PlasticityReport, per_layer: bool = False) -> str:
    """Component types by plasticity beside their theoretical bounds; optionally every layer."""
    has_bounds = report.bounds is not None
    lines: list[str] = []
    head = "| rank | component | plasticity | 95% CI | n |"
    rule = "|---:|---|---:|---:|---:|"
    if has_bounds:
        head, rule = head + " upper bound (max over layers) |", rule + "---:|"
    lines += [head, rule]
    for rank, (comp, s) in enumerate(report.summary().items(), start=1):
        row = f"| {rank} | {comp} | {s.mean:.4f} | {_pm(s.ci95)} | {s.n} |"
        lines.append(row + (f" {_num(s.bound)} |" if has_bounds else ""))
    if report.tokens:
        lines += [
            "",
            f"Embedding outputs: radius r = {report.radius:.4g}, token spread = {report.token_spread:.4g}, "
            f"{report.seq_len} tokens. A LayerNorm's rate scales like gain / spread; its max-gain bound assumes "
            "a spread of at least 1.",
        ]
    if per_layer:
        lines += ["", "| layer | " + " | ".join(report.components) + " |"]
        lines.append("|---:|" + "---:|" * len(report.components))
        mean, ci, bounds = report.mean, report.ci95, report.bounds
        for layer in range(report.num_layers):
            cells = []
            for c in range(len(report.components)):
                cell = f"{mean[layer, c]:.4f} {_pm(ci[layer, c])}"
                if bounds is not None:
                    cell += f" (≤ {_num(bounds[layer, c])})"
                cells.append(cell)
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(ci: float) -> str:
    return "± n/a" if not math.isfinite(ci) else f"± {ci:.4f}"


def _num(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4g}"
