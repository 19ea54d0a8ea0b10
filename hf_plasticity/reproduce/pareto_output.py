"""The Pareto experiment's summary: tables per budget, the test of plasticity against the best peer, a figure."""

from __future__ import annotations

from typing import Any

from .pareto import BUDGETS, PARETO_METHODS, is_plasticity


def analyse_pareto(results: dict[str, Any]) -> dict[str, Any]:
    """Per optimizer and budget: each method's accuracy (mean over tasks and seeds), the best plasticity option
    against the best peer and against full finetuning (paired one-sided Wilcoxon over (task, seed)).

    Comparisons use the (task, seed) runs both sides have, so a run cut short still compares like with like;
    ``tasks`` says which tasks a comparison covers.
    """
    from .stats import mean_std, summarise

    summary = summarise(results["runs"])
    out: dict[str, Any] = {"summary": summary, "budgets": {}}
    for optimizer, cells in summary.items():
        tasks = sorted(cells)
        # a PEFT model's total counts its adapters too: shares are of the base model, which linear probing holds
        base = {t: min(e["total"] for e in cells[t].values()) for t in tasks}
        table: dict[str, Any] = {}
        for name, info in PARETO_METHODS.items():
            ran = [t for t in tasks if name in cells[t]]
            if not ran:
                continue
            pooled = [a for t in ran for a in cells[t][name]["test_accuracy"]]
            table[name] = {
                "budget": info.budget,
                "family": info.family,
                "plasticity": is_plasticity(name),
                "tasks": ran,
                "mean": sum(cells[t][name]["mean"] for t in ran) / len(ran),
                "pooled_std": mean_std(pooled)[1],
                "per_task": {
                    t: {"mean": cells[t][name]["mean"], "std": cells[t][name]["std"], "seeds": cells[t][name]["seeds"]}
                    for t in ran
                },
                "share": sum(cells[t][name]["trainable"] / base[t] for t in ran) / len(ran),
                "trainable": {t: cells[t][name]["trainable"] for t in ran},
                "s_per_step": sum(cells[t][name]["s_per_step_mean"] for t in ran) / len(ran),
                "lr": {t: cells[t][name]["lr"] for t in ran},
            }
        per_budget = {}
        for budget in BUDGETS:
            names = [n for n in table if table[n]["budget"] == budget]
            entry: dict[str, Any] = {"methods": names}
            mine = [n for n in names if table[n]["plasticity"]]
            peers = [n for n in names if not table[n]["plasticity"]]
            if mine and peers:
                entry.update(_best_against(cells, table, mine, peers, "best_peer"))
            if mine and "full" in table and budget != "full":
                entry["vs_full"] = _best_against(cells, table, mine, ["full"], "reference")
            per_budget[budget] = entry
        out["budgets"][optimizer] = {"table": table, "per_budget": per_budget}
    return out


def _best_against(
    cells: dict[str, Any], table: dict[str, Any], mine: list[str], others: list[str], label: str
) -> dict[str, Any]:
    """The best of ``mine`` against the best of ``others``, both ranked on the tasks all of them ran."""
    from .stats import wilcoxon_greater

    common = sorted(set.intersection(*(set(table[n]["tasks"]) for n in [*mine, *others])))
    if not common:
        return {"note": "no task that every method here ran"}

    def mean(name: str) -> float:
        return sum(cells[t][name]["mean"] for t in common) / len(common)

    best = max(mine, key=mean)
    other = max(others, key=mean)
    first, second = [], []
    for t in common:
        a, b = cells[t][best], cells[t][other]
        for seed in sorted(set(a["seeds"]) & set(b["seeds"])):
            first.append(a["test_accuracy"][a["seeds"].index(seed)])
            second.append(b["test_accuracy"][b["seeds"].index(seed)])
    return {
        "best_plasticity": best,
        label: other,
        "tasks": common,
        "difference": mean(best) - mean(other),
        "per_task": {t: cells[t][best]["mean"] - cells[t][other]["mean"] for t in common},
        "wilcoxon": wilcoxon_greater(first, second),
    }


