"""Figures of a :class:`~hf_plasticity.report.report.PlasticityReport`: what people would rather look at than tables.

The distribution of rates per component type, and plasticity against depth, as in the paper. With
theoretical bounds, a third panel shows each rate as a fraction of its own bound (log scale, 1 = the bound):
the bounds sit decades above the rates (attention's ~1e4 against rates ~1), so on one axis with the rates
they would squash every measured curve into the bottom of the plot.
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
    bounds = report.bounds
    has_bounds = bounds is not None and bool(np.isfinite(bounds).any())
    fig = Figure(figsize=(16, 4.4) if has_bounds else (12, 4.2), layout="constrained")
    axes = fig.subplots(1, 3 if has_bounds else 2)
    ax_dist, ax_depth = axes[0], axes[1]
    order = report.ranking()
    colors = {c: f"C{COMPONENTS.index(c)}" for c in order}  # one colour per component, in every view
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
    for comp in order:
        c = report.components.index(comp)
        ax_depth.plot(depth, mean[:, c], marker="o", ms=3, label=comp, color=colors[comp])
        ax_depth.fill_between(depth, mean[:, c] - ci[:, c], mean[:, c] + ci[:, c], alpha=0.25, color=colors[comp])
    ax_depth.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_depth.set_xlabel("layer")
    ax_depth.set_ylabel("plasticity")
    ax_depth.set_title("Plasticity against depth (95% CI)")
    finite = mean[np.isfinite(mean) & (mean > 0)]
    if finite.size and finite.max() / finite.min() > 30:  # decades apart: the small ones stay visible
        ax_depth.set_yscale("log")
        ax_dist.set_yscale("log")
    legend_ax = ax_depth
    if has_bounds and bounds is not None:
        ax_frac = axes[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(bounds > 0, mean / bounds, np.nan)
        for comp in order:
            c = report.components.index(comp)
            if np.isfinite(fraction[:, c]).any():
                ax_frac.plot(depth, fraction[:, c], marker="o", ms=3, color=colors[comp], label=comp)
        ax_frac.axhline(1.0, color="black", ls="--", lw=1, label="bound")
        ax_frac.set_yscale("log")
        ax_frac.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_frac.set_xlabel("layer")
        ax_frac.set_ylabel("plasticity / theoretical upper bound")
        ax_frac.set_title("Plasticity as a fraction of its bound (above 1: bound exceeded)")
        legend_ax = ax_frac
    legend_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    name = _public_model_name(report.model.get("model_id") or report.model.get("architecture", "model"))
    fig.suptitle(title or f"{name} — {report.protocol} protocol, {report.num_pairs} pairs")
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
    return fig


def _public_model_name(name: str) -> str:
    """A local checkpoint's folder name instead of its path: figures go on model cards read elsewhere."""
    return os.path.basename(name.rstrip("/\\")) or name if os.path.isabs(name) else name
