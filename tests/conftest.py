"""Shared fixtures: tiny random models, one per registered architecture, and small pixel tensors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    Dinov2Config,
    Dinov2ForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

IMAGE_SIZE = 16
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
    "num_labels": 3,
}


def _tiny(config_cls: type, model_cls: type, **extra: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return model_cls(config_cls(**TINY, **extra)).eval()

    return make


# One row per registered architecture (plus the bare ViT encoder): the registry test matrix.
TINY_MODELS: dict[str, Callable[[], nn.Module]] = {
    "vit": _tiny(ViTConfig, ViTForImageClassification),
    "vit-base-model": _tiny(ViTConfig, ViTModel),
    "deit": _tiny(DeiTConfig, DeiTForImageClassification),
    "dinov2": _tiny(Dinov2Config, Dinov2ForImageClassification),
}


@pytest.fixture(params=sorted(TINY_MODELS))
def any_tiny_model(request: pytest.FixtureRequest) -> nn.Module:
    return TINY_MODELS[request.param]()


@pytest.fixture
def tiny_vit() -> nn.Module:
    return TINY_MODELS["vit"]()


def pixels(n: int, seed: int = 0, channels: int = 3, size: int = IMAGE_SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g)
