"""Reproduce the paper's component-wise finetuning on real data with the bundled ViT.

``reproduce(ExperimentSpec.full(), "reproduce-output")`` measures the source model's plasticity on each
downstream task (both protocols), finetunes every method (each component type alone, full finetuning,
linear probing, PEFT LoRA, and every selection the package offers) with ``Trainer``, and writes the
accuracy table, the statistics the paper reports (Spearman, Wilcoxon) and a figure.

It needs the ``reproduce`` extra (``pip install 'hf-plasticity[reproduce]'``). Importing this package is
cheap (names load on first use, PEP 562), so ``hf-plasticity reproduce --help`` reads its options from
:mod:`.command` without importing torch or the experiment.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .finetune import TrainProtocol
    from .methods import METHODS
    from .runner import ExperimentSpec, OptimizerPlan
    from .tasks import TASKS

_LAZY = {
    "METHODS": "methods",
    "TASKS": "tasks",
    "ExperimentSpec": "runner",
    "OptimizerPlan": "runner",
    "TrainProtocol": "finetune",
}

__all__ = ["METHODS", "TASKS", "ExperimentSpec", "OptimizerPlan", "TrainProtocol", "reproduce"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reproduce(
    spec: ExperimentSpec, out_dir: str | os.PathLike[str], command: str = "", progress: bool = True
) -> dict[str, Path]:
    """Run (or resume from the run cache) the experiment; returns the paths of the JSON, markdown and figure."""
    from .output import write_results
    from .runner import run_experiment
    from .stats import analyse

    results = run_experiment(spec, out_dir, progress=progress)
    if spec.pareto:
        from .pareto_output import analyse_pareto, write_pareto

        return write_pareto(results, analyse_pareto(results), out_dir, command=command)
    return write_results(results, analyse(results), out_dir, command=command)
