"""Pretrain the small ViT that hf_plasticity bundles, on Fashion-MNIST, from scratch on a CPU.

The plasticity estimator needs a real pretrained source model to measure; shipping one trained by this
script (rather than random weights) makes the demos and tests meaningful while staying a few MB.

    python examples/pretrain_vit.py --threads 2   # the bundled model: 3 epochs, batch 32, ~19 min on 2 cores
    python examples/pretrain_vit.py --layers 12 --epochs 10 --threads 2 \
        --output-dir benchmarks/models/vit12-fashion-mnist   # the deeper source of the selection benchmarks

Needs Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``) or
``--data-root`` pointing at the four IDX .gz files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from hf_plasticity.data.loaders import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    load_fashion_mnist,
    read_fashion_mnist_arrays,
)

DEFAULT_OUTPUT = Path("hf_plasticity/assets/vit-fashion-mnist")
MEAN = 0.5
STD = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the bundled model's recipe (its config records the exact run)."""
    parser = argparse.ArgumentParser(
        description="Pretrain a small ViTForImageClassification on Fashion-MNIST and save it as a HF model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="where the model is saved")
    parser.add_argument("--layers", type=int, default=6, help="transformer blocks (num_hidden_layers)")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the training set (fractions allowed)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-ratio", type=float, default=0.05, help="share of steps spent warming up")
    parser.add_argument(
        "--pos-init",
        choices=["sincos", "random"],
        default="sincos",
        help="start position embeddings from a 2D sin-cos grid (trainable) or from HF's random init",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data-root", default=FASHION_MNIST_ROOT, help="folder holding the IDX .gz files")
    args = parser.parse_args(argv)
    if args.epochs <= 0 or args.batch_size <= 0 or args.lr <= 0 or args.threads <= 0 or args.layers <= 0:
        parser.error("--layers, --epochs, --batch-size, --lr and --threads must be positive")
    if not 0 <= args.warmup_ratio < 1:
        parser.error("--warmup-ratio must lie in [0, 1)")
    return args


def make_processor() -> ViTImageProcessor:
    """The processor saved with the model, so users preprocess exactly as training did."""
    return ViTImageProcessor(
        size={"height": 28, "width": 28}, image_mean=[MEAN] * 3, image_std=[STD] * 3, do_resize=True
    )


def make_model(num_layers: int = 6) -> ViTForImageClassification:
    """A ViT of ~0.2M parameters per block (1.2M at the bundled 6): small enough to train on a CPU, deep enough to
    have components."""
    id2label = dict(enumerate(FASHION_MNIST_CLASSES))
    config = ViTConfig(
        image_size=28,
        patch_size=4,
        num_channels=3,
        hidden_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(FASHION_MNIST_CLASSES),
        id2label=id2label,
        label2id={name: idx for idx, name in id2label.items()},
    )
    return ViTForImageClassification(config)


def sincos_position_embeddings(grid: int, dim: int) -> torch.Tensor:
    """A 2D sin-cos table (CLS row zero): gives patches their layout up front, which a from-scratch ViT
    on a short CPU budget otherwise spends many steps learning."""
    if dim % 4:
        raise ValueError(f"hidden size {dim} must be divisible by 4 for 2D sin-cos embeddings")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.cat(parts, dim=1)], dim=0)
    return table.float()[None]


def to_pixel_values(images: np.ndarray) -> torch.Tensor:
    """Fast path of the processor for 28x28 uint8 arrays: repeat to RGB, rescale 1/255, normalize."""
    scaled = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.repeat(scaled[:, None], 3, axis=1))


def check_fast_path(processor: ViTImageProcessor, data_root: str) -> float:
    """Prove once that training's array path equals the saved processor on real images, else stop."""
    sample = load_fashion_mnist(split="test", root=data_root, limit=16)
    rgb = [image.convert("RGB") for image in sample["image"]]
    reference = processor(rgb, return_tensors="pt")["pixel_values"]
    arrays = np.stack([np.asarray(image, dtype=np.uint8) for image in sample["image"]])
    fast = to_pixel_values(arrays)
    gap = float((reference - fast).abs().max())
    if reference.shape != fast.shape or gap > 1e-5:
        raise RuntimeError(f"fast preprocessing differs from ViTImageProcessor (max gap {gap})")
    return gap


