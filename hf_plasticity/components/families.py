"""One entry per supported family (module paths from ``named_modules()`` of transformers 5.x), and the
families refused with a reason. A new architecture is one :func:`register_component_map` call here plus one row
in ``tests/components/test_families.py``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from .registry import refuse_model_type, register_component_map
from .specs import AttentionSpec, ComponentMap, ComponentSpec, LinearSpec, NormSpec

_VIT_ATTENTION = AttentionSpec(
    "attention", projections=("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")
)
_VIT_LIKE: dict[str, ComponentSpec] = {
    "attn_norm": NormSpec("layernorm_before"),
    "mha": _VIT_ATTENTION,
    "ffn_norm": NormSpec("layernorm_after"),
    "ffn_fc1": LinearSpec("mlp.fc1"),
    "ffn_fc2": LinearSpec("mlp.fc2"),
}
_RELATIVE_BIAS = "a relative position bias is added to the attention scores, which the paper's bound does not cover"


def _relative_bias_variants(attention: AttentionSpec) -> dict[str, dict[str, ComponentSpec]]:
    """BEiT-style models: a learned relative position bias enters attention when either flag is set."""
    biased = AttentionSpec(
        attention.path,
        output=attention.output,
        projections=attention.projections,
        auxiliary_inputs=True,
        bound=_RELATIVE_BIAS,
    )
    return {flag: {"mha": biased} for flag in ("use_relative_position_bias", "use_shared_relative_position_bias")}


register_component_map(ComponentMap(family="vit", model_types=("vit",), layers="layers", components=_VIT_LIKE))
register_component_map(
    ComponentMap(
        family="deit",
        model_types=("deit",),
        layers="layers",
        components=_VIT_LIKE,
        head_names=("classifier", "cls_classifier", "distillation_classifier"),
    )
)
register_component_map(ComponentMap(family="vit_msn", model_types=("vit_msn",), layers="layers", components=_VIT_LIKE))
register_component_map(
    ComponentMap(family="ijepa", model_types=("ijepa",), layers="layers", components=_VIT_LIKE, fixed_image_size=False)
)
# BEiT: the ViT block layout (layernorm_before -> attention -> layernorm_after -> mlp.fc1 -> mlp.fc2). Its layer
# scale (the block's own lambda_1, lambda_2 parameters, multiplying each sublayer's output before the residual
# add) is not part of any component: a component is the map its modules compute, as in the paper. With
# use_relative_position_bias (or the shared variant) a learned bias enters the attention scores: the estimator
# passes it to attention as its own layer does (auxiliary inputs), and the paper's attention bound is not given.
# It reads pixels (main_input_name); its config's vocab_size is the masked-image-modelling codebook.
register_component_map(
    ComponentMap(
        family="beit",
        model_types=("beit",),
        layers="layers",
        components={
            **_VIT_LIKE,
            "mha": AttentionSpec(_VIT_ATTENTION.path, projections=_VIT_ATTENTION.projections, auxiliary_inputs=True),
        },
        variants=_relative_bias_variants(_VIT_ATTENTION),
        fixed_image_size=False,
    )
)
_D2V_ATTENTION = AttentionSpec(
    "attention.attention",
    output="attention.output.dense",
    projections=(
        "attention.attention.query",
        "attention.attention.key",
        "attention.attention.value",
        "attention.output.dense",
    ),
    auxiliary_inputs=True,
)
register_component_map(
    ComponentMap(
        family="data2vec-vision",
        model_types=("data2vec-vision",),
        layers="encoder.layer",
        components={
            "attn_norm": NormSpec("layernorm_before"),
            "mha": _D2V_ATTENTION,
            "ffn_norm": NormSpec("layernorm_after"),
            "ffn_fc1": LinearSpec("intermediate.dense"),
            "ffn_fc2": LinearSpec("output.dense"),
        },
        variants=_relative_bias_variants(_D2V_ATTENTION),
        fixed_image_size=False,
    )
)
_GATED = {"ffn_fc1": LinearSpec("mlp.gate_proj", stacked=("mlp.up_proj",)), "ffn_fc2": LinearSpec("mlp.down_proj")}
register_component_map(
    ComponentMap(
        family="dinov2",
        model_types=("dinov2",),
        layers="encoder.layer",
        components={
            "attn_norm": NormSpec("norm1"),
            "mha": _VIT_ATTENTION,
            "ffn_norm": NormSpec("norm2"),
            "ffn_fc1": LinearSpec("mlp.fc1"),
            "ffn_fc2": LinearSpec("mlp.fc2"),
        },
        variants={"use_swiglu_ffn": dict(_GATED)},
        fixed_image_size=False,
    )
)
register_component_map(
    ComponentMap(
        family="dinov3_vit",
        model_types=("dinov3_vit",),
        layers="model.layer",
        tower="",  # its base_model_prefix ("model") names its encoder, not a base model: the model is its own base
        components={
            "attn_norm": NormSpec("norm1"),
            "mha": AttentionSpec(
                "attention",
                projections=_VIT_ATTENTION.projections,
                auxiliary_inputs=True,
                bound="rotary position embeddings act on queries and keys, which the paper's bound does not cover",
            ),
            "ffn_norm": NormSpec("norm2"),
            "ffn_fc1": LinearSpec("mlp.up_proj"),
            "ffn_fc2": LinearSpec("mlp.down_proj"),
        },
        variants={"use_gated_mlp": dict(_GATED)},
        fixed_image_size=False,
    )
)
_CLIP_LIKE: dict[str, ComponentSpec] = {
    "attn_norm": NormSpec("layer_norm1"),
    "mha": AttentionSpec(
        "self_attn", projections=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
    ),
    "ffn_norm": NormSpec("layer_norm2"),
    "ffn_fc1": LinearSpec("mlp.fc1"),
    "ffn_fc2": LinearSpec("mlp.fc2"),
}
for _family, _types in (
    ("clip_vision_model", ("clip_vision_model",)),
    ("siglip_vision_model", ("siglip_vision_model",)),
):
    register_component_map(
        ComponentMap(family=_family, model_types=_types, layers="encoder.layers", components=_CLIP_LIKE)
    )
for _family in ("clip", "siglip"):  # the vision tower of the dual-encoder model (and of its image classifier)
    register_component_map(
        ComponentMap(
            family=f"{_family} (vision tower)",
            model_types=(_family,),
            layers="encoder.layers",
            components=_CLIP_LIKE,
            tower="vision_model",
        )
    )
_BERT_LIKE: dict[str, ComponentSpec] = {
    "attn_norm": NormSpec("attention.output.LayerNorm"),
    "mha": AttentionSpec(
        "attention.self",
        output="attention.output.dense",
        projections=(
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ),
        auxiliary_inputs=True,
    ),
    "ffn_norm": NormSpec("output.LayerNorm"),
    "ffn_fc1": LinearSpec("intermediate.dense"),
    "ffn_fc2": LinearSpec("output.dense"),
}
for _family in ("bert", "roberta"):
    register_component_map(
        ComponentMap(
            family=_family,
            model_types=(_family,),
            layers="encoder.layer",
            components=_BERT_LIKE,
            inputs="input_ids",
            fixed_image_size=False,
        )
    )
register_component_map(
    ComponentMap(
        family="gpt2",
        model_types=("gpt2",),
        layers="h",
        embeddings="wte",
        components={
            "attn_norm": NormSpec("ln_1"),
            "mha": AttentionSpec(
                "attn",
                fused_qkv="attn.c_attn",
                projections=("attn.c_attn", "attn.c_attn", "attn.c_attn", "attn.c_proj"),
                transposed=True,
                auxiliary_inputs=True,
                bound="causal self-attention (masked scores), which the paper's bound does not cover",
            ),
            "ffn_norm": NormSpec("ln_2"),
            "ffn_fc1": LinearSpec("mlp.c_fc", transposed=True),
            "ffn_fc2": LinearSpec("mlp.c_proj", transposed=True),
        },
        head_names=("score", "lm_head"),
        inputs="input_ids",
        fixed_image_size=False,
        causal=True,
    )
)


def _decoder_map(family: str, gain_offset: float = 0.0, bound: str = "") -> ComponentMap:
    norm = functools.partial(NormSpec, kind="rmsnorm", gain_offset=gain_offset)
    return ComponentMap(
        family=family,
        model_types=(family,),
        layers="layers",
        embeddings="embed_tokens",
        components={
            "attn_norm": norm("input_layernorm"),
            "mha": AttentionSpec(
                "self_attn",
                projections=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
                auxiliary_inputs=True,
                bound="causal self-attention with rotary position embeddings and grouped key/value heads"
                + bound
                + ", which the paper's bound does not cover",
            ),
            "ffn_norm": norm("post_attention_layernorm"),
            **_GATED,
        },
        head_names=("score", "lm_head"),
        inputs="input_ids",
        fixed_image_size=False,
        causal=True,
        block_arguments="rotary_decoder",
    )


for _family in ("llama", "mistral", "qwen2"):
    register_component_map(_decoder_map(_family))
register_component_map(_decoder_map("qwen3", bound=" and RMS norms on queries and keys"))
register_component_map(_decoder_map("gemma", gain_offset=1.0))

_FOUR_NORMS = (
    "its blocks have four norms (before and after each sublayer), which do not fit the five component types; no "
    "definition of their components is written down yet"
)
for _type in ("gemma2", "gemma3", "gemma3_text"):
    refuse_model_type(_type, _FOUR_NORMS)
for _type in ("swin", "swinv2", "donut-swin", "convnext", "convnextv2"):
    refuse_model_type(
        _type, "a hierarchical model whose stages are not one list of transformer blocks with the five components"
    )