def pareto_figure(analysis: dict[str, Any], path: Any) -> None:
    """Test accuracy (mean of tasks) against trainable share, log x, one panel per optimizer (AdamW first):
    plasticity options filled, peers hollow, one colour per family in both panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = sorted(analysis["budgets"], key=lambda o: (o != "adamw", o))
    tables = [analysis["budgets"][o]["table"] for o in optimizers]
    families = sorted({v["family"] for table in tables for v in table.values()})
    colours = {f: plt.cm.tab10(i % 10) for i, f in enumerate(families)}
    fig, axes = plt.subplots(1, len(optimizers), figsize=(7.5 * len(optimizers), 5.0), squeeze=False)
    for ax, optimizer, table in zip(axes[0], optimizers, tables, strict=True):
        every = max(len(w["tasks"]) for w in table.values())
        for name, v in table.items():
            ax.scatter(
                100 * v["share"],
                100 * v["mean"],
                s=60,
                color=colours[v["family"]] if v["plasticity"] else "white",
                edgecolors=colours[v["family"]],
                linewidths=1.8,
                zorder=3,
            )
            label = name if len(v["tasks"]) == every else f"{name} ({', '.join(v['tasks'])} only)"
            ax.annotate(
                label, (100 * v["share"], 100 * v["mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (% of the model, head included; log scale)")
        ax.set_ylabel("test accuracy (%, mean of tasks x seeds)")
        ax.set_title(f"{optimizer}: filled = plasticity, hollow = PEFT peers")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def pareto_markdown(doc: dict[str, Any]) -> str:
    """Tables per budget (per optimizer), the test of the best plasticity option against the best peer."""
    stats = doc["statistics"]
    lines = [
        "# Plasticity against PEFT's selectors at matched parameter budgets (bundled ViT)",
        "",
        f"Command: `{doc['command']}`  ",
        f"Device: {doc['environment']['device']}  ",
        f"Created: {doc['created']}; wall time {doc['timing']['total_seconds'] / 60:.1f} min  ",
        "Budgets (share of parameters, head included, per task): "
        + "; ".join(
            f"{t}: " + ", ".join(f"{b} {100 * v:.2f}%" for b, v in s.items()) for t, s in doc["shares"].items()
        ),
        "",
        "Learning rates: chosen per method on validation (seed 0) from its grid, on digits for the methods whose "
        "rate is then used on every task (column lr); grids: "
        + "; ".join(
            sorted(
                {
                    f"`{p['name']}` {p['lrs']}" + (" (grid only)" if p.get("grid_only") else "")
                    for p in doc["spec"]["optimizers"]
                }
            )
        ),
        "",
    ]
    for optimizer, data in stats["budgets"].items():
        table, per_budget = data["table"], data["per_budget"]
        tasks = sorted({t for v in table.values() for t in v["tasks"]})
        lines += [f"## {optimizer}", ""]
        lines += [
            "| budget | method | " + " | ".join(tasks) + " | mean | trainable (share) | s/step | lr |",
            "|---|---|" + "---:|" * (len(tasks) + 4),
        ]
        for budget in BUDGETS:
            for name in per_budget[budget]["methods"]:
                v = table[name]
                cells = " | ".join(
                    f"{100 * v['per_task'][t]['mean']:.1f} ± {100 * v['per_task'][t]['std']:.1f}"
                    + (f" (seeds {len(v['per_task'][t]['seeds'])})" if len(v["per_task"][t]["seeds"]) < 3 else "")
                    if t in v["per_task"]
                    else "not run"
                    for t in tasks
                )
                mark = "**" if v["plasticity"] else ""
                lines.append(
                    f"| {budget} | {mark}{name}{mark} | {cells} | {100 * v['mean']:.1f} | "
                    f"{max(v['trainable'].values()):,} ({100 * v['share']:.2f}%) | {v['s_per_step']:.3f} | "
                    f"{_rates(v['lr'])} |"
                )
        lines += [
            "",
            "| budget | best plasticity | against | difference (points) | per task | pairs | Wilcoxon p (one-sided) |",
            "|---|---|---|---:|---|---:|---:|",
        ]
        for budget in BUDGETS:
            for e, label in ((per_budget[budget], "best_peer"), (per_budget[budget].get("vs_full", {}), "reference")):
                if "best_plasticity" not in e:
                    continue
                w = e["wilcoxon"] or {}
                p = w.get("pvalue")
                per_task = ", ".join(f"{t} {100 * d:+.1f}" for t, d in e["per_task"].items())
                against = f"{e[label]} ({'best peer' if label == 'best_peer' else 'full finetuning'})"
                lines.append(
                    f"| {budget} | {e['best_plasticity']} | {against} | {100 * e['difference']:+.2f} | "
                    f"{per_task} | {w.get('n', 0)} | {'–' if p is None else f'{p:.3f}'} |"
                )
        lines.append("")
    lines += _pruned_lines(doc)
    lines += ["## Methods", ""]
    for task, methods in doc["methods"].items():
        for name, m in methods.items():
            count = len(m["selected_modules"])
            what = f"; trains {count} module(s) on {task}" if count else ""
            lines.append(f"- `{name}`: {m['description']}{what}")
        break
    return "\n".join(lines) + "\n"


def _rates(per_task: dict[str, float]) -> str:
    """One rate when every task ran at it (chosen on digits), else each task's own choice."""
    rates = set(per_task.values())
    if len(rates) == 1:
        return f"{rates.pop():g}"
    return ", ".join(f"{task} {lr:g}" for task, lr in sorted(per_task.items()))