@torch.inference_mode()
def evaluate(model: ViTForImageClassification, images: np.ndarray, labels: np.ndarray, batch: int) -> float:
    """Top-1 accuracy, batched so the test split fits comfortably in memory."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch):
        logits = model(pixel_values=to_pixel_values(images[start : start + batch])).logits
        correct += int((logits.argmax(-1).numpy() == labels[start : start + batch]).sum())
    return correct / len(images)


def train(model: ViTForImageClassification, images: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> int:
    """AdamW with linear warmup then cosine decay; returns the number of optimizer steps taken."""
    steps_per_epoch = math.ceil(len(images) / args.batch_size)
    total_steps = max(1, math.ceil(args.epochs * steps_per_epoch))
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "position_embeddings" in n]
    decay = [p for n, p in model.named_parameters() if not (p.ndim < 2 or "position_embeddings" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    scheduler = transformers.get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    rng = np.random.default_rng(args.seed)
    targets = torch.from_numpy(labels)
    model.train()
    order = np.empty(0, dtype=np.int64)
    running = float("nan")
    progress = tqdm(range(total_steps), desc="pretraining", unit="step", dynamic_ncols=True)
    for step in progress:
        offset = (step % steps_per_epoch) * args.batch_size
        if offset == 0:
            order = rng.permutation(len(images))
        index = order[offset : offset + args.batch_size]
        loss = model(pixel_values=to_pixel_values(images[index]), labels=targets[index]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
        if step % 10 == 0 or step == total_steps - 1:
            progress.set_postfix(loss=f"{running:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return total_steps


def model_card(accuracy: float, meta: dict[str, Any]) -> ModelCard:
    """A card that states where the weights came from and how good they are, for anyone who finds them."""
    data = ModelCardData(
        license="mit",
        datasets=["fashion_mnist"],
        metrics=["accuracy"],
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["vit", "hf_plasticity"],
        model_name="vit-fashion-mnist",
        eval_results=[
            EvalResult(
                task_type="image-classification",
                dataset_type="fashion_mnist",
                dataset_name="Fashion-MNIST",
                dataset_split="test",
                metric_type="accuracy",
                metric_value=round(accuracy, 4),
            )
        ],
    )
    body = f"""
# vit-fashion-mnist

A small Vision Transformer ({meta["layers"]} layers, hidden size 128, 4 heads, patch 4, about
{meta["parameters"] / 1e6:.1f}M parameters) trained from scratch on the Fashion-MNIST training split by
`examples/pretrain_vit.py` of hf_plasticity, as a source model for measuring component plasticity.

**Test accuracy: {accuracy:.2%}** on the {meta["test_examples"]} Fashion-MNIST test images.

Training: {meta["train_examples"]} images, {meta["epochs"]} epochs ({meta["steps"]} steps of batch
{meta["batch_size"]}), AdamW (peak lr {meta["lr"]}, weight decay {meta["weight_decay"]}), cosine schedule
with warmup, seed {meta["seed"]}, {meta["train_seconds"]:.0f} s on {meta["threads"]} CPU thread(s).
Position embeddings start from a {meta["pos_init"]} init; no data augmentation, no dropout.

Inputs: grayscale images converted to RGB, 28x28, normalized with mean = std = 0.5 (see
`preprocessor_config.json`). Labels: {", ".join(FASHION_MNIST_CLASSES)}.

Fashion-MNIST is © Zalando SE, released under the MIT licence.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _make_shareable(folder: Path) -> None:
    """mkdtemp (and some writers) create owner-only modes; give the model the umask's normal modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for item in folder.iterdir():
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def save_atomically(
    output_dir: Path,
    model: ViTForImageClassification,
    processor: ViTImageProcessor,
    card: ModelCard,
) -> None:
    """Write into a sibling temp dir and rename it into place, so a crash never leaves a half model."""
    output_dir = output_dir.resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    backup: Path | None = None
    try:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        card.save(staging / "README.md")
        _make_shareable(staging)
        if output_dir.exists():
            backup = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
            os.replace(output_dir, backup)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None and not output_dir.exists():
            os.replace(backup, output_dir)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate, save; prints the test accuracy that the config and the card also record."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    processor = make_processor()
    gap = check_fast_path(processor, args.data_root)
    print(f"fast preprocessing matches ViTImageProcessor (max gap {gap:.1e})")

    train_x, train_y = read_fashion_mnist_arrays("train", root=args.data_root, limit=args.limit)
    test_x, test_y = read_fashion_mnist_arrays("test", root=args.data_root, limit=args.test_limit)
    model = make_model(args.layers)
    if args.pos_init == "sincos":
        grid = model.config.image_size // model.config.patch_size
        with torch.no_grad():
            model.vit.embeddings.position_embeddings.copy_(sincos_position_embeddings(grid, model.config.hidden_size))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters; train {len(train_x)}, test {len(test_x)} images")

    started = time.perf_counter()
    steps = train(model, train_x, train_y, args)
    train_seconds = time.perf_counter() - started
    accuracy = evaluate(model, test_x, test_y, batch=500)
    print(f"test accuracy {accuracy:.4f} after {steps} steps in {train_seconds:.0f} s")

    meta: dict[str, Any] = {
        "dataset": "fashion-mnist",
        "layers": args.layers,
        "parameters": n_params,
        "test_accuracy": round(accuracy, 4),
        "test_examples": len(test_x),
        "epochs": args.epochs,
        "train_examples": len(train_x),
        "steps": steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "pos_init": args.pos_init,
        "threads": args.threads,
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    model.config.hf_plasticity_pretraining = meta
    save_atomically(args.output_dir, model, processor, model_card(accuracy, meta))
    print(f"saved to {args.output_dir}")
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
