"""Start-up cost of the command line: ``hf-plasticity --help`` against ``python -c "import torch"``, in one run.

Each repetition runs both commands in fresh interpreters, alternating which goes first, so load on a shared
machine hits both alike. Prints the median wall time of each, the ratio of the medians and the median of the
per-repetition ratios. Target: <= 1.0 (the CLI answers --help, list and usage errors without importing torch,
transformers or peft).

    python benchmarks/bench_cli.py             # 11 repetitions
    python benchmarks/bench_cli.py --runs 5    # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "hf-plasticity --help": [sys.executable, "-m", "hf_plasticity", "--help"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def wall_time(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, whatever is installed
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11, help="repetitions (default: 11)")
    args = parser.parse_args()
    names = list(COMMANDS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for run in range(args.runs + 1):
        order = names if run % 2 == 0 else names[::-1]
        measured = {name: wall_time(COMMANDS[name]) for name in order}
        if run:  # the first repetition warms the file cache and is not counted
            for name, seconds in measured.items():
                times[name].append(seconds)
    cli, torch_import = (statistics.median(times[name]) for name in names)
    ratios = [a / b for a, b in zip(times[names[0]], times[names[1]], strict=True)]
    print(f"{names[0]:<28} median {cli:.3f} s over {args.runs} runs")
    print(f"{names[1]:<28} median {torch_import:.3f} s")
    print(f"ratio (median / median): {cli / torch_import:.3f}   median of ratios: {statistics.median(ratios):.3f}")
    print("target: <= 1.0")


if __name__ == "__main__":
    main()
