"""Writing the results: one JSON file with everything, a markdown summary, and the figure."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..components import COMPONENTS
from ..io import atomic_write_text, jsonable
from .methods import METHODS, SELECTIONS

SCHEMA = "hf_plasticity.reproduce"
SCHEMA_VERSION = 1


def write_results(
    results: Mapping[str, Any], stats: Mapping[str, Any], out_dir: str | os.PathLike[str], command: str
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``gain_vs_plasticity.png`` under ``out_dir``."""
    from .figure import gain_figure

    out = Path(out_dir)
    document = write_document(results, stats, out, command)
    paths = {"json": out / "results.json", "figure": out / "gain_vs_plasticity.png"}
    optimizer = "sgd" if "sgd" in stats["summary"] else next(iter(stats["summary"]))
    gain_figure(results, stats, paths["figure"], optimizer=optimizer)
    paths["markdown"] = atomic_write_text(out / "results.md", to_markdown(document))
    return paths


def write_document(results: Mapping[str, Any], stats: Mapping[str, Any], out: Path, command: str) -> dict[str, Any]:
    """Write ``results.json`` (every run and statistic, with the command and the source model) and return it."""
    document = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "source_model": source_model(),
        **results,
        "statistics": stats,
    }
    atomic_write_text(out / "results.json", json.dumps(jsonable(document), indent=1, allow_nan=False))
    return document


def source_model() -> dict[str, Any]:
    from ..models import BUNDLED_MODEL_ID, bundled_model_path

    config = json.loads((bundled_model_path() / "config.json").read_text())
    pretraining = config.get("hf_plasticity_pretraining") or {}
    return {"id": BUNDLED_MODEL_ID, "pretraining": pretraining, "note": source_note(pretraining)}


def source_note(pretraining: Mapping[str, Any]) -> str:
    """Read from the checkpoint's own record, so the note cannot outlive a re-pretraining."""
    trained = (
        f"pretrained {pretraining['epochs']:g} epochs on Fashion-MNIST ({100 * pretraining['test_accuracy']:.1f}% "
        "test accuracy)"
        if {"epochs", "test_accuracy"} <= pretraining.keys()
        else "pretrained on Fashion-MNIST"
    )
    return (
        f"Source model: the bundled ViT (hf-plasticity/vit-fashion-mnist: 6 layers, hidden 128, 28x28 inputs), "
        f"{trained} by examples/pretrain_vit.py on CPU. Conclusions hold for this small model, not for "
        "ImageNet-scale ViTs."
    )


def to_markdown(doc: Mapping[str, Any]) -> str:
    """The human summary: what was run, the accuracy table, rankings, correlations, tests, comparisons."""
    stats = doc["statistics"]
    spec = doc["spec"]
    tasks = list(doc["tasks"])
    lines = [
        "# Component-wise finetuning of the bundled ViT (after Odonnat et al., 2026)",
        "",
        doc["source_model"]["note"],
        "",
        f"Command: `{doc['command']}`  ",
        f"Device: {doc['environment']['device']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["environment"]["versions"].items()) + "  ",
        f"Created: {doc['created']}; wall time {doc['timing']['total_seconds'] / 60:.1f} min",
        "",
        "## Protocol",
        "",
        f"- Tasks (train / val / test images, split seed {next(iter(doc['tasks'].values()))['split_seed']}, "
        "indices in results.json):",
    ]
    for name, task in doc["tasks"].items():
        sizes = task["sizes"]
        lines.append(f"  - `{name}`: {sizes['train']} / {sizes['val']} / {sizes['test']}. {task['description']}")
    t = spec["train"]
    lines += [
        f"- Training: transformers `Trainer`, {t['steps']} steps of batch {t['batch_size']}, {t['scheduler']} "
        f"schedule with {t['warmup_ratio']:.0%} warmup, gradient clipping {t['max_grad_norm']}, seeds "
        f"{spec['seeds']}; accuracy by `evaluate` (bundled metric).",
    ]
    for plan in spec["optimizers"]:
        where = "all tasks" if plan["tasks"] is None else ", ".join(plan["tasks"])
        lines.append(f"- Optimizer `{plan['name']}`: learning rates {plan['lrs']} on {where}; {spec['lr_selection']}.")
    lines += [
        f"- Plasticity: `measure_plasticity` on the source model, reference = bundled Fashion-MNIST sample, "
        f"data = each task's train split, {spec['num_pairs']} pairs at most, both protocols.",
        "",
    ]
    for optimizer, cells in stats["summary"].items():
        lines += _accuracy_table(doc, optimizer, cells, tasks)
    lines += ["## Measured rankings (source model, each task's train split as data)", ""]
    lines += [
        "| task | protocol | ranking (most plastic first) | scores | bounds (max over layers) | token spread |",
        "|---|---|---|---|---|---:|",
    ]
    for task, measured in doc["measurements"].items():
        for protocol in ("shared", "in_situ"):
            m = measured[protocol]
            scores = ", ".join(f"{c} {m['scores'][c]:.3f}" for c in m["ranking"])
            bounds = m.get("bounds") or {}
            bound_text = ", ".join(f"{c} {bounds[c]:.3g}" for c in m["ranking"] if c in bounds) or "–"
            spread = m.get("token_spread")
            spread_text = "–" if spread is None else f"{spread:.3f}"
            lines.append(
                f"| {task} | {protocol} | {' > '.join(m['ranking'])} | {scores} | {bound_text} | {spread_text} |"
            )
    lines += ["", "## What the selections train", "", "| task | method | trains | trainable |", "|---|---|---|---:|"]
    for task, methods in doc["methods"].items():
        for name, m in methods.items():
            if name in SELECTIONS:
                entry = stats["summary"].get("sgd", {}).get(task, {}).get(name, {})
                lines.append(f"| {task} | {name} | `{m['run_key']}` | {entry.get('trainable', '')} |")
    lines += ["", *(_spearman_table(stats, tasks)), *(_wilcoxon_table(stats)), *(_comparison_table(stats, tasks))]
    return "\n".join(lines) + "\n"


