"""Reproduce the paper's component-wise finetuning on real data with the bundled ViT.

``reproduce(ExperimentSpec.full(), "benchmarks/results/reproduce")`` measures the source model's
plasticity on each downstream task (both protocols), finetunes every method (each component type alone,
full finetuning, linear probing, PEFT LoRA, and every selection the package offers) with ``Trainer``,
and writes the accuracy table, the statistics the paper reports (Spearman, Wilcoxon) and a figure.
"""

from __future__ import annotations

import os
from pathlib import Path

from .finetune import TrainProtocol
from .methods import METHODS
from .runner import ExperimentSpec, OptimizerPlan, run_experiment
from .tasks import TASKS

__all__ = ["METHODS", "TASKS", "ExperimentSpec", "OptimizerPlan", "TrainProtocol", "reproduce"]


def reproduce(
    spec: ExperimentSpec, out_dir: str | os.PathLike[str], command: str = "", progress: bool = True
) -> dict[str, Path]:
    """Run (or resume from the run cache) the experiment; returns the paths of the JSON, markdown and figure."""
    from .output import write_results
    from .stats import analyse

    results = run_experiment(spec, out_dir, progress=progress)
    if spec.pareto:
        from .pareto_output import analyse_pareto, write_pareto

        return write_pareto(results, analyse_pareto(results), out_dir, command=command)
    return write_results(results, analyse(results), out_dir, command=command)
