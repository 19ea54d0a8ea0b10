"""Cost of a training step with plasticity-selected modules, relative to full finetuning, in one run.

ViT-Base-sized model (random weights), CPU, AdamW, one fixed batch. For full finetuning,
``PlasticityConfig(top_k=1)`` (mode full), the same in mode lora, and PEFT ``LoraConfig`` (r=16 on q/v),
prints time per step, peak memory and trainable parameters as ratios to full finetuning. Targets for
top_k=1 in mode full: <= 0.8x the step time and <= 0.7x the peak memory of full finetuning.

Each configuration runs in a fresh process; its peak memory is the process's peak resident set size
minus its size after imports (model weights, copies, gradients, optimizer state and activations).

    python benchmarks/bench_finetune.py                 # ViT-Base/16 at 224, batch 8, 2 threads
    python benchmarks/bench_finetune.py --layers 2 --steps 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _vit import add_model_args, build_vit

CONFIGS = ("full finetuning", "plasticity top_k=1 (full)", "plasticity top_k=1 (lora r=8)", "LoRA r=16 q,v")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (median)")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_run(args)))
        return

    results = {}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--worker", name]
        for flag in ("threads", "batch_size", "steps", "layers", "hidden", "image_size"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results[CONFIGS[0]]
    print(
        f"ViT hidden={args.hidden} layers={args.layers} image={args.image_size} batch={args.batch_size} "
        f"threads={args.threads}, AdamW, median of {args.steps} steps"
    )
    print(f"{'configuration':<32}{'s/step':>8}{'ratio':>7}{'peak MB':>9}{'ratio':>7}{'trainable':>13}{'ratio':>8}")
    for name, r in results.items():
        print(
            f"{name:<32}{r['step_s']:8.2f}{r['step_s'] / base['step_s']:7.2f}{r['peak_mb']:9.0f}"
            f"{r['peak_mb'] / base['peak_mb']:7.2f}{r['trainable']:13,}{r['trainable'] / base['trainable']:8.3f}"
        )
    r = results[CONFIGS[1]]
    t, m = r["step_s"] / base["step_s"], r["peak_mb"] / base["peak_mb"]
    print(
        f"\ntop_k=1 (full): step time {t:.2f}x (target <= 0.8) {'ok' if t <= 0.8 else 'ABOVE TARGET'}; "
        f"peak memory {m:.2f}x (target <= 0.7) {'ok' if m <= 0.7 else 'ABOVE TARGET'}"
    )


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(args: argparse.Namespace) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_plasticity import PlasticityConfig

    start_mb = _rss_mb()  # after the imports: what follows is the model and its training

    model = build_vit(args)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 10, (args.batch_size,))
    name = args.worker
    if name == CONFIGS[1]:
        model = get_peft_model(model, PlasticityConfig(top_k=1))
    elif name == CONFIGS[2]:
        model = get_peft_model(model, PlasticityConfig(top_k=1, mode="lora", r=8, lora_alpha=16))
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
