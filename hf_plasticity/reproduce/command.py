"""The reproduction's command-line options, shared by ``hf-plasticity reproduce`` and the example script."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from .methods import ALL_METHODS
from .tasks import TASKS

DEFAULT_OUT = Path("benchmarks/results/reproduce")
PARETO_OUT = Path("benchmarks/results/pareto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the reproduction (the defaults are the committed full run)."""
    parser.add_argument(
        "--out-dir", type=Path, help=f"results folder (default: {DEFAULT_OUT}; with --pareto: {PARETO_OUT})"
    )
    parser.add_argument(
        "--pareto",
        action="store_true",
        help="the Pareto experiment: plasticity against PEFT's selectors at matched parameter budgets",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"runs cache (default: <out-dir>/runs; with --pareto: {DEFAULT_OUT / 'runs'}, shared with the main run)",
    )
    parser.add_argument(
        "--cached-only", action="store_true", help="train nothing: summarise the runs already in the cache"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 seed, 2 steps, tiny splits, SGD only (seconds; what the test suite runs)",
    )
    parser.add_argument("--workers", type=int, help="worker processes, 1 thread each (default: 2 full, 1 quick)")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="downstream tasks (default: all)")
    parser.add_argument("--methods", nargs="+", choices=list(ALL_METHODS), help="methods (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_from_args(args: argparse.Namespace, program: list[str]) -> int:
    """Run the experiment the options describe, write its files and print where they are.

    The results record ``program`` followed by the options as parsed, so the command reproduces the run
    however it was started (shell, ``main(argv)``, the example script).
    """
    from . import reproduce
    from .runner import ExperimentSpec

    if args.pareto:
        spec = ExperimentSpec.pareto_quick() if args.quick else ExperimentSpec.pareto_full()
        shared = not args.quick and args.out_dir is None  # the committed run reuses the main run's cached runs
        spec.cache_dir = str(
            args.cache_dir or (DEFAULT_OUT / "runs" if shared else (args.out_dir or PARETO_OUT) / "runs")
        )
    else:
        spec = ExperimentSpec.quick() if args.quick else ExperimentSpec.full()
        spec.cache_dir = str(args.cache_dir) if args.cache_dir else None
    spec.cached_only = args.cached_only
    out_dir = args.out_dir or (PARETO_OUT if args.pareto else DEFAULT_OUT)
    if args.workers is not None:
        spec.workers = args.workers
    if args.tasks:
        spec.tasks = tuple(args.tasks)
    if args.methods:
        spec.methods = tuple(dict.fromkeys(["linear", "lora", *args.methods]))
    paths = reproduce(spec, out_dir, command=command_line(program, args), progress=not args.no_progress)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def command_line(program: list[str], args: argparse.Namespace) -> str:
    """The shell command equivalent to ``args`` (defaults left out)."""
    words = list(program)
    if args.pareto:
        words.append("--pareto")
    if args.quick:
        words.append("--quick")
    if args.out_dir is not None:
        words += ["--out-dir", str(args.out_dir)]
    if args.cache_dir is not None:
        words += ["--cache-dir", str(args.cache_dir)]
    if args.cached_only:
        words.append("--cached-only")
    if args.workers is not None:
        words += ["--workers", str(args.workers)]
    for option in ("tasks", "methods"):
        if getattr(args, option):
            words += [f"--{option}", *getattr(args, option)]
    if args.no_progress:
        words.append("--no-progress")
    return shlex.join(words)
