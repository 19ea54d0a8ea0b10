"""The forced-choice benchmark's statistics and files: informative tasks, regret to the oracle, Spearman, tests.

A task is *informative* at a budget when its spread (best minus worst choice among the single blocks, by
mean test accuracy) exceeds twice the seed standard deviation (the mean over blocks of each block's std
over training seeds): below that, no selector can be told apart from another and the task stays out of the
headline means. The shuffled control is averaged over its selection seeds.

Per-block Spearman correlations are given over every block and over the blocks after the first: a signal that
always prefers the first block says nothing about the others, and the second table tells whether it does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_text
from .stats import mean_std, wilcoxon_greater

PLASTICITY = "plasticity_in_situ"
CONTROLS = ("inverted", "shuffled")
CORRELATED = ("plasticity_in_situ", "plasticity_shared", "rgn", "grad_norm", "snr", "kappa")
"""Signals whose per-block scores are correlated with each block's single-block test accuracy."""


def _by_key(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[int, dict[str, Any]]]:
    out: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for r in results["runs"]:
        out.setdefault((r.get("source_name", ""), r["task"], r["run_key"]), {})[r["seed"]] = r
    return out


def _cell(runs: dict[int, dict[str, Any]], seeds: list[int], before: float | None) -> dict[str, Any] | None:
    if not runs or any(s not in runs for s in seeds):
        return None
    rows = [runs[s] for s in seeds]
    acc, std = mean_std([r["test_accuracy"] for r in rows])
    out = {
        "test_accuracy": acc,
        "std": std,
        "per_seed": [r["test_accuracy"] for r in rows],
        "ece": float(np.mean([r["test_ece"] for r in rows])),
        "lr": rows[0]["lr"],
        "trainable": rows[0]["trainable"],
    }
    if before is not None and all("source_accuracy" in r for r in rows):
        out["forgetting"] = before - float(np.mean([r["source_accuracy"] for r in rows]))
    return out


def summarise(results: dict[str, Any], spec: Any) -> dict[str, Any]:
    """Per (source, task): the oracle, every signal's choice per arm, spread and Spearman; then the headline."""
    from scipy.stats import spearmanr

    seeds = list(spec.seeds)
    cells = _by_key(results)
    summary: dict[str, Any] = {}
    for source, per_task in results["choices"].items():
        before = results.get("source_accuracy_before", {}).get(source)
        for task, entry in per_task.items():

            def cell(key: str, task: str = task, source: str = source, before: Any = before) -> dict[str, Any] | None:
                return _cell(cells.get((source, task, key), {}), seeds, before)

            blocks = list(entry["scores"]["block"]["first"])
            oracle = {b: cell(f"blocks:{b.rsplit('.', 1)[-1]}") for b in blocks}
            done = {b: c for b, c in oracle.items() if c is not None}
            out: dict[str, Any] = {"oracle": oracle, "arms": {}}
            if len(done) == len(blocks):
                means = [c["test_accuracy"] for c in done.values()]
                spread = max(means) - min(means)
                seed_std = float(np.mean([c["std"] for c in done.values()]))
                out.update(spread=spread, seed_std=seed_std, informative=bool(spread > 2 * seed_std), best=max(means))
                for key, first in (("spearman", 0), ("spearman_after_first", 1)):
                    out[key] = {}
                    for name, scores in entry["scores"]["block"].items():
                        if name.split("@")[0] not in CORRELATED:
                            continue
                        rho = spearmanr([scores[b] for b in blocks[first:]], means[first:])
                        out[key][name] = {"rho": _finite(rho.statistic), "pvalue": _finite(rho.pvalue)}
            for arm, picked in entry["choices"].items():
                rows: dict[str, Any] = {}
                for signal, key in picked.items():
                    rows[signal] = {"run_key": key, **(cell(key) or {"missing": True})}
                shuffled = [rows[s] for s in rows if s.startswith("shuffled@")]
                if shuffled and all("test_accuracy" in r for r in shuffled):
                    per_seed = np.mean([r["per_seed"] for r in shuffled], axis=0).tolist()
                    rows["shuffled"] = {
                        "test_accuracy": float(np.mean(per_seed)),
                        "per_seed": per_seed,
                        "ece": float(np.mean([r["ece"] for r in shuffled])),
                        "trainable": shuffled[0]["trainable"],
                        **(
                            {"forgetting": float(np.mean([r["forgetting"] for r in shuffled]))}
                            if all("forgetting" in r for r in shuffled)
                            else {}
                        ),
                    }
                best = out.get("best") if arm == "blocks1" else _best(rows)
                for r in rows.values():
                    if best is not None and "test_accuracy" in r:
                        r["regret"] = best - r["test_accuracy"]
                out["arms"][arm] = rows
            summary.setdefault(source, {})[task] = out
    summary["headline"] = _headline(summary)
    return summary


