"""Cost of a plasticity measurement relative to a plain forward pass, measured in one run.

For each protocol it prints (estimator time) / (time of ``model(pixel_values)`` over the same x and y
batches). Targets: in_situ <= 1.05 (one forward pass is its floor), shared <= 0.65 (only the embedding,
attention and the LayerNorms see both inputs; the MLP linears see the difference alone, ``ffn_fc1``
through its d x d Gram matrix). It also times the theoretical bounds (exact spectral norms from the
weights), which every measurement computes by default: target < 5% of a measurement.

    python benchmarks/bench_measure.py                   # ViT-Base/16 shape, random weights, 2 threads
    python benchmarks/bench_measure.py --layers 2 --batches 2   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from hf_plasticity import COMPONENTS, measure_plasticity, resolve_components
from hf_plasticity.measure.bounds import weight_bounds

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved_timings
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
            bounds=False,  # timed on their own below
        )

    def bounds() -> None:
        weight_bounds(resolve_components(model), COMPONENTS)

    forward()  # warm-up
    contenders = {
        "forward": forward,
        "shared": lambda: measure("shared"),
        "in_situ": lambda: measure("in_situ"),
        "bounds": bounds,
    }
    timings = interleaved_timings(contenders, args.repeats)
    base = statistics.median(timings["forward"])
    print(
        f"ViT hidden={args.hidden} layers={args.layers} image={args.image_size} threads={args.threads} "
        f"pairs={n} (batch {args.batch_size}), median of {args.repeats}"
    )
    print(f"forward over x and y : {base:8.3f} s  (1.00)")
    for name, target in (("shared", 0.65), ("in_situ", 1.05)):
        t = statistics.median(timings[name])
        # each repetition times the forward and the measurement back to back: the median of their ratios cancels
        # the slow drifts of a shared machine's speed that the ratio of medians picks up
        paired = statistics.median(m / f for m, f in zip(timings[name], timings["forward"], strict=True))
        verdict = "ok" if t / base <= target else "ABOVE TARGET"
        print(
            f"{name:<21}: {t:8.3f} s  ({t / base:.2f}; target <= {target}) {verdict}; "
            f"median of per-repetition ratios {paired:.2f}"
        )
    tb, ts = statistics.median(timings["bounds"]), statistics.median(timings["shared"])
    per_pair = ts / n
    print(f"bounds (all layers)  : {tb:8.3f} s  ({tb / ts:.1%} of this shared measurement of {n} pairs)")
    print(
        f"                       {tb / (tb + per_pair * 12_800):.2%} of a default 12,800-pair shared measurement "
        f"(extrapolated at {per_pair * 1e3:.0f} ms/pair); target < 5%"
    )


class _YOnly:
    """One side of a DataLoader of (x, y) tensors, so x and y stream without copies."""

    def __init__(self, loader: torch.utils.data.DataLoader, index: int) -> None:
        self.loader, self.index = loader, index

    def __iter__(self):
        return (batch[self.index] for batch in self.loader)


if __name__ == "__main__":
    main()
