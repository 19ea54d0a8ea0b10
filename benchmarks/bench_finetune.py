"""Cost of a training step with plasticity-selected modules, relative to full finetuning, in one run.

ViT-Base-sized model (random weights), CPU, AdamW, one fixed batch. For full finetuning,
``PlasticityConfig(top_k=1)`` (in place), PEFT LoRA with ranks from ``plasticity_lora_config`` (measured on
this model, at LoRA r=16 q/v's share of the parameters, 0.7%), PEFT ``LoraConfig`` (r=16 on q/v), and
``PlasticityConfig(top_k=1, keep_original=True)`` (a trained copy beside the frozen original), prints time
per step, peak memory and trainable parameters as ratios to full finetuning. Targets for top_k=1 in
place: <= 0.8x the step time and <= 0.7x the peak memory of full finetuning.

Each configuration runs in a fresh process; its peak memory is the process's peak resident set size
minus its size after imports (model weights, copies, gradients, optimizer state and activations). Under
glibc's default, freed tensors stay in the process's heap at the allocator's discretion: the same
configuration's peak varies by about 5% from run to run, and configurations differ by how much freed
memory glibc happens to keep (the "RSS MB" column). So each configuration runs twice: once as is, timed
over ``--steps`` steps; once with ``MALLOC_MMAP_THRESHOLD_=65536``, where glibc maps every allocation
of 64 KiB or more (every tensor that matters) on its own and returns it when freed, so the peak tracks
the tensors alive at once, the CPU analogue of ``torch.cuda.max_memory_allocated`` ("peak MB", the
figure the target is about). Its step times are not used: mapping every tensor afresh slows the steps.

    python benchmarks/bench_finetune.py                 # ViT-Base/16 at 224, batch 8, 2 threads
    python benchmarks/bench_finetune.py --layers 2 --steps 2   # a quick look
    python benchmarks/bench_finetune.py --configs "plasticity_lora_config"   # one row (and full finetuning)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import peak_resident_bytes
from _vit import add_model_args, build_vit

CONFIGS = (
    "full finetuning",
    "plasticity top_k=1 (full)",
    "plasticity_lora_config",
    "LoRA r=16 q,v",
    "top_k=1 (full, keep_original)",
)

LORA_QV_SHARE = 0.007
"""Share of ViT-Base's parameters LoRA r=16 on q, v trains, head included (597,514 / 85.8M): the LoRA budget."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (median)")
    parser.add_argument(
        "--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="rows to run (full finetuning always)"
    )
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_run(args)))
        return

    configs = [c for c in CONFIGS if c == CONFIGS[0] or c in args.configs]
    timed, live = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        if CONFIGS[2] in configs:
            args.report = _measure(args, Path(tmp) / "report.json")
        for name in configs:
            timed[name] = _worker(args, name, args.steps, live_memory=False)
            live[name] = _worker(args, name, 1, live_memory=True)  # the peak comes in the first step after warm-up
    print(
        f"ViT hidden={args.hidden} layers={args.layers} image={args.image_size} batch={args.batch_size} "
        f"threads={args.threads}, AdamW; s/step: median of {args.steps} steps; peak MB: live tensors "
        "(MALLOC_MMAP_THRESHOLD_=65536); RSS MB: glibc's default heap"
    )
    columns = (
        ("s/step", timed, "step_s", ".2f"),
        ("peak MB", live, "peak_mb", ".0f"),
        ("RSS MB", timed, "peak_mb", ".0f"),
    )
    print(
        f"{'configuration':<31}"
        + "".join(f"{c:>9}{'ratio':>6}" for c, *_ in columns)
        + f"{'trainable':>12}{'ratio':>7}"
    )
    ratios = {}
    for name in configs:
        cells, base = [], CONFIGS[0]
        for column, results, key, fmt in columns:
            ratios[name, column] = results[name][key] / results[base][key]
            cells.append(f"{results[name][key]:9{fmt}}{ratios[name, column]:6.2f}")
        n = timed[name]["trainable"]
        print(f"{name:<31}" + "".join(cells) + f"{n:12,}{n / timed[base]['trainable']:7.3f}")
    if CONFIGS[1] not in configs:
        return
    t, m = ratios[CONFIGS[1], "s/step"], ratios[CONFIGS[1], "peak MB"]
    print(
        f"\ntop_k=1 (full): step time {t:.2f}x (target <= 0.8) {'ok' if t <= 0.8 else 'ABOVE TARGET'}; "
        f"peak memory {m:.2f}x (target <= 0.7) {'ok' if m <= 0.7 else 'ABOVE TARGET'}"
    )


def _worker(args: argparse.Namespace, name: str, steps: int, live_memory: bool) -> dict[str, float]:
    """One configuration in a fresh process, so that its peak memory is its own."""
    cmd = [sys.executable, __file__, "--worker", name, "--steps", str(steps)]
    for flag in ("threads", "batch_size", "layers", "hidden", "image_size", "report"):
        if getattr(args, flag, None) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536") if live_memory else None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(args: argparse.Namespace, path: Path) -> str:
    """The plasticity report ``plasticity_lora_config`` allocates from: this model, random images (untimed)."""
    import torch

    from hf_plasticity import measure_plasticity

    model = build_vit(args)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, args.image_size, args.image_size, generator=g)
    measure_plasticity(model, images[:8], images[8:], num_pairs=8, batch_size=4, progress=True).save(path)
    return str(path)


def _rss_mb() -> float:
    return peak_resident_bytes() / 2**20


def _run(args: argparse.Namespace) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_plasticity import PlasticityConfig, PlasticityReport, plasticity_lora_config

    start_mb = _rss_mb()  # after the imports: what follows is the model and its training

    model = build_vit(args)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))
    name = args.worker
    if name == CONFIGS[1]:
        model = get_peft_model(model, PlasticityConfig(top_k=1))
    elif name == CONFIGS[2]:
        report = PlasticityReport.load(args.report)
        model = get_peft_model(model, plasticity_lora_config(report, budget=LORA_QV_SHARE, model=model))
    elif name == CONFIGS[4]:
        model = get_peft_model(model, PlasticityConfig(top_k=1, keep_original=True))
    elif name == CONFIGS[3]:
        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - t0)
    return {
        "step_s": statistics.median(times),
        "peak_mb": _rss_mb() - start_mb,
        "trainable": sum(p.numel() for p in params),
    }


if __name__ == "__main__":
    main()
