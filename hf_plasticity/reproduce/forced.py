"""The forced-choice benchmark: does a selection signal know *where* training helps, when the choice is forced?

Arms (each run cached, so the grid resumes across sessions):

- ``blocks1``: full-rank training of one of the L blocks (+ the new head). Every block is trained (the oracle),
  so every signal's choice is one of these runs; per-block Spearman correlations come from the same runs.
- ``blocks2``: two of the L blocks, chosen by each signal (the oracle here: the best pair that was run).
- ``lora25``: LoRA at one rank on the top 25% of block linears (KappaTune's ``max(1, floor(N * p))``).

Signals are :data:`hf_plasticity.reproduce.scorers.SCORERS` (plasticity under both protocols, its inverted and
shuffled controls, first / last blocks, KappaTune, Spectrum SNR, gradient norm, Surgical RGN). Learning rates
are chosen per (task, trained set) on the validation split with the first seed, as in the Pareto run; every
run records test accuracy, expected calibration error and source-task (Fashion-MNIST) accuracy with the
source's own head put back. ``python -m hf_plasticity.reproduce.forced --help`` runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from .finetune import OPTIMIZERS, RunJob, TrainProtocol, cached_result, run_job
from .forced_output import CORRELATED
from .methods import ResolvedMethod, base_model
from .scorers import ScoreContext, score, select
from .tasks import TASKS, Task, prepare_task

REPO = Path(__file__).resolve().parents[2]
SOURCES: dict[str, str | None] = {"vit6": None, "vit12": str(REPO / "benchmarks" / "models" / "vit12-fashion-mnist")}
"""Source models: the bundled 6-block ViT, and the 12-block one kept outside the wheel (a source checkout)."""
ARMS = ("blocks1", "blocks2", "lora25")
LINEAR_SIGNALS = ("plasticity_in_situ", "plasticity_shared", "inverted", "shuffled", "kappa", "snr", "grad_norm")
BLOCK_SIGNALS = (*LINEAR_SIGNALS, "first", "last", "rgn")
"""Blocks are chosen by every linear signal (aggregated per block) and by the depth rules and Surgical's RGN."""


@dataclass
class ForcedSpec:
    """Everything a forced-choice run depends on; ``quick()`` is the test suite's, the defaults the committed one."""

    sources: tuple[str, ...] = ("vit6", "vit12")
    tasks: tuple[str, ...] = ("fashion-c-invert", "fashion-rot4", "digits", "fashion-c-noise", "fashion-coarse")
    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = (0, 42, 3407)
    selection_seeds: tuple[int, ...] = (0, 1, 2)
    optimizer: str = "adamw"
    block_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    lora_lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    lora_rank: int = 8
    top_p: float = 0.25
    train: TrainProtocol = field(default_factory=lambda: TrainProtocol(steps=60, batch_size=32))
    limits: dict[str, int] = field(default_factory=lambda: {"train": 640, "val": 300, "test": 500})
    num_pairs: int = 512
    score_batches: int = 5
    deadline: float | None = None  # time.time() after which no new run starts (the rest stays for the next session)
    cached_only: bool = False

    @classmethod
    def quick(cls) -> ForcedSpec:
        return cls(
            tasks=("fashion-c-invert",),
            seeds=(0, 42),
            selection_seeds=(0,),
            block_lrs=(1e-3,),
            lora_lrs=(1e-2,),
            train=TrainProtocol(steps=2, batch_size=8, eval_batch_size=64),
            limits={"train": 32, "val": 16, "test": 16},
            num_pairs=16,
            score_batches=2,
        )

    def validate(self) -> None:
        for what, names, known in (("sources", self.sources, SOURCES), ("tasks", self.tasks, TASKS)):
            bad = [n for n in names if n not in known]
            if bad:
                raise InvalidInputError(f"unknown {what} {bad}; choose from {list(known)}")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise InvalidInputError(f"unknown arms {bad}; choose from {list(ARMS)}")
        if self.optimizer not in OPTIMIZERS or not self.seeds or not self.selection_seeds:
            raise InvalidInputError(f"optimizer must be one of {list(OPTIMIZERS)}; give seeds and selection seeds")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("deadline")
        out.pop("cached_only")
        return out