def _best(rows: dict[str, Any]) -> float | None:
    values = [r["test_accuracy"] for s, r in rows.items() if "test_accuracy" in r and "@" not in s]
    return max(values) if values else None


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Per (source, arm): each signal's mean over informative tasks, and plasticity's paired one-sided test against
    each other signal (its controls first, then the peers)."""
    out: dict[str, Any] = {}
    for source, per_task in summary.items():
        informative = [t for t, s in per_task.items() if s.get("informative")]
        for arm in sorted({a for s in per_task.values() for a in s["arms"]}):
            tasks = [t for t in informative if arm in per_task[t]["arms"]]
            signals = sorted({s for t in tasks for s in per_task[t]["arms"][arm] if "@" not in s})
            table: dict[str, Any] = {}
            for signal in signals:
                rows = [per_task[t]["arms"][arm].get(signal, {}) for t in tasks]
                if rows and all("test_accuracy" in r for r in rows):
                    table[signal] = {
                        "test_accuracy": float(np.mean([r["test_accuracy"] for r in rows])),
                        "regret": float(np.mean([r.get("regret", math.nan) for r in rows])),
                        "ece": float(np.mean([r["ece"] for r in rows])),
                        "forgetting": float(np.mean([r.get("forgetting", math.nan) for r in rows])),
                    }
            tests = {}
            for control in [*CONTROLS, *(s for s in table if s not in (PLASTICITY, *CONTROLS))]:
                pairs = [
                    (a, b)
                    for t in tasks
                    for a, b in zip(
                        per_task[t]["arms"][arm].get(PLASTICITY, {}).get("per_seed", []),
                        per_task[t]["arms"][arm].get(control, {}).get("per_seed", []),
                        strict=False,
                    )
                ]
                if pairs:
                    test = wilcoxon_greater([a for a, _ in pairs], [b for _, b in pairs])
                    tests[control] = {k: test[k] for k in ("n", "mean_difference", "pvalue")}
            out.setdefault(source, {})[arm] = {"tasks": tasks, "signals": table, "wilcoxon": tests}
    return out


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=float))
    atomic_write_text(out / "tables.md", markdown(results))  # results.md holds the discussion beside them
    figure(results, out / "blocks.png")


def _pct(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    """The measured tables only (the discussion lives beside them in the committed results.md)."""
    summary = results["summary"]
    lines = ["<!-- generated by hf_plasticity.reproduce.forced; numbers in % -->", ""]
    for source, per_task in summary.items():
        if source == "headline":
            continue
        lines += [f"## Source {source}", "", "### Single blocks (the oracle), spread against seed noise", ""]
        heads = " | ".join(f"b{i}" for i in range(_depth(per_task)))
        lines += [f"| task | shift | {heads} | spread | 2·seed std | informative |"]
        lines += ["|---|---|" + "---:|" * _depth(per_task) + "---:|---:|---|"]
        for task, s in per_task.items():
            accs = [_pct(c["test_accuracy"]) if c else "—" for c in s["oracle"].values()]
            shift = results["tasks"].get(task, {}).get("shift", "")
            lines.append(
                f"| {task} | {shift} | {' | '.join(accs)} | {_pct(s.get('spread'))} | "
                f"{_pct(2 * s['seed_std']) if 'seed_std' in s else '—'} | "
                f"{'yes' if s.get('informative') else ('no' if 'informative' in s else 'not yet')} |"
            )
        for arm in ("blocks1", "blocks2", "lora25"):
            signals = sorted({k for s in per_task.values() for k in s["arms"].get(arm, {}) if "@" not in k})
            if not signals:
                continue
            lines += ["", f"### {arm}: test accuracy (regret to the best) per task", ""]
            lines += ["| signal | " + " | ".join(per_task) + " |", "|---|" + "---:|" * len(per_task)]
            for signal in signals:
                row = []
                for s in per_task.values():
                    r = s["arms"].get(arm, {}).get(signal, {})
                    row.append(
                        f"{_pct(r.get('test_accuracy'))} ({_pct(r.get('regret'))})" if "test_accuracy" in r else "—"
                    )
                lines.append(f"| {signal} | " + " | ".join(row) + " |")
            lines += ["", f"### {arm}: ECE and forgetting (Fashion-MNIST accuracy lost, points) per task", ""]
            lines += ["| signal | " + " | ".join(per_task) + " |", "|---|" + "---:|" * len(per_task)]
            for signal in signals:
                row = []
                for s in per_task.values():
                    r = s["arms"].get(arm, {}).get(signal, {})
                    row.append(f"{_pct(r.get('ece'))} / {_pct(r.get('forgetting'))}" if "test_accuracy" in r else "—")
                lines.append(f"| {signal} | " + " | ".join(row) + " |")
        for key, which in (("spearman", "every block"), ("spearman_after_first", "blocks after the first")):
            lines += ["", f"### Spearman ρ: per-block score vs single-block test accuracy, {which}", ""]
            names = sorted({n for s in per_task.values() for n in s.get(key, {})})
            lines += ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            for task, s in per_task.items():
                if key in s:
                    vals = [s[key][n]["rho"] for n in names]
                    lines.append(f"| {task} | " + " | ".join("—" if v is None else f"{v:+.2f}" for v in vals) + " |")
        head = summary["headline"].get(source, {})
        for arm, h in head.items():
            lines += ["", f"### Headline {arm}: mean over informative tasks ({', '.join(h['tasks']) or 'none'})", ""]
            lines += ["| signal | test acc | regret | ECE | forgetting |", "|---|---:|---:|---:|---:|"]
            for signal, v in h["signals"].items():
                lines.append(
                    f"| {signal} | {_pct(v['test_accuracy'])} | {_pct(v['regret'])} | {_pct(v['ece'])} | "
                    f"{_pct(v['forgetting'])} |"
                )
            for control, t in h["wilcoxon"].items():
                p = "undefined" if t["pvalue"] is None else f"{t['pvalue']:.3g}"
                lines.append(
                    f"\nplasticity − {control}: {100 * t['mean_difference']:+.2f} points over {t['n']} "
                    f"(task, seed) pairs, one-sided Wilcoxon p = {p}"
                )
        lines.append("")
    lines.append(f"Runs summarised: {len(results['runs'])}; runs of the plan not run yet: {results['not_run']}.")
    return "\n".join(lines) + "\n"


def _depth(per_task: dict[str, Any]) -> int:
    return max((len(s["oracle"]) for s in per_task.values()), default=0)


def figure(results: dict[str, Any], path: Path) -> None:
    """Single-block test accuracy per block and task (mean ± seed std), plasticity's choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {s: v for s, v in results["summary"].items() if s != "headline"}
    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4), squeeze=False)
    for ax, (source, per_task) in zip(axes[0], summary.items(), strict=True):
        for task, s in per_task.items():
            cells = [c for c in s["oracle"].values()]
            if any(c is None for c in cells):
                continue
            x = np.arange(len(cells))
            y = np.array([100 * c["test_accuracy"] for c in cells])
            err = np.array([100 * c["std"] for c in cells])
            (line,) = ax.plot(x, y, marker="o", label=task)
            ax.fill_between(x, y - err, y + err, alpha=0.15, color=line.get_color())
            pick = results["choices"][source][task]["choices"].get("blocks1", {}).get(PLASTICITY)
            if pick:
                i = int(pick.split(":")[1])
                ax.scatter([i], [y[i]], s=160, facecolors="none", edgecolors=line.get_color())
        ax.set(xlabel="trained block", ylabel="test accuracy (%)", title=f"{source}: one block (circle: plasticity)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