def _accuracy_table(doc: Mapping[str, Any], optimizer: str, cells: Mapping[str, Any], tasks: list[str]) -> list[str]:
    present = [t for t in tasks if t in cells]
    lines = [
        f"## Test accuracy, {optimizer} (mean ± std over seeds, %; chosen learning rate in brackets)",
        "",
        "| method | " + " | ".join(present) + " | trainable (10 classes) | share | s/step |",
        "|---|" + "---:|" * (len(present) + 3),
    ]
    for name in METHODS:
        row = [cells[t].get(name) for t in present]
        if not any(row):
            continue
        values = ["–" if e is None else f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f} ({e['lr']:g})" for e in row]
        ref = next((cells[t][name] for t in present if t in ("digits", "mnist5k") and name in cells[t]), None)
        ref = ref or next(e for e in row if e)
        steps = [e["s_per_step_mean"] for e in row if e]
        lines.append(
            f"| {name} | "
            + " | ".join(values)
            + f" | {ref['trainable']:,} | {ref['trainable'] / ref['total']:.3f} | {sum(steps) / len(steps):.3f} |"
        )
    return [*lines, ""]


def _spearman_table(stats: Mapping[str, Any], tasks: list[str]) -> list[str]:
    lines = ["## Spearman: ranking scores vs gain over linear probing (rho, p)", ""]
    for optimizer, per_task in stats["spearman"].items():
        names = list(dict.fromkeys(n for t in per_task.values() for n in t))
        present = [t for t in tasks if t in per_task]
        lines += [f"{optimizer}:", "", "| ranking | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
        for name in names:
            cells = []
            for t in present:
                s = per_task[t].get(name)
                cells.append("–" if not s or s["rho"] is None else f"{s['rho']:+.2f} (p={s['pvalue']:.2f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _wilcoxon_table(stats: Mapping[str, Any]) -> list[str]:
    lines = ["## One-sided Wilcoxon signed-rank: mha > other, over (task, seed) pairs", ""]
    for optimizer, tests in stats["wilcoxon"].items():
        lines += [f"{optimizer}:", "", "| other | n | W | p | mean diff (points) |", "|---|---:|---:|---:|---:|"]
        for other in COMPONENTS:
            if other not in tests:
                continue
            w = tests[other]
            stat = "–" if w["statistic"] is None else f"{w['statistic']:.1f}"
            p = "–" if w["pvalue"] is None else f"{w['pvalue']:.4f}"
            diff = w["mean_difference"]
            diff_text = "–" if diff is None or not math.isfinite(diff) else f"{100 * diff:+.2f}"
            lines.append(f"| {other} | {w['n']} | {stat} | {p} | {diff_text} |")
        lines.append("")
    return lines


def _comparison_table(stats: Mapping[str, Any], tasks: list[str]) -> list[str]:
    lines = ["## Selections vs full finetuning and LoRA (points; mean over seeds)", ""]
    for optimizer, per_task in stats["comparisons"].items():
        lines += [
            f"{optimizer}:",
            "",
            "| task | method | vs full | vs LoRA | ≥ full − 0.3 | beats LoRA |",
            "|---|---|---:|---:|:---:|:---:|",
        ]
        for task in tasks:
            for name, c in per_task.get(task, {}).items():
                full, lora = _points(c["vs_full_points"]), _points(c["vs_lora_points"])
                meets = "–" if full == "–" else ("yes" if c["at_least_full_minus_0.3"] else "no")
                beats = "–" if lora == "–" else ("yes" if c["beats_lora"] else "no")
                lines.append(f"| {task} | {name} | {full} | {lora} | {meets} | {beats} |")
        lines.append("")
    return lines


def _points(value: float | None) -> str:
    """A difference in accuracy points, or a dash where a baseline was not run (NaN / null)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:+.1f}"