def _source_path(source: str) -> str | None:
    path = SOURCES[source]
    if path is not None and not (Path(path) / "config.json").is_file():
        raise InvalidInputError(f"source {source!r} needs {path} (a source checkout of hf_plasticity)")
    return path


def _cache_root(spec: ForcedSpec, out: Path, source: str) -> Path:
    from ..models import bundled_model_path

    folder = Path(SOURCES[source] or bundled_model_path())
    blob = json.dumps(
        {
            "train": asdict(spec.train),
            "limits": spec.limits,
            "optimizer": OPTIMIZERS[spec.optimizer],
            "weights": hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest(),
        },
        sort_keys=True,
    )
    return out / "runs" / source / hashlib.sha256(blob.encode()).hexdigest()[:12]


def _reports(task: Task, source: str, spec: ForcedSpec, out: Path, progress: bool) -> dict[str, Any]:
    """Both protocols on the source; reference = the Fashion-MNIST sample, data = the task's train split."""
    from ..data.loaders import load_fashion_mnist_sample
    from ..measure.estimator import measure_plasticity
    from ..models import BUNDLED, load_image_processor, load_model
    from ..report.report import PlasticityReport

    reports = {}
    for protocol in ("shared", "in_situ"):
        path = out / "reports" / f"{source}-{task.name}-{protocol}.json"
        if path.is_file():
            reports[protocol] = PlasticityReport.load(path)
            continue
        train = task.split_dataset("train")
        reference = load_fashion_mnist_sample()
        n = min(spec.num_pairs, len(train), len(reference))
        report = measure_plasticity(
            load_model(_source_path(source) or BUNDLED),
            train,
            reference,
            protocol=protocol,
            num_pairs=n,
            batch_size=min(64, n),
            image_processor=load_image_processor("bundled"),
            seed=0,
            keep_rates=False,
            progress=progress,
            data_name=f"{task.name} (train split)",
            reference_name="fashion-mnist-sample",
        )
        report.model["model_id"] = source
        report.save(path)
        reports[protocol] = report
    return reports


