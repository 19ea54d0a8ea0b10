"""The statistics the paper reports, computed by scipy from the recorded accuracies.

- mean ± standard deviation over seeds of each method on each task;
- the gain of each single-component run over linear probing;
- Spearman's rank correlation between a ranking's scores (measured plasticity, theoretical bounds, the
  theoretical order) and that gain, per task;
- one-sided Wilcoxon signed-rank tests that training ``mha`` beats training each other component, over
  (task, seed) pairs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..components import COMPONENTS, THEORETICAL_RANKING
from ..errors import InvalidInputError
from .methods import SELECTIONS


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value), as the paper's ± columns."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def theoretical_scores() -> dict[str, float]:
    """The paper's order as rank scores (5 = most plastic), so it correlates like any measured ranking."""
    return {c: float(len(THEORETICAL_RANKING) - i) for i, c in enumerate(THEORETICAL_RANKING)}


def pooled_bounds(bounds: Any, components: Sequence[str] | None = None) -> dict[str, float] | None:
    """One theoretical bound per component type: the largest over its layers (a bound for every layer).

    Takes a report's ``bounds`` array (layers x components, with ``components`` naming the columns) or a
    mapping component -> number or per-layer sequence; None, or anything else, gives None, so
    correlations simply leave the bounds out.
    """
    if bounds is None:
        return None
    if isinstance(bounds, np.ndarray):
        if components is None or bounds.ndim != 2 or bounds.shape[1] != len(components):
            return None
        bounds = {c: bounds[:, i] for i, c in enumerate(components)}
    if isinstance(bounds, Mapping) and "bounds" in bounds and isinstance(bounds["bounds"], Mapping):
        bounds = bounds["bounds"]
    if not isinstance(bounds, Mapping):
        return None
    out: dict[str, float] = {}
    for comp in COMPONENTS:
        value = bounds.get(comp)
        if value is None:
            continue
        arr = np.asarray(value, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size:
            out[comp] = float(arr.max())
    return out or None


def spearman(scores: Mapping[str, float], gains: Mapping[str, float]) -> dict[str, Any]:
    """Spearman's rho (and its two-sided p-value) between a ranking's scores and the finetuning gains."""
    from scipy.stats import spearmanr

    comps = [c for c in COMPONENTS if c in scores and c in gains]
    x = [float(scores[c]) for c in comps]
    y = [float(gains[c]) for c in comps]
    out: dict[str, Any] = {"components": comps, "scores": x, "gains": y, "n": len(comps)}
    if len(comps) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {**out, "rho": None, "pvalue": None, "note": "undefined: fewer than 3 points or a constant side"}
    result = spearmanr(x, y)
    return {**out, "rho": float(result.statistic), "pvalue": float(result.pvalue)}


def wilcoxon_greater(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """One-sided Wilcoxon signed-rank test that ``first`` exceeds ``second`` on paired observations."""
    from scipy.stats import wilcoxon

    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise InvalidInputError(
            f"paired samples differ in length: {a.shape} vs {b.shape}; pair each seed's result with its own"
        )
    diff = a - b
    mean_difference = float(diff.mean()) if diff.size else math.nan
    out: dict[str, Any] = {"n": int(diff.size), "differences": diff.tolist(), "mean_difference": mean_difference}
    if diff.size == 0 or not np.any(diff != 0):
        return {**out, "statistic": None, "pvalue": None, "note": "undefined: no non-zero difference"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns that small samples use the exact distribution
        result = wilcoxon(a, b, alternative="greater")
    return {**out, "statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per (optimizer, task, method): the chosen runs' test accuracies, mean ± std, cost and selection."""
    out: dict[str, Any] = {}
    for run in runs:
        cell = out.setdefault(run["optimizer"], {}).setdefault(run["task"], {})
        for name in run["methods"]:
            entry = cell.setdefault(
                name,
                {
                    "run_key": run["run_key"],
                    "lr": run["lr"],
                    "seeds": [],
                    "test_accuracy": [],
                    "val_accuracy": [],
                    "s_per_step": [],
                    "trainable": run["trainable"],
                    "total": run["total"],
                },
            )
            entry["seeds"].append(run["seed"])
            entry["test_accuracy"].append(run["test_accuracy"])
            entry["val_accuracy"].append(run["val_accuracy"])
            entry["s_per_step"].append(run["s_per_step"])
    for cells in out.values():
        for methods in cells.values():
            for entry in methods.values():
                order = np.argsort(entry["seeds"])
                for key in ("seeds", "test_accuracy", "val_accuracy", "s_per_step"):
                    entry[key] = [entry[key][i] for i in order]
                entry["mean"], entry["std"] = mean_std(entry["test_accuracy"])
                entry["s_per_step_mean"] = float(np.mean(entry["s_per_step"]))
    return out


def gains_over_linear(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Mean test-accuracy gain of each single-component run over linear probing on one task."""
    base = methods["linear"]["mean"]
    return {c: methods[c]["mean"] - base for c in COMPONENTS if c in methods}


def correlations(
    methods: Mapping[str, Mapping[str, Any]], rankings: Mapping[str, Mapping[str, float] | None]
) -> dict[str, Any]:
    """Spearman between each ranking's scores and the gain over linear probing, on one task."""
    gains = gains_over_linear(methods)
    return {name: spearman(scores, gains) for name, scores in rankings.items() if scores}


def mha_tests(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Wilcoxon (mha > other) for each other component, pairing runs by (task, seed)."""
    out: dict[str, Any] = {}
    for other in COMPONENTS:
        if other == "mha":
            continue
        first, second, pairs = [], [], []
        for task, methods in summary.items():
            if "mha" not in methods or other not in methods:
                continue
            mine = dict(zip(methods["mha"]["seeds"], methods["mha"]["test_accuracy"], strict=True))
            theirs = dict(zip(methods[other]["seeds"], methods[other]["test_accuracy"], strict=True))
            for seed in sorted(set(mine) & set(theirs)):
                first.append(mine[seed])
                second.append(theirs[seed])
                pairs.append([task, seed])
        out[other] = {**wilcoxon_greater(first, second), "pairs": pairs}
    return out


SELECTION_CHECKS = (*SELECTIONS, "mha")


def comparisons(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each selection against full finetuning and LoRA on one task, in accuracy points (mean over seeds)."""
    full = methods["full"]["mean"] if "full" in methods else math.nan
    lora = methods["lora"]["mean"] if "lora" in methods else math.nan
    out = {}
    tol = 1e-9  # accuracies are ratios of counts: compare points without float noise
    for name in SELECTION_CHECKS:
        if name not in methods:
            continue
        mean = methods[name]["mean"]
        out[name] = {
            "vs_full_points": 100 * (mean - full),
            "vs_lora_points": 100 * (mean - lora),
            "at_least_full_minus_0.3": bool(100 * (mean - full) >= -0.3 - tol),
            "within_0.5_of_full": bool(100 * (mean - full) >= -0.5 - tol),
            "beats_lora": bool(mean > lora),
            "trainable": methods[name]["trainable"],
        }
    return out


def analyse(results: Mapping[str, Any]) -> dict[str, Any]:
    """All statistics of a finished experiment, from its recorded runs and measurements alone."""
    summary = summarise(results["runs"])
    out: dict[str, Any] = {"summary": summary, "spearman": {}, "wilcoxon": {}, "comparisons": {}, "gains": {}}
    for optimizer, tasks in summary.items():
        for task, methods in tasks.items():
            if "linear" not in methods:
                continue
            measured = results["measurements"][task]
            rankings: dict[str, Mapping[str, float] | None] = {
                protocol: measured[protocol]["scores"] for protocol in ("shared", "in_situ") if protocol in measured
            }
            if measured.get("shared", {}).get("bounds"):  # weights and this data's radius: protocol-free
                rankings["bounds"] = measured["shared"]["bounds"]
            rankings["theory (paper's order)"] = theoretical_scores()
            out["gains"].setdefault(optimizer, {})[task] = gains_over_linear(methods)
            out["spearman"].setdefault(optimizer, {})[task] = correlations(methods, rankings)
            out["comparisons"].setdefault(optimizer, {})[task] = comparisons(methods)
        out["wilcoxon"][optimizer] = mha_tests(tasks)
    return out
