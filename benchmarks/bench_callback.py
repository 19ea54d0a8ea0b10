"""Overhead of PlasticityCallback on training the bundled ViT with Trainer, in one run.

Trains PlasticityConfig(top_k=1) (attention, the paper's ranking) on scikit-learn digits, batch 32, for --steps
steps: once without the callback, once with it (gradient norms and weight change at every logging step,
plasticity re-measured on 64 held-out pairs every --every steps, plus at steps 0 and the last). Prints
both training times (Trainer's train_runtime), their ratio, and the time spent inside the callback as a
fraction of the plain run, which is what the callback costs whatever else the machine is doing. Target:
<= 1.05 with re-measurement every 50 steps.

    python benchmarks/bench_callback.py                 # 2 threads, 150 steps
    python benchmarks/bench_callback.py --steps 60      # a quick look
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import torch
from transformers import TrainingArguments

from hf_plasticity import PlasticityConfig
from hf_plasticity.data.loaders import load_digits_dataset
from hf_plasticity.integrations.callbacks import PlasticityCallback
from hf_plasticity.integrations.training import finetune, new_head, pixel_dataset
from hf_plasticity.models import load_image_processor, load_model

EVENTS = ("on_train_begin", "on_pre_optimizer_step", "on_step_end", "on_log", "on_train_end")


def timed(callback: PlasticityCallback) -> list[float]:
    """Wrap the callback's events so the time spent in them adds up in the returned list."""
    spent = [0.0]
    for name in EVENTS:
        method = getattr(callback, name)

        @functools.wraps(method)
        def wrapper(*args, _method=method, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(callback, name, wrapper)
    return spent


def run(steps: int, callback: PlasticityCallback | None, splits) -> float:
    torch.manual_seed(0)
    model = load_model("bundled", num_labels=10, ignore_mismatched_sizes=True)
    new_head(model)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=32, learning_rate=1e-3, logging_steps=10,
            save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, seed=0, use_cpu=True,
        )  # fmt: skip
        result = finetune(
            model, splits["train"], None, PlasticityConfig(top_k=1), args,
            image_processor=load_image_processor("bundled"), callbacks=[callback] if callback else None, save=False,
        )  # fmt: skip
    return float(result.train_metrics["train_runtime"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_digits_dataset().train_test_split(test_size=0.2, seed=0)
    held = pixel_dataset(splits["test"], load_image_processor("bundled"))[: 2 * args.pairs]["pixel_values"].float()
    plain = run(args.steps, None, splits)
    callback = PlasticityCallback((held[: args.pairs], held[args.pairs :]), every=args.every)
    spent = timed(callback)
    watched = run(args.steps, callback, splits)
    print(f"steps {args.steps}, re-measure every {args.every} on {args.pairs} pairs, {args.threads} threads")
    print(f"{'plain training':<28}{plain:8.1f} s")
    print(f"{'with PlasticityCallback':<28}{watched:8.1f} s")
    print(f"{'ratio (end to end)':<28}{watched / plain:8.3f}")
    print(f"{'time inside the callback':<28}{spent[0]:8.1f} s = {spent[0] / plain:.3f} of plain training")
    print(f"re-measurements at steps {[r['step'] for r in callback.series.plasticity]}")


if __name__ == "__main__":
    main()
