"""The paper's evidence in one figure: finetuning gain over linear probing against measured plasticity."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..components import COMPONENTS
from ..io import atomic_write

MARKERS = ("o", "s", "^", "D", "v", "P")


def gain_figure(
    results: Mapping[str, Any], stats: Mapping[str, Any], path: str | os.PathLike[str], optimizer: str = "sgd"
) -> Any:
    """One panel per protocol: each point a (task, component), x its plasticity, y its gain (points)."""
    from matplotlib.figure import Figure

    protocols = [p for p in ("shared", "in_situ") if any(p in m for m in results["measurements"].values())]
    if all(m.get("shared", {}).get("bounds") for m in results["measurements"].values()):
        protocols.append("bounds")  # the theory's per-component upper bounds as a third x axis
    fig = Figure(figsize=(6 * len(protocols), 4.6), layout="constrained")
    axes = fig.subplots(1, len(protocols), squeeze=False)[0]
    gains = stats["gains"].get(optimizer, {})
    summary = stats["summary"].get(optimizer, {})
    for ax, protocol in zip(axes, protocols, strict=True):
        xs_all = []
        for ti, (task, task_gains) in enumerate(gains.items()):
            measured = results["measurements"][task]
            scores = measured["shared"]["bounds"] if protocol == "bounds" else measured[protocol]["scores"]
            linear_std = summary[task]["linear"]["std"]
            rho = stats["spearman"][optimizer][task].get(protocol, {}).get("rho")
            label_done = False
            for comp in COMPONENTS:
                if comp not in task_gains or comp not in scores:
                    continue
                x, y = scores[comp], 100 * task_gains[comp]
                err = 100 * math.hypot(summary[task][comp]["std"], linear_std)
                xs_all.append(x)
                ax.errorbar(
                    x,
                    y,
                    yerr=err,
                    fmt=MARKERS[ti % len(MARKERS)],
                    color=f"C{COMPONENTS.index(comp)}",
                    ms=7,
                    capsize=3,
                    alpha=0.85,
                    label=None if label_done else f"{task} (ρ = {'n/a' if rho is None else f'{rho:+.2f}'})",
                    mec="black",
                )
                label_done = True
        for comp in COMPONENTS:  # colour legend, one entry per component
            ax.plot([], [], "o", color=f"C{COMPONENTS.index(comp)}", label=comp)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 10:
            ax.set_xscale("log")
        if protocol == "bounds":
            ax.set_xlabel("theoretical upper bound (largest over layers)")
            ax.set_title("theoretical bounds: gain vs bound (ρ = Spearman per task)")
        else:
            ax.set_xlabel(f"measured plasticity ({protocol} protocol)")
            ax.set_title(f"{protocol} protocol: gain vs plasticity (ρ = Spearman per task)")
        ax.set_ylabel("test accuracy gain over linear probing (points)")
        ax.legend(fontsize="small")
    fig.suptitle(f"Bundled ViT, component-wise finetuning ({optimizer}); markers = tasks, colours = components")
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
    return fig
