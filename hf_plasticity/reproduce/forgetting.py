"""Forgetting: how well a finetuned backbone still does the source task once the source's own head is put back.

The source task is Fashion-MNIST (both source models were pretrained on it); it is scored on the first 1,000
images of the bundled test sample (:data:`SOURCE_IMAGES`), the same images on every machine. The finetuned
model's features are read at the input of its head (a forward hook, so a PEFT-wrapped model works unchanged)
and sent through the source model's original classifier. KappaTune's and the paper's "less forgetting"
claims are read on this number.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

SOURCE_IMAGES = 1000
HEAD = "classifier"
"""The head of a ``ViTForImageClassification`` (both source models)."""


@lru_cache(maxsize=1)
def _source_images() -> tuple[torch.Tensor, torch.Tensor]:
    from ..data.loaders import read_fashion_mnist_sample_arrays

    images, labels = read_fashion_mnist_sample_arrays()
    images, labels = images[:SOURCE_IMAGES], labels[:SOURCE_IMAGES]
    # the sources' processor: grey repeated to RGB, rescaled to [0, 1], normalised with mean = std = 0.5
    pixels = (torch.from_numpy(images).float() / 255.0 - 0.5) / 0.5
    return pixels[:, None].repeat(1, 3, 1, 1), torch.from_numpy(labels)


@lru_cache(maxsize=4)
def _source_head(source: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from ..models import BUNDLED, load_model

    head = load_model(source or BUNDLED).get_submodule(HEAD)
    return head.weight.detach().clone(), head.bias.detach().clone()


def _outer_head(model: nn.Module) -> nn.Module:
    """The module the classification head is called through (PEFT's saved-module wrapper when there is one)."""
    names = [n for n, _ in model.named_modules() if n == HEAD or n.endswith("." + HEAD)]
    return model.get_submodule(min(names, key=len))


@torch.inference_mode()
def source_task_accuracy(model: nn.Module, source: str | None = None, batch_size: int = 500) -> float:
    """Fashion-MNIST accuracy of ``model``'s backbone with the source model's own head."""
    pixels, labels = _source_images()
    weight, bias = _source_head(source)
    features: list[torch.Tensor] = []
    hook = _outer_head(model).register_forward_hook(lambda _m, args, _out: features.append(args[0]))
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(labels), batch_size):
            features.clear()
            model(pixel_values=pixels[start : start + batch_size])
            logits = nn.functional.linear(features[-1], weight, bias)
            correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    finally:
        hook.remove()
        model.train(was_training)
    return correct / len(labels)


def source_accuracy_before(source: str | None = None) -> float:
    """The source model's own Fashion-MNIST accuracy on the same images: forgetting is measured from it."""
    from ..models import BUNDLED, load_model

    model: Any = load_model(source or BUNDLED)
    return source_task_accuracy(model, source)
