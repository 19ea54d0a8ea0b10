"""Finetune the most plastic components of a ViT with a plain Accelerate loop (no Trainer).

    python examples/finetune_accelerate.py                      # bundled ViT on scikit-learn digits, CPU
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/finetune_accelerate.py
    accelerate launch examples/finetune_accelerate.py --model google/vit-base-patch16-224-in21k --data cifar10

Measures plasticity (sharded over the processes: every process gets the same report), builds a
PlasticityConfig from it (or, with --lora-budget, PEFT's LoRA with ranks from plasticity_lora_config),
trains with accelerator.prepare / accelerator.backward, evaluates accuracy with the bundled offline
`evaluate` metric, and saves the adapter, the report and the metrics to --output-dir.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import get_peft_model
from tqdm.auto import tqdm

from hf_plasticity import PlasticityConfig, measure_plasticity, plasticity_lora_config
from hf_plasticity.data.loaders import load_named_dataset
from hf_plasticity.integrations.metrics import load_metric
from hf_plasticity.integrations.training import new_head, parse_rule, pixel_dataset
from hf_plasticity.models import load_image_processor, load_model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="Hub id, local folder, or 'bundled'")
    parser.add_argument("--data", default="digits", help="downstream data: bundled name, folder or Hub id")
    parser.add_argument("--rule", default="top_k=1", help="top_k=K | budget=F | threshold=S | components=a,b")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--keep-original", action="store_true", help="train a copy, keep the original")
    how.add_argument(
        "--lora-budget",
        type=float,
        help="train PEFT LoRA instead, ranks allocated from the measured plasticity within this fraction of the "
        "parameters (hf_plasticity.plasticity_lora_config; --rule is then not used), e.g. 0.04",
    )
    parser.add_argument("--num-pairs", type=int, default=256, help="pairs measured to choose the components")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("finetune-accelerate"))
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> tuple[Any, dict[str, float], Accelerator]:
    """The whole run; returns the trained PEFT model (unwrapped), the metrics and the accelerator."""
    accelerator = Accelerator()
    set_seed(args.seed)
    data = load_named_dataset(args.data)
    names = data.features["label"].names
    splits = data.train_test_split(test_size=args.eval_fraction, seed=args.seed)
    model = load_model(args.model, num_labels=len(names), ignore_mismatched_sizes=True)
    new_head(model)  # a new task, a new head
    processor = load_image_processor(args.model)

    # every process measures its share of the same seeded pairs and receives the whole report
    report = measure_plasticity(
        model,
        splits["train"],
        num_pairs=min(args.num_pairs, len(splits["train"]) // 2),
        image_processor=processor,
        seed=args.seed,
        accelerator=accelerator,
        progress=accelerator.is_main_process,
    )
    if args.lora_budget is None:
        config: Any = PlasticityConfig.from_report(report, **parse_rule(args.rule), keep_original=args.keep_original)
    else:
        config = plasticity_lora_config(report, budget=args.lora_budget, model=model)
    model = get_peft_model(model, config)
    if accelerator.is_main_process:
        model.print_trainable_parameters()

    channels = model.config.num_channels
    train_set = pixel_dataset(splits["train"], processor, channels)
    eval_set = pixel_dataset(splits["test"], processor, channels)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
    )
    eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=4 * args.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.SGD)(trainable, lr=args.lr)
    model, optimizer, loader, eval_loader = accelerator.prepare(model, optimizer, loader, eval_loader)

    model.train()
    step, bar = 0, tqdm(total=args.steps, desc="training", disable=not accelerator.is_main_process)
    while step < args.steps:
        for batch in loader:
            loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= args.steps:
                break
    bar.close()

    model.eval()
    metric = load_metric("accuracy")  # evaluate's API, loaded by local path: works offline
    with torch.no_grad():
        for batch in eval_loader:
            logits = model(pixel_values=batch["pixel_values"]).logits
            predictions, labels = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            metric.add_batch(predictions=predictions, references=labels)
    metrics = metric.compute()

    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        unwrapped.save_pretrained(args.output_dir / "adapter")
        report.save(args.output_dir / "report.json")
        (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        modules = config.selected_modules if args.lora_budget is None else config.target_modules
        print(f"{report.ranking()} -> trained {len(modules)} modules; eval {metrics}")
    accelerator.wait_for_everyone()
    return unwrapped, metrics, accelerator


def main(argv: Sequence[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
