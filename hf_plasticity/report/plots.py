"""Figures of a :class:`~hf_plasticity.report.report.PlasticityReport`: what people would rather look at than tables.

Two panels, as in the paper: the distribution of rates per component type, and plasticity against depth
with each component's theoretical upper bound drawn beside it (dashed, same colour, log scale).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..components import COMPONENTS
from ..io import atomic_write, check_output_path, figure_format

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .report import PlasticityReport


def plot_report(
    report: PlasticityReport, path: str | os.PathLike[str] | None = None, title: str | None = None
) -> Figure:
    """Draw the report; with ``path``, also save it atomically in the format its suffix names."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    suffix = None if path is None else figure_format(path)  # fail before drawing, not after
    if path is not None:
        check_output_path(path)
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_dist, ax_depth = fig.subplots(1, 2)
    order = report.ranking()
    colors = {c: f"C{COMPONENTS.index(c)}" for c in order}  # one colour per component, in both views
    if report.rates is not None and len(report.rates):
        samples = []
        for comp in order:
            r = report.rates[:, :, report.components.index(comp)].ravel()
            samples.append(r[np.isfinite(r)])
        boxes = ax_dist.boxplot(samples, showfliers=False, patch_artist=True, medianprops={"color": "black"})
        for patch, comp in zip(boxes["boxes"], order, strict=True):
            patch.set(facecolor=colors[comp], alpha=0.6)
        ax_dist.set_xticks(range(1, len(order) + 1), order)
        ax_dist.set_title("Rates of change per component type (all layers)")
    else:
        stats = [report.stat(c) for c in order]
        ax_dist.bar(
            order,
            [s.mean for s in stats],
            yerr=[0.0 if not np.isfinite(s.ci95) else s.ci95 for s in stats],
            capsize=4,
            color=[colors[c] for c in order],
        )
        ax_dist.set_title("Plasticity per component type (mean, 95% CI)")
    ax_dist.set_ylabel("||f(x) - f(y)|| / ||x - y||")
    depth = np.arange(report.num_layers)
    mean, ci = report.mean, np.nan_to_num(report.ci95)
    bounds = report.bounds
    for comp in order:
        c = report.components.index(comp)
        ax_depth.plot(depth, mean[:, c], marker="o", ms=3, label=comp, color=colors[comp])
        ax_depth.fill_between(depth, mean[:, c] - ci[:, c], mean[:, c] + ci[:, c], alpha=0.25, color=colors[comp])
        if bounds is not None and np.isfinite(bounds[:, c]).any():
            ax_depth.plot(depth, bounds[:, c], ls="--", lw=1, color=colors[comp], label=f"{comp} bound")
    ax_depth.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_depth.set_xlabel("layer")
    ax_depth.set_ylabel("plasticity (solid) and upper bound (dashed)" if bounds is not None else "plasticity")
    ax_depth.set_title("Plasticity against depth (95% CI)")
    ax_depth.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    finite = mean[np.isfinite(mean) & (mean > 0)]
    if bounds is not None or (finite.size and finite.max() / finite.min() > 30):  # decades apart
        ax_depth.set_yscale("log")
        if finite.size and finite.max() / finite.min() > 30:
            ax_dist.set_yscale("log")
    name = report.model.get("model_id") or report.model.get("architecture", "model")
    fig.suptitle(title or f"{name} — {report.protocol} protocol, {report.num_pairs} pairs")
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
    return fig
