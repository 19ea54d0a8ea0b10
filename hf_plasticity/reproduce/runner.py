"""The experiment from start to end: measure, resolve the selections, finetune (grid, then seeds), summarise.

Learning rates are chosen per (optimizer, task, trained modules) on the validation split with the first
seed, as the paper picks its learning rate; the other seeds then run at that rate. Runs go through a
pool of worker processes (one thread each) and are cached, so an interrupted or repeated experiment
resumes where it stopped.

The experiment's specification, its run plan and the worker pool sit together because they share one cache
key per run, which must not drift between them; statistics, figures and outputs only read finished runs
(:mod:`.stats`, :mod:`.figure`, :mod:`.output`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from ..errors import InvalidInputError
from .finetune import OPTIMIZERS, RunJob, TrainProtocol, cached_result, run_job
from .methods import ALL_METHODS, DESCRIPTIONS, METHODS, ResolvedMethod, base_model, lora_share, resolve_methods
from .tasks import PAPER_TASKS, TASKS, Task, prepare_task

SEEDS = (0, 42, 3407)
PROTOCOLS: tuple[Literal["shared", "in_situ"], ...] = ("shared", "in_situ")
REFERENCE = "fashion-mnist-sample"


@dataclass(frozen=True)
class OptimizerPlan:
    """An optimizer, its learning-rate grid, and where it runs (None: every task / every method)."""

    name: str
    lrs: tuple[float, ...]
    tasks: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    select_on: str | None = None  # choose each method's rate on this task alone, and use it on every task
    grid_only: bool = False  # run the grid alone (seed 0): the evidence for pruning a method, no seeds


@dataclass
class ExperimentSpec:
    """Everything that defines a reproduction run; ``quick()`` and ``full()`` are the two documented ones."""

    tasks: tuple[str, ...] = PAPER_TASKS
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = SEEDS
    optimizers: tuple[OptimizerPlan, ...] = ()
    train: TrainProtocol = field(default_factory=TrainProtocol)
    num_pairs: int = 1024
    limits: dict[str, int] | None = None
    workers: int = 1
    pareto: bool = False
    cache_dir: str | None = None  # runs cache (default: <out_dir>/runs); the Pareto run shares the main run's
    cached_only: bool = False  # summarise the runs already cached, train nothing (a run cut short)

    @classmethod
    def full(cls, workers: int = 2) -> ExperimentSpec:
        """The committed run: 3 tasks, 3 seeds, SGD with a 5-point grid; an AdamW ablation on digits.

        Sized for about an hour on 2 free CPU cores (~260 runs of 120 steps of batch 32, ~25 s each): the
        paper's 10,000 steps of batch 512 are out of a CPU's reach, so these are short finetunings. 120 steps
        are 1-4 epochs of the tasks' train splits; at 40 steps the new head had not converged at the paper's
        low rates and the comparison measured how fast a head learns rather than which component helps. The
        SGD grid is the paper's {3e-3, 1e-2, 3e-2} plus 0.1 and 0.3, which the head and the LayerNorms need.
        """
        return cls(
            methods=METHODS,
            optimizers=(
                OptimizerPlan("sgd", (0.003, 0.01, 0.03, 0.1, 0.3)),
                OptimizerPlan(
                    "adamw",
                    (1e-3, 3e-3),
                    tasks=("digits",),
                    methods=("linear", "attn_norm", "mha", "ffn_norm", "ffn_fc1", "ffn_fc2", "full", "lora"),
                ),
            ),
            train=TrainProtocol(steps=120, batch_size=32),
            workers=workers,
        )

    @classmethod
    def quick(cls, workers: int = 1) -> ExperimentSpec:
        """A smoke run of the whole pipeline in well under a minute: 1 seed, 4 steps, tiny splits."""
        return cls(
            seeds=(0,),
            optimizers=(OptimizerPlan("sgd", (0.3,)),),
            train=TrainProtocol(steps=4, batch_size=16, eval_batch_size=64),
            num_pairs=32,
            limits={"train": 64, "val": 32, "test": 32},
            workers=workers,
        )

    @classmethod
    def pareto_full(cls, workers: int = 2) -> ExperimentSpec:
        """The committed Pareto run, pruned to what two CPU cores finish in a working session (README).

        AdamW is the primary optimizer. Learning rates are chosen on validation (seed 0) from a grid per family:
        {3e-4, 1e-3, 3e-3, 1e-2} for whole modules, {3e-3, 1e-2, 3e-2} for LoRA-type methods (their best rate is
        about 10x a whole module's), and 0.1 too for AdaLoRA and LN tuning (both chose 3e-2, the top of that
        grid); grids were widened wherever a method chose an edge. The leaders of each budget (plasticity LoRA,
        LoRA on every linear and the whole-module budget at B1/B2; attention, theory's top two and full
        finetuning) choose their rate per task; the methods they dominate choose it on digits and use it on
        every task (pruned). Per budget: the plasticity options (ranks ∝ score, and the flatter ∝ sqrt(score)
        allocation) against LoRA on q, v and on every linear, AdaLoRA, EVA and KappaTune at B1, AdaLoRA at B2,
        LN tuning at its own budget; at B4 (attention and fc1, 66%) theory's top two types and the measured
        per-module budget. Plasticity LoRA from the shared-protocol report runs as the in-situ one; the shared
        whole-module budget runs its digits grid only: it lost it by 4.7 points of validation accuracy. SGD, the
        paper's ablation, beside: the B1/B2 leaders ({0.03, 0.1, 0.3}, per task), and the main run's cached
        runs (head, LoRA r=16, attention, full finetuning; its 5-point grid, per task).
        """

        from .pareto import committed_run  # each method's grids live in its record there

        methods, grids = committed_run()
        return cls(
            methods=methods,
            optimizers=tuple(
                OptimizerPlan(g.optimizer, g.lrs, methods=names, select_on=g.select_on, grid_only=g.grid_only)
                for g, names in grids
            ),
            train=TrainProtocol(steps=120, batch_size=32),
            workers=workers,
            pareto=True,
        )

    @classmethod
    def pareto_quick(cls, workers: int = 1) -> ExperimentSpec:
        """The Pareto pipeline on tiny splits, one method of each family, in seconds (the test suite runs it)."""
        trained = (
            "linear",
            "lora",
            "b1_plora_in_situ",
            "b2_budget_in_situ",
            "b1_lora_all",
            "b1_adalora",
            "b1_eva",
            "b1_kappa",
            "ln_tuning",
            "b4_top2",
        )
        return cls(
            methods=(*trained, "b1_plora_shared"),
            tasks=("digits",),
            seeds=(0, 42),
            optimizers=(
                OptimizerPlan("adamw", (1e-3,), methods=trained),
                OptimizerPlan("adamw", (1e-3, 3e-3), methods=("b1_plora_shared",), select_on="digits", grid_only=True),
            ),
            train=TrainProtocol(steps=2, batch_size=16, eval_batch_size=64),
            num_pairs=32,
            limits={"train": 64, "val": 32, "test": 32},
            workers=workers,
            pareto=True,
        )

    def validate(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise InvalidInputError(f"unknown tasks {unknown}; choose from {sorted(TASKS)}")
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad:
            raise InvalidInputError(f"unknown methods {bad}; choose from {list(ALL_METHODS)}")
        missing = [m for m in ("linear", "lora") if m not in self.methods]
        if missing:
            raise InvalidInputError(f"methods {missing} are needed (gains and the budget are relative to them)")
        if not self.seeds or not self.optimizers:
            raise InvalidInputError("give at least one seed and one optimizer")
        for plan in self.optimizers:
            if plan.name not in OPTIMIZERS:
                raise InvalidInputError(f"unknown optimizer {plan.name!r}; choose from {sorted(OPTIMIZERS)}")
            if not plan.lrs or any(lr <= 0 for lr in plan.lrs):
                raise InvalidInputError(f"optimizer {plan.name}: give positive learning rates, got {plan.lrs}")
        if self.workers < 1:
            raise InvalidInputError(f"workers={self.workers} must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "methods": list(self.methods),
            "seeds": list(self.seeds),
            "optimizers": [asdict(p) for p in self.optimizers],
            "train": asdict(self.train),
            "num_pairs": self.num_pairs,
            "limits": self.limits,
            "workers": self.workers,
            "pareto": self.pareto,
            "lr_selection": (
                f"best validation accuracy with seed {self.seeds[0]}, per (optimizer, task, trained modules)"
            ),
        }


def run_experiment(spec: ExperimentSpec, out_dir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the experiment and return its results (not yet written; see ``output``)."""
    from ..data.loaders import load_fashion_mnist_sample
    from ..models import load_image_processor

    spec.validate()
    out = Path(out_dir)
    started = time.perf_counter()
    processor = load_image_processor("bundled")
    tasks = {name: prepare_task(name, processor, spec.limits) for name in spec.tasks}
    reference = load_fashion_mnist_sample()
    measurements, reports = {}, {}
    for name, prepared in tasks.items():
        reports[name], measurements[name] = _measure(prepared, reference, processor, spec, out, progress)
    budgets = {name: lora_share(task.num_labels) for name, task in tasks.items()}
    shares = {}
    if spec.pareto:
        from .pareto import budget_shares

        shares = {name: budget_shares(base_model(task.num_labels, 0), budgets[name]) for name, task in tasks.items()}
    resolved = {
        name: resolve_methods(spec.methods, task.num_labels, reports[name], budgets[name], shares.get(name))
        for name, task in tasks.items()
    }
    measured_at = time.perf_counter() - started
    cache_root = Path(spec.cache_dir or out / "runs") / _protocol_hash(spec)
    chosen_runs: list[dict[str, Any]] = []
    grid: dict[str, Any] = {}
    for plan in spec.optimizers:
        plan_tasks = [t for t in spec.tasks if plan.tasks is None or t in plan.tasks]
        plan_methods = [m for m in spec.methods if plan.methods is None or m in plan.methods]
        groups = _groups(resolved, plan_tasks, plan_methods)
        gridded = {k: v for k, v in groups.items() if plan.select_on is None or k[0] == plan.select_on}
        jobs = [
            _job(task, method, plan.name, spec.seeds[0], lr, spec, cache_root)
            for (task, _), (method, _) in gridded.items()
            for lr in plan.lrs
        ]
        first = _execute(jobs, tasks, spec, progress, f"{plan.name}: learning-rate grid (seed {spec.seeds[0]})")
        best: dict[tuple[str, str], float] = {}
        for (task, key), (_, names) in gridded.items():
            tried = [r for r in first if r["task"] == task and r["run_key"] == key]
            if not tried:  # cached_only, and this group never ran
                continue
            top = max(tried, key=lambda r: (r["val_accuracy"], -r["lr"]))  # ties: the smaller rate
            best[task, key] = top["lr"]
            grid.setdefault(plan.name, {}).setdefault(task, {})[key] = {
                "methods": names,
                "val_accuracy": {f"{r['lr']:g}": r["val_accuracy"] for r in sorted(tried, key=lambda r: r["lr"])},
                "chosen_lr": top["lr"],
            }
        if plan.grid_only:
            continue
        if plan.select_on is not None:  # the other tasks run at the rate their method chose there
            chosen = {name: best[k] for k, (_, names) in gridded.items() if k in best for name in names}
            for (task, key), (_, names) in groups.items():
                if (task, key) not in gridded and names[0] in chosen:
                    best[task, key] = chosen[names[0]]
        jobs = [
            _job(task, method, plan.name, seed, best[task, key], spec, cache_root)
            for (task, key), (method, _) in groups.items()
            if (task, key) in best
            for seed in (spec.seeds[1:] if (task, key) in gridded else spec.seeds)
        ]
        rest = _execute(jobs, tasks, spec, progress, f"{plan.name}: seeds")
        for result in [*first, *rest]:
            run = (result["task"], result["run_key"])
            if result["lr"] == best[run]:
                chosen_runs.append({**result, "methods": groups[run][1]})
    unique = {(r["optimizer"], r["task"], r["run_key"], r["seed"]): r for r in chosen_runs}  # plans may overlap
    chosen_runs = list(unique.values())
    return {
        "spec": spec.to_dict(),
        "tasks": {name: task.to_dict() for name, task in tasks.items()},
        "measurements": measurements,
        "budget": budgets,
        **({"shares": shares} if spec.pareto else {}),
        "methods": {task: {name: m.to_dict() for name, m in methods.items()} for task, methods in resolved.items()},
        "descriptions": DESCRIPTIONS,
        "lr_grid": grid,
        "runs": sorted(chosen_runs, key=lambda r: (r["optimizer"], r["task"], r["run_key"], r["seed"])),
        "timing": {"measure_seconds": measured_at, "total_seconds": time.perf_counter() - started},
        "environment": environment(spec.workers),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _measure(
    task: Task, reference: Any, processor: Any, spec: ExperimentSpec, out: Path, progress: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both protocols on the source model: reference = Fashion-MNIST sample, data = the task's train split."""
    from ..measure.estimator import measure_plasticity
    from ..models import BUNDLED, BUNDLED_MODEL_ID, load_model
    from .stats import pooled_bounds

    model = load_model(BUNDLED)
    train = task.split_dataset("train")
    num_pairs = min(spec.num_pairs, len(train), len(reference))
    reports: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        report = measure_plasticity(
            model,
            train,
            reference,
            protocol=protocol,
            num_pairs=num_pairs,
            batch_size=min(64, num_pairs),
            image_processor=processor,
            seed=0,
            keep_rates=False,
            progress=progress,
            data_name=f"{task.name} (train split)",
            reference_name=REFERENCE,
        )
        report.model["model_id"] = BUNDLED_MODEL_ID
        report.save(out / "reports" / f"{task.name}-{protocol}.json")
        reports[protocol] = report
        bounds = getattr(report, "bounds", None)  # per (layer, component), in reports of schema 2 and later
        summary[protocol] = {
            "scores": report.scores(),
            "ranking": report.ranking(),
            "ci95": {c: report.stat(c).ci95 for c in report.components},
            "per_layer": {c: report.mean[:, i].tolist() for i, c in enumerate(report.components)},
            "num_pairs": report.num_pairs,
            "bounds": pooled_bounds(bounds, report.components),
            "token_spread": _finite_or_none(getattr(report, "token_spread", None)),
            "radius": _finite_or_none(getattr(report, "radius", None)),
            "report": f"reports/{task.name}-{protocol}.json",
        }
    return reports, summary


def _finite_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _groups(
    resolved: dict[str, dict[str, ResolvedMethod]], tasks: Iterable[str], methods: Iterable[str]
) -> dict[tuple[str, str], tuple[ResolvedMethod, list[str]]]:
    """One entry per (task, run key): a representative method and every method name sharing it."""
    methods = list(methods)
    groups: dict[tuple[str, str], tuple[ResolvedMethod, list[str]]] = {}
    for task in tasks:
        for name in methods:
            m = resolved[task][name]
            if (task, m.run_key) in groups:
                groups[task, m.run_key][1].append(name)
            else:
                groups[task, m.run_key] = (m, [name])
    return groups


def _job(
    task: str, method: ResolvedMethod, optimizer: str, seed: int, lr: float, spec: ExperimentSpec, root: Path
) -> RunJob:
    safe = method.run_key.replace(":", "_").replace("+", "-")
    path = root / optimizer / task / safe / f"seed{seed}-lr{lr:g}.json"
    return RunJob(task, method, optimizer, seed, lr, spec.train, str(path))


def _execute(
    jobs: list[RunJob], tasks: dict[str, Task], spec: ExperimentSpec, progress: bool, desc: str
) -> list[dict[str, Any]]:
    """Run the jobs not already cached (in worker processes when ``spec.workers > 1``); return all results."""
    results, todo = [], []
    for job in jobs:
        hit = cached_result(job)
        (todo.append(job) if hit is None else results.append(hit))
    if spec.cached_only:
        todo = []
    if not jobs:
        return results
    bar = tqdm(total=len(jobs), initial=len(results), desc=desc, unit="run", disable=not progress)
    try:
        if spec.workers == 1 or len(todo) <= 1:
            for job in todo:
                bar.set_postfix_str(job.describe())
                results.append(run_job(job, tasks[job.task]))
                bar.update()
        else:
            ctx = get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=spec.workers, mp_context=ctx, initializer=_init_worker, initargs=(spec.limits,)
            ) as pool:
                futures = {pool.submit(_worker_run, job): job for job in todo}
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.set_postfix_str(futures[future].describe())
                    bar.update()
    finally:
        bar.close()
    return results


_WORKER: dict[str, Any] = {}


def _init_worker(limits: dict[str, int] | None) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.clear()
    _WORKER["limits"] = limits
    _WORKER["tasks"] = {}


def _worker_run(job: RunJob) -> dict[str, Any]:
    from ..models import load_image_processor

    tasks: dict[str, Task] = _WORKER["tasks"]
    if job.task not in tasks:
        tasks[job.task] = prepare_task(job.task, load_image_processor("bundled"), _WORKER["limits"])
    return run_job(job, tasks[job.task])


def _protocol_hash(spec: ExperimentSpec) -> str:
    """Cache namespace: what every run depends on besides its own job (recipe, splits, source weights)."""
    from ..models import bundled_model_path

    weights = (bundled_model_path() / "model.safetensors").read_bytes()
    blob = json.dumps(
        {
            "train": asdict(spec.train),
            "limits": spec.limits,
            "optimizers": OPTIMIZERS,
            "weights": hashlib.sha256(weights).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def environment(workers: int) -> dict[str, Any]:
    """The device and package versions the numbers were measured with."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    packages = (
        "hf-plasticity",
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "datasets",
        "evaluate",
        "scipy",
        "numpy",
    )
    for pkg in packages:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "device": f"CPU ({cpu}), {os.cpu_count()} cores visible, {workers} worker process(es) x 1 thread",
        "gpu": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
