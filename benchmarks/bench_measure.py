"""Cost of a plasticity measurement relative to a plain forward pass, measured in one run.

For each protocol it prints (estimator time) / (time of ``model(pixel_values)`` over the same x and y
batches). Targets: in_situ <= 1.1 (one forward pass is its floor), shared <= 0.9 (its arithmetic is
below a forward pass: ``ffn_fc2`` on a zero-padded input is a d x d product on the difference only).

    python benchmarks/bench_measure.py                   # ViT-Base/16 shape, random weights, 2 threads
    python benchmarks/bench_measure.py --layers 2 --batches 2   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from hf_plasticity import measure_plasticity

sys.path.insert(0, str(Path(__file__).parent))
from _vit import add_model_args, build_vit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches per timed repetition")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the median is reported)")
    args = parser.parse_args()
    model = build_vit(args).eval()
    n = args.batch_size * args.batches
    x = torch.randn(n, 3, args.image_size, args.image_size)
    y = torch.randn(n, 3, args.image_size, args.image_size)

    def forward() -> None:
        with torch.inference_mode():
            for i in range(0, n, args.batch_size):
                s = slice(i, i + args.batch_size)
                model(pixel_values=torch.cat([x[s], y[s]]))

    def measure(protocol: str) -> None:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args.batch_size)
        measure_plasticity(
            model,
            data=_YOnly(loader, 1),
            reference=_YOnly(loader, 0),
            protocol=protocol,
            progress=False,
            keep_rates=True,
        )

    forward()  # warm-up
    timings: dict[str, list[float]] = {"forward": [], "shared": [], "in_situ": []}
    for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit all three alike
        for name, fn in (
            ("forward", forward),
            ("shared", lambda: measure("shared")),
            ("in_situ", lambda: measure("in_situ")),
        ):
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    base = statistics.median(timings["forward"])
    print(
        f"ViT hidden={args.hidden} layers={args.layers} image={args.image_size} threads={args.threads} "
        f"pairs={n} (batch {args.batch_size}), median of {args.repeats}"
    )
    print(f"forward over x and y : {base:8.3f} s  (1.00)")
    for name, target in (("shared", 0.9), ("in_situ", 1.1)):
        t = statistics.median(timings[name])
        verdict = "ok" if t / base <= target else "ABOVE TARGET"
        print(f"{name:<21}: {t:8.3f} s  ({t / base:.2f}; target <= {target}) {verdict}")


class _YOnly:
    """One side of a DataLoader of (x, y) tensors, so x and y stream without copies."""

    def __init__(self, loader: torch.utils.data.DataLoader, index: int) -> None:
        self.loader, self.index = loader, index

    def __iter__(self):
        return (batch[self.index] for batch in self.loader)


if __name__ == "__main__":
    main()
