"""Block arguments built as a rotary decoder's forward builds them equal those its forward really passes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers as T

from hf_plasticity.components import get_component_map
from hf_plasticity.measure.arguments import BUILDERS

SMALL = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}
DECODERS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "llama": (T.LlamaForCausalLM, T.LlamaConfig, {}),
    "mistral-sliding": (T.MistralForCausalLM, T.MistralConfig, {"sliding_window": 4}),
    "qwen2-mixed-layers": (
        T.Qwen2ForCausalLM,
        T.Qwen2Config,
        {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
    ),
    "qwen3": (T.Qwen3ForCausalLM, T.Qwen3Config, {"head_dim": 4}),
    "gemma": (T.GemmaForCausalLM, T.GemmaConfig, {"head_dim": 4}),
}


def _model(name: str, attention: str) -> Any:
    cls, config_cls, extra = DECODERS[name]
    torch.manual_seed(0)
    return cls(config_cls(**SMALL, **extra, attn_implementation=attention)).eval()


def _captured(model: Any, inputs: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """What each block receives in the model's own forward (cache arguments aside)."""
    seen: list[dict[str, Any]] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append({"hidden": args[0] if args else kwargs["hidden_states"], **kwargs})

    handles = [block.register_forward_pre_hook(hook, with_kwargs=True) for block in model.model.layers]
    try:
        with torch.inference_mode():
            model(**inputs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def _same(a: Any, b: Any) -> None:
    if a is None or b is None:
        assert a is None and b is None
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "padding-mask"])
@pytest.mark.parametrize("name", list(DECODERS))
def test_built_arguments_equal_the_forward_s(name: str, attention: str, padded: bool) -> None:
    model = _model(name, attention)
    assert get_component_map(model).block_arguments == "rotary_decoder"
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    inputs: dict[str, torch.Tensor] = {"input_ids": ids}
    if padded:
        mask = torch.ones_like(ids)
        mask[1, :3] = 0  # a left-padded row
        inputs["attention_mask"] = mask
    captured = _captured(model, inputs)
    with torch.inference_mode():
        built = BUILDERS["rotary_decoder"](model.model, captured[0]["hidden"], inputs.get("attention_mask"), 3)
    if name == "qwen2-mixed-layers":
        assert model.config.layer_types[0] != model.config.layer_types[2]
    for layer, (want, got) in enumerate(zip(captured, built, strict=True)):
        for key in ("attention_mask", "position_ids", "position_embeddings"):
            _same(got[key], want[key])
        with torch.inference_mode():  # and the attention computes the same from them
            attention_module = model.model.layers[layer].self_attn
            h = want["hidden"]
            expect = attention_module(h, **{k: want[k] for k in ("attention_mask", "position_embeddings")})[0]
            torch.testing.assert_close(attention_module(h, **got)[0], expect, rtol=0, atol=0)
