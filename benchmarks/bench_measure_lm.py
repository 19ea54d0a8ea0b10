"""Cost of measuring a causal LM's plasticity relative to a plain forward pass, measured in one run.

A Llama-like model of hidden 1024, 8 layers, sequences of 256 tokens by default (random weights; grouped
key/value heads, rotary embeddings, SwiGLU MLP, RMSNorm). For each protocol it prints (estimator time) / (time
of the base model's forward over the same x and y token batches, no cache). The shared protocol reads the
block-0 input (the forward stops at the first block), builds each layer's attention arguments (causal mask,
rotary cos/sin) as the model's forward builds them, then applies every component of every layer to that pair;
in situ is one forward with hooks. Also timed: the weight bounds.

    python benchmarks/bench_measure_lm.py                        # the default shape, 2 threads
    python benchmarks/bench_measure_lm.py --layers 2 --batches 1 # a quick look
    python benchmarks/bench_measure_lm.py --device cuda          # on a GPU
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


def build_llama(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.seq_len, 2048),
    )
    return LlamaModel(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=2816, help="MLP width (Llama's 8/3 x hidden, rounded)")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches per timed repetition")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the median is reported)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_llama(args).to(device)
    n = args.batch_size * args.batches
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab, (n, args.seq_len), generator=g).to(device)
    y = torch.randint(0, args.vocab, (n, args.seq_len), generator=g).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.inference_mode():
            for i in range(0, n, args.batch_size):
                s = slice(i, i + args.batch_size)
                model(input_ids=torch.cat([x[s], y[s]]), use_cache=False)
        sync()

    def measure(protocol: str) -> None:
        measure_plasticity(
            model, y, x, protocol=protocol, num_pairs=n, batch_size=args.batch_size, progress=False, bounds=False
        )
        sync()

    def bounds() -> None:
        weight_bounds(resolve_components(model), COMPONENTS)
        sync()

    forward()  # warm-up
    measure("shared")
    contenders = {
        "forward": forward,
        "shared": lambda: measure("shared"),
        "in_situ": lambda: measure("in_situ"),
        "bounds": bounds,
    }
    timings = interleaved_timings(contenders, args.repeats)
    base = statistics.median(timings["forward"])
    where = f"{args.threads} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"Llama hidden={args.hidden} layers={args.layers} mlp={args.intermediate} heads={args.heads}/{args.kv_heads} "
        f"seq={args.seq_len} on {where}; pairs={n} (batch {args.batch_size}), median of {args.repeats}"
    )
    print(f"forward over x and y : {base:8.3f} s  (1.00)")
    for name in ("shared", "in_situ"):
        t = statistics.median(timings[name])
        paired = statistics.median(m / f for m, f in zip(timings[name], timings["forward"], strict=True))
        print(f"{name:<21}: {t:8.3f} s  ({t / base:.2f}); median of per-repetition ratios {paired:.2f}")
    tb = statistics.median(timings["bounds"])
    print(f"bounds (all layers)  : {tb:8.3f} s  ({tb / statistics.median(timings['shared']):.1%} of the shared run)")


if __name__ == "__main__":
    main()
