"""The model both benchmarks time: a ViT of ViT-Base/16's shape by default, with random weights."""

from __future__ import annotations

import argparse


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--image-size", type=int, default=224)


def build_vit(args: argparse.Namespace):
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
        image_size=args.image_size,
        patch_size=16,
        num_labels=10,
    )
    return ViTForImageClassification(config)
