"""Measuring a model larger than its memory allowance: streamed from disk against in memory, in one run.

A random Llama-shaped causal LM (hidden 2048, 8 layers, MLP 5632, vocabulary 32,000, float32: about 2.2 GB of
safetensors) is written to disk one layer shard at a time, so writing it never holds the whole model. Each
contender runs in its own subprocess, which loads the model, measures once to warm the page cache, then times a
second measurement; its peak resident memory (its own high-water mark) covers the whole process:

- ``in memory``: ``from_pretrained(folder)``, every weight in RAM;
- ``streamed``: ``from_pretrained(folder, device_map="auto", max_memory={"cpu": ...}, offload_folder=...)``, so
  every block stays on disk and the estimator holds one block at a time.

It prints, per protocol, the peak resident memory against the size on disk and the streamed time against the
in-memory time. Bounds are computed in both (the default call).

    python benchmarks/bench_stream.py                       # the default shape
    python benchmarks/bench_stream.py --layers 2 --hidden 256 --intermediate 704 --vocab 4000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import peak_resident_bytes

PROTOCOLS = ("shared", "in_situ")


def write_model(folder: Path, args: argparse.Namespace) -> int:
    """A random LlamaForCausalLM checkpoint written shard by shard (one per block); returns its bytes on disk."""
    from accelerate import init_empty_weights
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(args.seq_len, 256),
        tie_word_embeddings=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    with init_empty_weights():
        shapes = {n: p.shape for n, p in LlamaForCausalLM(config).named_parameters()}
    groups: dict[str, list[str]] = {}
    for name in shapes:
        parts = name.split(".")
        key = f"layer{parts[2]}" if parts[:2] == ["model", "layers"] else parts[-2]
        groups.setdefault(key, []).append(name)
    g = torch.Generator().manual_seed(0)
    index: dict[str, str] = {}
    for i, (key, names) in enumerate(groups.items()):
        shard = f"model-{i:05d}-{key}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            if len(shape) == 1:  # a norm's gain
                tensors[name] = torch.ones(shape)
            else:
                tensors[name] = torch.randn(shape, generator=g) * shape[-1] ** -0.5
        save_file(tensors, folder / shard, metadata={"format": "pt"})
        index.update(dict.fromkeys(names, shard))
        del tensors
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    meta = {"metadata": {"total_size": size}, "weight_map": index}
    (folder / "model.safetensors.index.json").write_text(json.dumps(meta), encoding="utf-8")
    return size


def run_one(args: argparse.Namespace) -> None:
    """One contender, in this (fresh) process: prints a JSON line with its time and peak resident memory."""
    from transformers import AutoModelForCausalLM

    from hf_plasticity import measure_plasticity

    torch.set_num_threads(args.threads)
    kwargs = {}
    if args.mode == "streamed":
        kwargs = {"device_map": "auto", "max_memory": {"cpu": 1}, "offload_folder": str(args.model / "offload")}
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, model.config.vocab_size, (args.pairs, args.seq_len), generator=g)
    y = torch.randint(0, model.config.vocab_size, (args.pairs, args.seq_len), generator=g)
    options = {"protocol": args.protocol, "num_pairs": args.pairs, "batch_size": args.batch_size, "progress": False}
    measure_plasticity(model, y, x, **options)  # warm-up: page cache, allocator
    t0 = time.perf_counter()
    report = measure_plasticity(model, y, x, **options)
    seconds = time.perf_counter() - t0
    peak = peak_resident_bytes()
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "mean": report.mean.tolist()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--folder", type=Path, help="where to write the checkpoint (default: a temporary folder)")
    parser.add_argument("--mode", choices=["memory", "streamed"], help=argparse.SUPPRESS)
    parser.add_argument("--protocol", choices=PROTOCOLS, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        run_one(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "llama"
        t0 = time.perf_counter()
        size = write_model(folder, args)
        print(
            f"Llama hidden={args.hidden} layers={args.layers} mlp={args.intermediate} heads={args.heads} "
            f"vocab={args.vocab}: {size / 1e9:.2f} GB of safetensors written in {time.perf_counter() - t0:.0f} s; "
            f"{args.pairs} pairs x {args.seq_len} tokens (batch {args.batch_size}), {args.threads} threads"
        )
        for protocol in PROTOCOLS:
            results = {}
            for mode in ("memory", "streamed"):
                cmd = [sys.executable, __file__, "--mode", mode, "--protocol", protocol, "--model", str(folder)]
                cmd += ["--threads", str(args.threads), "--pairs", str(args.pairs)]
                cmd += ["--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[mode] = json.loads(out.strip().splitlines()[-1])
            mem, streamed = results["memory"], results["streamed"]
            same = max(
                abs(a - b) / max(abs(a), 1e-30)
                for ra, rb in zip(mem["mean"], streamed["mean"], strict=True)
                for a, b in zip(ra, rb, strict=True)
            )
            print(
                f"{protocol:<8} in memory: {mem['seconds']:7.1f} s, peak RSS {mem['peak_rss'] / 1e9:5.2f} GB "
                f"({mem['peak_rss'] / size:.2f} x size) | streamed: {streamed['seconds']:7.1f} s "
                f"({streamed['seconds'] / mem['seconds']:.2f} x in-memory time), peak RSS "
                f"{streamed['peak_rss'] / 1e9:5.2f} GB ({streamed['peak_rss'] / size:.2f} x size) | "
                f"largest relative difference of the means {same:.1e}"
            )


if __name__ == "__main__":
    main()
