"""GPU figures: ViT-Base shape on 12,800 pairs, and a 7B-shape Llama streamed from disk (1,024 pairs x 128 tokens).

For each it prints the time, the peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: the peak resident
memory) and, for the streamed Llama, how fast the weights came off disk (bytes of the checkpoint read per
streamed chunk, over the time). ``--dry-run`` runs the same code on the CPU at tiny shapes, to check it.

    python benchmarks/bench_gpu.py                 # on a GPU (random weights; writes ~27 GB of safetensors)
    python benchmarks/bench_gpu.py --dry-run       # on the CPU, tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import peak_resident_bytes
from bench_stream import write_model

FULL = {
    "vit": {"hidden": 768, "layers": 12, "heads": 12, "mlp": 3072, "image": 224, "patch": 16, "pairs": 12_800},
    "llama": {"hidden": 4096, "layers": 32, "heads": 32, "mlp": 11008, "vocab": 32_000, "pairs": 1024, "seq": 128},
}
DRY = {
    "vit": {"hidden": 64, "layers": 2, "heads": 4, "mlp": 128, "image": 32, "patch": 8, "pairs": 128},
    "llama": {"hidden": 64, "layers": 2, "heads": 4, "mlp": 176, "vocab": 1000, "pairs": 32, "seq": 16},
}


def peak(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak resident memory {peak_resident_bytes() / 2**30:.2f} GiB (CPU)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vit(shape: dict, device: torch.device, batch: int) -> None:
    from transformers import ViTConfig, ViTModel

    from hf_plasticity import measure_plasticity

    config = ViTConfig(
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["mlp"],
        image_size=shape["image"],
        patch_size=shape["patch"],
    )
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False).eval().to(device)
    n = shape["pairs"]
    x, y = torch.randn(n, 3, shape["image"], shape["image"]), torch.randn(n, 3, shape["image"], shape["image"])
    for protocol in ("shared", "in_situ"):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        measure_plasticity(model, y, x, protocol=protocol, num_pairs=n, batch_size=batch, progress=False)
        sync(device)
        print(f"ViT-Base shape, {n} pairs, {protocol:<8}: {time.perf_counter() - t0:7.1f} s, {peak(device)}")


def llama(shape: dict, device: torch.device, batch: int, folder: Path) -> None:
    from transformers import AutoModelForCausalLM

    from hf_plasticity import measure_plasticity

    args = SimpleNamespace(
        vocab=shape["vocab"],
        hidden=shape["hidden"],
        intermediate=shape["mlp"],
        layers=shape["layers"],
        heads=shape["heads"],
        seq_len=shape["seq"],
    )
    size = write_model(folder, args)
    n = shape["pairs"]
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, shape["vocab"], (n, shape["seq"]), generator=g)
    y = torch.randint(0, shape["vocab"], (n, shape["seq"]), generator=g)
    key = device.index or 0 if device.type == "cuda" else "cpu"
    memory = {key: 1} if device.type == "cpu" else {key: 1, "cpu": 1}  # nothing fits: every block on disk
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16, device_map="auto", max_memory=memory, offload_folder=str(folder / "off")
    )
    for protocol in ("shared", "in_situ"):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        measure_plasticity(model, y, x, protocol=protocol, num_pairs=n, batch_size=batch, progress=False)
        sync(device)
        seconds = time.perf_counter() - t0
        print(
            f"7B-shape Llama streamed, {n} pairs x {shape['seq']} tokens, {protocol:<8}: {seconds:7.1f} s, "
            f"{peak(device)}, weights read {size / 2**20:.1f} MiB (float32 on disk) at "
            f"{size / 2**20 / seconds:.1f} MiB/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--folder", type=Path, help="where to write the Llama checkpoint (default: a temporary one)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else args.device)
    shapes = DRY if args.dry_run else FULL
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{'dry run (tiny shapes)' if args.dry_run else 'full shapes'} on {where}")
    vit(shapes["vit"], device, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        llama(shapes["llama"], device, min(args.batch_size, 16), args.folder or Path(tmp) / "llama")


if __name__ == "__main__":
    main()