def _pruned_lines(doc: dict[str, Any]) -> list[str]:
    """Methods that ran their learning-rate grid only: their best validation accuracy, the evidence they were
    dominated, beside the best of the other methods at their budget on the same grid task."""
    pruned = {m for p in doc["spec"]["optimizers"] if p.get("grid_only") for m in p["methods"] or []}
    if not pruned:
        return []
    best: dict[tuple[str, str, str], tuple[float, str]] = {}  # (optimizer, task, name) -> (val accuracy, lr)
    for optimizer, per_task in doc.get("lr_grid", {}).items():
        for task, groups in per_task.items():
            for entry in groups.values():
                lr, acc = max(entry["val_accuracy"].items(), key=lambda kv: kv[1])
                for name in entry["methods"]:
                    best[optimizer, task, name] = (acc, lr)
    lines = ["## Pruned after the learning-rate grid", ""]
    lines += [
        "| optimizer | task | method | best validation % (lr) | best other at its budget (lr) |",
        "|---|---|---|---:|---:|",
    ]
    for (optimizer, task, name), (acc, lr) in sorted(best.items()):
        if name not in pruned:
            continue
        budget = PARETO_METHODS[name].budget
        others = [
            (a, r, n)
            for (o, t, n), (a, r) in best.items()
            if o == optimizer
            and t == task
            and n not in pruned
            and n in PARETO_METHODS
            and PARETO_METHODS[n].budget == budget
        ]
        top = max(others, default=None)
        against = f"{100 * top[0]:.1f} ({top[2]}, {top[1]})" if top else "–"
        lines.append(f"| {optimizer} | {task} | {name} | {100 * acc:.1f} ({lr}) | {against} |")
    return [*lines, ""]


def write_pareto(results: dict[str, Any], stats: dict[str, Any], out_dir: Any, command: str) -> dict[str, Any]:
    """``results.json`` (every run and statistic), ``results.md`` (the tables) and ``pareto.png``."""
    from pathlib import Path

    from ..io import atomic_write_text, jsonable
    from .output import write_document

    out = Path(out_dir)
    document = write_document(results, stats, out, command)
    paths: dict[str, Any] = {"json": out / "results.json"}
    paths["figure"] = out / "pareto.png"
    pareto_figure(stats, paths["figure"])
    paths["markdown"] = atomic_write_text(out / "results.md", pareto_markdown(jsonable(document)))
    return paths
