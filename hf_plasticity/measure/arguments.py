"""The auxiliary arguments a model's forward gives each block (masks, positions, rotary cos/sin), built from the
block-0 input the way the forward builds them, so measuring needs no forward pass beyond the embedding.

The shared protocol calls every layer's attention on the block-0 input, and a streamed in-situ measurement
calls every block on its running hidden states: both need what the forward hands each layer. A family whose
``ComponentMap.block_arguments`` names a builder here gets them built; any other family's are captured by hooks
during one forward (``estimator._Block0``).

``"rotary_decoder"`` (Llama, Mistral, Qwen2/3, Gemma): the forward makes the causal mask of each layer type with
transformers' masking utilities (``create_masks_for_generate`` mirrors what the modeling files do: one mask, or
one per ``config.layer_types`` entry such as sliding-window layers), the positions ``0..n-1``, and the rotary
cos/sin with the base model's ``rotary_emb``; each block hands its attention the very keywords it receives.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError

BlockArguments = list[dict[str, Any]]
"""Per layer, the keywords its block (and, for the families built here, its attention module) is called with."""


def rotary_decoder_arguments(base: nn.Module, hidden: torch.Tensor, attention_mask: Any, num_layers: int) -> Any:
    """Each layer's ``attention_mask``, ``position_ids`` and ``position_embeddings`` for block-0 input ``hidden``."""
    config = base.config
    rotary = getattr(base, "rotary_emb", None)
    if not isinstance(rotary, nn.Module):
        raise UnsupportedModelError(
            f"{type(base).__name__} has no rotary_emb module, which the 'rotary_decoder' block arguments of its "
            "component map read; register its map with block_arguments='captured'"
        )
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
    masks = _masks(config, hidden, attention_mask, positions)
    cos_sin = rotary(hidden, position_ids=positions)
    layer_types: list[str] = list(getattr(config, "layer_types", None) or [])
    out = []
    for layer in range(num_layers):
        mask = masks[layer_types[layer]] if isinstance(masks, dict) else masks
        out.append({"attention_mask": mask, "position_ids": positions, "position_embeddings": cos_sin})
    return out


def _masks(config: Any, hidden: torch.Tensor, attention_mask: Any, positions: torch.Tensor) -> Any:
    """``create_masks_for_generate`` without a cache, its keywords named as this transformers version names them
    (the cache argument was ``past_key_values`` before it became ``cache``)."""
    from transformers.masking_utils import create_masks_for_generate

    params = inspect.signature(create_masks_for_generate).parameters
    kwargs: dict[str, Any] = {"config": config, "attention_mask": attention_mask, "position_ids": positions}
    kwargs["inputs_embeds" if "inputs_embeds" in params else "input_embeds"] = hidden
    cache = next((name for name in ("cache", "past_key_values") if name in params), None)
    if cache is not None:
        kwargs[cache] = None
    if "cache_position" in params:
        kwargs["cache_position"] = positions[0]
    return create_masks_for_generate(**kwargs)


BUILDERS: dict[str, Callable[[nn.Module, torch.Tensor, Any, int], BlockArguments]] = {
    "rotary_decoder": rotary_decoder_arguments,
}
"""``ComponentMap.block_arguments`` names -> builders; ``"captured"`` (absent here) means hooks in a forward."""