def _context(task: Task, source: str, reports: dict[str, Any], spec: ForcedSpec, unit: Any) -> ScoreContext:
    model = base_model(task.num_labels, 0, _source_path(source))
    train = task.split("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    size = spec.train.batch_size
    batches = [
        {"pixel_values": train.pixels[idx], "labels": train.labels[idx]}
        for idx in (order[i * size : (i + 1) * size] for i in range(spec.score_batches))
        if len(idx)
    ]
    return ScoreContext(model, unit, reports, batches)


def _signals(ctx: ScoreContext, names: Sequence[str], selection_seeds: Sequence[int]) -> dict[str, dict[str, float]]:
    """Each signal's scores; the shuffled control once per selection seed (``shuffled@<seed>``)."""
    out = {}
    for name in names:
        if name == "shuffled":
            for s in selection_seeds:
                ctx.seed = s
                out[f"shuffled@{s}"] = score(name, ctx)
        else:
            out[name] = score(name, ctx)
    return out


def _block_method(blocks: list[str]) -> ResolvedMethod:
    index = sorted(int(b.rsplit(".", 1)[-1]) for b in blocks)
    key = "blocks:" + "-".join(map(str, index))
    prefix = blocks[0].rsplit(".", 1)[0]
    return ResolvedMethod(key, "modules", key, {}, [f"{prefix}.{i}" for i in index])


def _lora_method(linears: list[str], rank: int) -> ResolvedMethod:
    from .pareto import peft_run_key

    targets = sorted(linears)
    spec = {
        "method": "lora",
        "target_modules": targets,
        "r": rank,
        "lora_alpha": rank,
        "modules_to_save": ["classifier"],
    }
    key = peft_run_key(spec)
    return ResolvedMethod(key, "peft", key, spec, targets)


@dataclass
class _Group:
    """One trained set on one (source, task): its method, learning-rate grid and the arms that use it."""

    source: str
    task: str
    method: ResolvedMethod
    lrs: tuple[float, ...]
    arm: str


def plan(spec: ForcedSpec, out: Path, progress: bool = True) -> tuple[dict[str, Any], list[_Group], dict[Any, Task]]:
    """Measure, score and resolve every arm's choices; returns (choices, run groups in arm order, tasks)."""
    from ..models import load_image_processor

    processor = load_image_processor("bundled")
    choices: dict[str, Any] = {}
    groups: list[_Group] = []
    tasks: dict[Any, Task] = {}
    for source in spec.sources:
        for name in spec.tasks:
            task = prepare_task(name, processor, spec.limits)
            tasks[source, name] = task
            reports = _reports(task, source, spec, out, progress)
            entry: dict[str, Any] = {"num_labels": task.num_labels, "scores": {}, "choices": {}}
            block_ctx = _context(task, source, reports, spec, "block")
            blocks = block_ctx.units()
            block_scores = _signals(block_ctx, sorted({*BLOCK_SIGNALS, *CORRELATED}), spec.selection_seeds)
            entry["scores"]["block"] = block_scores
            if "blocks1" in spec.arms:
                top = select(block_scores["plasticity_in_situ"], 1)
                for b in [*top, *(b for b in blocks if b not in top)]:  # the oracle: every single block
                    groups.append(_Group(source, name, _block_method([b]), spec.block_lrs, "blocks1"))
            for arm, k in (("blocks1", 1), ("blocks2", 2)):
                if arm not in spec.arms:
                    continue
                picked = {
                    s: _block_method(select(v, k)).run_key
                    for s, v in block_scores.items()
                    if s.split("@")[0] in BLOCK_SIGNALS
                }
                entry["choices"][arm] = picked
                if k == 2:
                    for s, v in block_scores.items():
                        if s.split("@")[0] in BLOCK_SIGNALS:
                            groups.append(_Group(source, name, _block_method(select(v, k)), spec.block_lrs, arm))
            if "lora25" in spec.arms:
                lin_ctx = _context(task, source, reports, spec, "linear")
                lin_scores = _signals(lin_ctx, LINEAR_SIGNALS, spec.selection_seeds)
                count = max(1, math.floor(len(lin_ctx.units()) * spec.top_p))
                picked = {}
                for s, v in lin_scores.items():
                    method = _lora_method(select(v, count), spec.lora_rank)
                    picked[s] = method.run_key
                    groups.append(_Group(source, name, method, spec.lora_lrs, "lora25"))
                entry["choices"]["lora25"] = picked
                entry["lora_targets"] = count
                entry["scores"]["linear_top"] = {s: select(v, count) for s, v in lin_scores.items()}
            choices.setdefault(source, {})[name] = entry
    unique: dict[tuple[str, str, str], _Group] = {}
    for g in groups:
        unique.setdefault((g.source, g.task, g.method.run_key), g)
    order = {a: i for i, a in enumerate(ARMS)}
    return choices, sorted(unique.values(), key=lambda g: order[g.arm]), tasks


def _job(g: _Group, seed: int, lr: float, spec: ForcedSpec, out: Path) -> RunJob:
    safe = g.method.run_key.replace(":", "_").replace("+", "-")
    path = _cache_root(spec, out, g.source) / g.task / safe / f"seed{seed}-lr{lr:g}.json"
    return RunJob(g.task, g.method, spec.optimizer, seed, lr, spec.train, str(path), _source_path(g.source), True)


def run(spec: ForcedSpec, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the benchmark, write ``results.json`` and ``tables.md``, and return the results."""
    spec.validate()
    out = Path(out_dir)
    started = time.perf_counter()
    choices, groups, tasks = plan(spec, out, progress)
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    grid: dict[str, Any] = {}
    skipped = 0

    def execute(jobs: list[tuple[_Group, RunJob]], desc: str) -> list[tuple[_Group, dict[str, Any]]]:
        nonlocal skipped
        results = []
        bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress)
        for g, job in jobs:
            hit = cached_result(job)
            if hit is None and not spec.cached_only and (spec.deadline is None or time.time() < spec.deadline):
                bar.set_postfix_str(f"{g.source} {job.describe()}")
                hit = run_job(job, tasks[g.source, g.task])
            if hit is None:
                skipped += 1
            else:
                results.append((g, hit))
            bar.update()
        bar.close()
        return results

    for arm in ARMS:  # arm by arm, so a session cut short has answered the first arms everywhere
        mine = [g for g in groups if g.arm == arm]
        probes: dict[tuple[str, str], _Group] = {}
        for g in mine:  # plasticity's own choice comes first in each (source, task): it probes the rate
            probes.setdefault((g.source, g.task), g)
        first = execute(
            [(g, _job(g, spec.seeds[0], lr, spec, out)) for g in probes.values() for lr in g.lrs], f"{arm}: grid"
        )
        best: dict[tuple[str, str], float] = {}
        for where, g in probes.items():
            tried = [r for h, r in first if h is g]
            if len(tried) < len(g.lrs):
                continue  # the grid is incomplete: no rate is chosen until it is
            top = max(tried, key=lambda r: (r["val_accuracy"], -r["lr"]))  # ties: the smaller rate
            best[where] = top["lr"]
            grid.setdefault(g.source, {}).setdefault(g.task, {})[arm] = {
                "probe": g.method.run_key,
                "val_accuracy": {f"{r['lr']:g}": r["val_accuracy"] for r in tried},
                "chosen_lr": top["lr"],
            }
        rest = execute(
            [
                (g, _job(g, seed, best[g.source, g.task], spec, out))
                for g in mine
                if (g.source, g.task) in best
                for seed in (spec.seeds[1:] if g is probes[g.source, g.task] else spec.seeds)
            ],
            f"{arm}: seeds",
        )
        for g, r in [*first, *rest]:
            if best.get((g.source, g.task)) == r["lr"]:
                runs.setdefault((g.source, g.task, g.method.run_key), []).append({**r, "source_name": g.source})
    from .forced_output import summarise, write
    from .forgetting import source_accuracy_before

    results = {
        "spec": spec.to_dict(),
        "tasks": {name: {"shift": TASKS[name].shift, "why": TASKS[name].why} for name in spec.tasks},
        "choices": choices,
        "lr_grid": grid,
        "runs": [{k: v for k, v in r.items() if k != "protocol"} for rs in runs.values() for r in rs],
        "source_accuracy_before": {s: source_accuracy_before(_source_path(s)) for s in spec.sources},
        "not_run": skipped,
        "seconds": time.perf_counter() - started,
    }
    results["summary"] = summarise(results, spec)
    write(results, out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_plasticity.reproduce.forced",
        description="The forced-choice benchmark: one block, two blocks, LoRA on the top 25% of linears.",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("forced-output"))
    parser.add_argument("--sources", nargs="+", choices=list(SOURCES))
    parser.add_argument("--tasks", nargs="+", metavar="TASK")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS))
    parser.add_argument("--quick", action="store_true", help="the pipeline on tiny splits, in seconds")
    parser.add_argument("--minutes", type=float, help="start no new run after this many minutes (resume later)")
    parser.add_argument("--cached-only", action="store_true", help="train nothing: summarise the cached runs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    spec = ForcedSpec.quick() if args.quick else ForcedSpec()
    for option in ("sources", "tasks", "arms"):
        if getattr(args, option):
            setattr(spec, option, tuple(getattr(args, option)))
    if args.minutes is not None:
        spec.deadline = time.time() + 60 * args.minutes
    spec.cached_only = args.cached_only
    torch.set_num_threads(1)
    results = run(spec, args.output_dir, progress=not args.no_progress)
    print(f"{len(results['runs'])} runs summarised, {results['not_run']} not run yet: {args.output_dir}/tables.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
