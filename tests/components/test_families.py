"""Every registered family against the definition of its components (``docs/architectures.md``), pair by pair.

Each row builds a tiny random model of one family and says, in its own words (not the registry's), which
modules make up each component and how its attention works. The reference computes every component's rate
with explicit float64 math from the weights: the LayerNorm / RMSNorm formula with the family's gain rule,
attention by hand (its causal mask, rotary embedding and grouped key/value heads), the stacked gate/up
matrix, fc2's zero-padded input. Shared protocol: every component gets the input of block 0 in the model's
own forward (read here by a hook on the first block). In situ: each component gets the input its first
module receives (read here by hooks). Query and key weights are scaled up so that attention scores spread:
a wrong mask or a missing rotary embedding changes the rates far beyond the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import transformers as T
from torch import nn

from hf_plasticity import COMPONENTS, measure_plasticity
from hf_plasticity.errors import UnsupportedModelError

SEQ = 12
VOCAB = 100
IMG = {"image_size": 16, "patch_size": 4}
VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, **IMG}
TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
DECODER = {**TEXT, "num_key_value_heads": 2, "head_dim": 8, "vocab_size": VOCAB}
QK_SCALE = 6.0


@dataclass
class Row:
    """One family: how to build it and, from its own forward, what its components are."""

    make: Callable[[], nn.Module]
    blocks: str  # absolute path of the block list
    parts: dict[str, tuple[str, ...]]  # component -> its modules, relative to a block (first one takes the input)
    attention: dict[str, Any]  # q, k, v, o (or qkv), heads, kv_heads, causal, rope, conv, qk_norm
    norm: tuple[str, float] = ("layer", 0.0)  # formula and gain offset
    text: bool = False
    tower: str | None = None  # run this submodule's forward (a dual encoder's vision tower)
    conv: bool = False  # Conv1D linears (weight in x out)
    extra: dict[str, Any] = field(default_factory=dict)


def _build(
    model_cls: type, config: Any, qk: tuple[str, ...], qk_scale: float = QK_SCALE, embed_scale: float = 1.0
) -> Callable[[], nn.Module]:
    """A tiny model whose attention scores spread (query/key weights and, for LMs, token embeddings scaled up)."""

    def make() -> nn.Module:
        torch.manual_seed(0)
        model = model_cls(config()).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if any(f".{n}." in f".{name}" for n in qk) and name.endswith("weight"):
                    p.mul_(qk_scale)
                if any(e in name for e in ("embed_tokens", "wte")):
                    p.mul_(embed_scale)
                if "relative_position_bias_table" in name:  # zero at initialisation: give it a visible effect
                    p.normal_(0.0, 2.0)
        return model

    return make


VIT_PARTS = {
    "attn_norm": ("layernorm_before",),
    "mha": ("attention",),
    "ffn_norm": ("layernorm_after",),
    "ffn_fc1": ("mlp.fc1",),
    "ffn_fc2": ("mlp.fc2",),
}
VIT_ATTN = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj"}
CLIP_PARTS = {
    "attn_norm": ("layer_norm1",),
    "mha": ("self_attn",),
    "ffn_norm": ("layer_norm2",),
    "ffn_fc1": ("mlp.fc1",),
    "ffn_fc2": ("mlp.fc2",),
}
CLIP_ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj"}
BERT_PARTS = {
    "attn_norm": ("attention.output.LayerNorm",),
    "mha": ("attention.self", "attention.output.dense"),
    "ffn_norm": ("output.LayerNorm",),
    "ffn_fc1": ("intermediate.dense",),
    "ffn_fc2": ("output.dense",),
}
BERT_ATTN = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
}
D2V_PARTS = {**BERT_PARTS, "attn_norm": ("layernorm_before",), "ffn_norm": ("layernorm_after",)}
D2V_PARTS["mha"] = ("attention.attention", "attention.output.dense")
D2V_ATTN = {
    "q": "attention.attention.query",
    "k": "attention.attention.key",
    "v": "attention.attention.value",
    "o": "attention.output.dense",
}
GATED = {"ffn_fc1": ("mlp.gate_proj", "mlp.up_proj"), "ffn_fc2": ("mlp.down_proj",)}
DINO_PARTS = {"attn_norm": ("norm1",), "mha": ("attention",), "ffn_norm": ("norm2",)}
LLAMA_PARTS = {
    "attn_norm": ("input_layernorm",),
    "mha": ("self_attn",),
    "ffn_norm": ("post_attention_layernorm",),
    **GATED,
}
LLAMA_ATTN = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "kv_heads": 2,
    "causal": True,
    "rope": "default",
}
QK = ("q_proj", "k_proj", "query", "key", "c_attn")


def _vision(cls: type, config_cls: type, **extra: Any) -> Callable[[], nn.Module]:
    return _build(
        cls, lambda: config_cls(**VISION, **extra), QK, qk_scale=30.0 if "DINOv3" in cls.__name__ else QK_SCALE
    )


def _dual(cls: type, config_cls: type) -> Callable[[], nn.Module]:
    text = {**TEXT, "vocab_size": VOCAB}
    return _build(cls, lambda: config_cls(vision_config=VISION, text_config=text, num_labels=3), QK)


def _decoder(cls: type, config_cls: type, **extra: Any) -> Callable[[], nn.Module]:
    return _build(cls, lambda: config_cls(**DECODER, **extra), QK, embed_scale=100.0)


ROWS: dict[str, Row] = {
    "vit": Row(_vision(T.ViTForImageClassification, T.ViTConfig), "vit.layers", VIT_PARTS, VIT_ATTN),
    "deit": Row(_vision(T.DeiTForImageClassification, T.DeiTConfig), "deit.layers", VIT_PARTS, VIT_ATTN),
    "vit_msn": Row(_vision(T.ViTMSNForImageClassification, T.ViTMSNConfig), "vit.layers", VIT_PARTS, VIT_ATTN),
    "ijepa": Row(_vision(T.IJepaForImageClassification, T.IJepaConfig), "ijepa.layers", VIT_PARTS, VIT_ATTN),
    "beit": Row(_vision(T.BeitForImageClassification, T.BeitConfig), "beit.layers", VIT_PARTS, VIT_ATTN),
    "beit-relative-bias": Row(
        _vision(T.BeitForImageClassification, T.BeitConfig, use_relative_position_bias=True),
        "beit.layers",
        VIT_PARTS,
        {**VIT_ATTN, "bias": "captured"},
    ),
    "data2vec-vision-relative-bias": Row(
        _vision(T.Data2VecVisionForImageClassification, T.Data2VecVisionConfig, use_relative_position_bias=True),
        "data2vec_vision.encoder.layer",
        D2V_PARTS,
        {**D2V_ATTN, "bias": "module"},
    ),
    "data2vec-vision": Row(
        _vision(T.Data2VecVisionForImageClassification, T.Data2VecVisionConfig),
        "data2vec_vision.encoder.layer",
        D2V_PARTS,
        D2V_ATTN,
    ),
    "dinov2": Row(
        _vision(T.Dinov2ForImageClassification, T.Dinov2Config),
        "dinov2.encoder.layer",
        {**DINO_PARTS, "ffn_fc1": ("mlp.fc1",), "ffn_fc2": ("mlp.fc2",)},
        VIT_ATTN,
    ),
    "dinov2-swiglu": Row(
        _vision(T.Dinov2ForImageClassification, T.Dinov2Config, use_swiglu_ffn=True),
        "dinov2.encoder.layer",
        {**DINO_PARTS, **GATED},
        VIT_ATTN,
    ),
    "dinov3_vit": Row(
        _vision(T.DINOv3ViTModel, T.DINOv3ViTConfig),
        "model.layer",
        {**DINO_PARTS, "ffn_fc1": ("mlp.up_proj",), "ffn_fc2": ("mlp.down_proj",)},
        {**VIT_ATTN, "rope": "captured"},
    ),
    "dinov3_vit-gated": Row(
        _vision(T.DINOv3ViTModel, T.DINOv3ViTConfig, use_gated_mlp=True),
        "model.layer",
        {**DINO_PARTS, **GATED},
        {**VIT_ATTN, "rope": "captured"},
    ),
    "clip_vision_model": Row(_vision(T.CLIPVisionModel, T.CLIPVisionConfig), "encoder.layers", CLIP_PARTS, CLIP_ATTN),
    "siglip_vision_model": Row(
        _vision(T.SiglipVisionModel, T.SiglipVisionConfig), "encoder.layers", CLIP_PARTS, CLIP_ATTN
    ),
    "clip-tower": Row(
        _dual(T.CLIPModel, T.CLIPConfig), "vision_model.encoder.layers", CLIP_PARTS, CLIP_ATTN, tower="vision_model"
    ),
    "siglip-tower": Row(
        _dual(T.SiglipForImageClassification, T.SiglipConfig),
        "vision_model.encoder.layers",
        CLIP_PARTS,
        CLIP_ATTN,
        tower="vision_model",
    ),
    "bert": Row(
        _build(T.BertForSequenceClassification, lambda: T.BertConfig(**TEXT, vocab_size=VOCAB, num_labels=3), QK),
        "bert.encoder.layer",
        BERT_PARTS,
        BERT_ATTN,
        text=True,
    ),
    "roberta": Row(
        _build(
            T.RobertaForSequenceClassification, lambda: T.RobertaConfig(**TEXT, vocab_size=VOCAB, num_labels=3), QK
        ),
        "roberta.encoder.layer",
        BERT_PARTS,
        BERT_ATTN,
        text=True,
    ),
    "gpt2": Row(
        _build(
            T.GPT2LMHeadModel,
            lambda: T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB),
            QK,
            embed_scale=100.0,
        ),
        "transformer.h",
        {
            "attn_norm": ("ln_1",),
            "mha": ("attn",),
            "ffn_norm": ("ln_2",),
            "ffn_fc1": ("mlp.c_fc",),
            "ffn_fc2": ("mlp.c_proj",),
        },
        {"qkv": "attn.c_attn", "o": "attn.c_proj", "causal": True},
        text=True,
        conv=True,
    ),
    "llama": Row(_decoder(T.LlamaForCausalLM, T.LlamaConfig), "model.layers", LLAMA_PARTS, LLAMA_ATTN, ("rms", 0.0)),
    "mistral": Row(
        _decoder(T.MistralForCausalLM, T.MistralConfig), "model.layers", LLAMA_PARTS, LLAMA_ATTN, ("rms", 0.0)
    ),
    "qwen2": Row(_decoder(T.Qwen2ForCausalLM, T.Qwen2Config), "model.layers", LLAMA_PARTS, LLAMA_ATTN, ("rms", 0.0)),
    "qwen3": Row(
        _decoder(T.Qwen3ForCausalLM, T.Qwen3Config),
        "model.layers",
        LLAMA_PARTS,
        {**LLAMA_ATTN, "qk_norm": ("self_attn.q_norm", "self_attn.k_norm")},
        ("rms", 0.0),
    ),
    "gemma": Row(_decoder(T.GemmaForCausalLM, T.GemmaConfig), "model.layers", LLAMA_PARTS, LLAMA_ATTN, ("rms", 1.0)),
}
for _row in ROWS.values():
    _row.text = _row.text or _row.attention.get("rope") == "default"


# ------------------------------------------------------------------------------------------ the definition
def _linear(m: nn.Module, x: torch.Tensor, conv: bool) -> torch.Tensor:
    w = m.weight.detach().double()
    out = x @ (w if conv else w.T)
    return out + m.bias.detach().double() if m.bias is not None else out


def _in_width(m: nn.Module, conv: bool) -> int:
    return int(m.weight.shape[0] if conv else m.weight.shape[1])


def _norm(m: nn.Module, x: torch.Tensor, kind: str, offset: float) -> torch.Tensor:
    """LayerNorm: g (x - mean) / sqrt(var + eps) + b. RMSNorm: g x / sqrt(mean(x^2) + eps), g = offset + w."""
    eps = getattr(m, "eps", None) or m.variance_epsilon
    if kind == "layer":
        mu = x.mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    else:
        y = x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps)
    if getattr(m, "weight", None) is not None:
        y = y * (offset + m.weight.detach().double())
    if getattr(m, "bias", None) is not None:
        y = y + m.bias.detach().double()
    return y


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def _default_rope(config: Any, n: int, dh: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE of positions 0..n-1: angle p / theta^(2i/dh), each frequency used for both halves."""
    theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    inv = 1.0 / theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def _attention(
    block: nn.Module, spec: dict[str, Any], x: torch.Tensor, heads: int, rope: Any, bias: Any = None
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_h) + mask) V, then the output projection; x is (n, d)."""
    conv = "qkv" in spec
    if conv:
        q, k, v = _linear(block.get_submodule(spec["qkv"]), x, True).chunk(3, dim=-1)
    else:
        q, k, v = (_linear(block.get_submodule(spec[n]), x, False) for n in "qkv")
    n = x.shape[0]
    kv_heads = spec.get("kv_heads", heads)
    dh = q.shape[-1] // heads
    q = q.view(n, heads, dh).transpose(0, 1)
    k = k.view(n, kv_heads, dh).transpose(0, 1)
    v = v.view(n, kv_heads, dh).transpose(0, 1)
    if "qk_norm" in spec:
        qn, kn = (block.get_submodule(p) for p in spec["qk_norm"])
        q, k = _norm(qn, q, "rms", 0.0), _norm(kn, k, "rms", 0.0)
    if rope is not None:
        cos, sin = rope  # applied to the last cos.shape[0] tokens (DINOv3 leaves its prefix tokens alone)
        r = cos.shape[0]
        q = torch.cat([q[:, : n - r], q[:, n - r :] * cos + _rotate_half(q[:, n - r :]) * sin], dim=1)
        k = torch.cat([k[:, : n - r], k[:, n - r :] * cos + _rotate_half(k[:, n - r :]) * sin], dim=1)
    k = k.repeat_interleave(heads // kv_heads, dim=0)
    v = v.repeat_interleave(heads // kv_heads, dim=0)
    scores = q @ k.transpose(1, 2) / math.sqrt(dh)
    if bias is not None:  # BEiT's relative position bias, the one this layer computes, added to the scores
        scores = scores + bias.double().reshape(heads, n, n)
    if spec.get("causal"):
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
    out = (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, heads * dh)
    return _linear(block.get_submodule(spec["o"]), out, conv)


def _component(
    row: Row, block: nn.Module, comp: str, heads: int, rope: Any, bias: Any = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    parts = [block.get_submodule(p) for p in row.parts[comp]]
    if comp in ("attn_norm", "ffn_norm"):
        return lambda x: _norm(parts[0], x, *row.norm)
    if comp == "mha":
        return lambda x: _attention(block, row.attention, x, heads, rope, bias)

    def linear(x: torch.Tensor) -> torch.Tensor:
        width = _in_width(parts[0], row.conv)
        x = torch.cat([x, x.new_zeros(x.shape[0], width - x.shape[1])], dim=1)  # zero-padded to in_features
        return torch.cat([_linear(p, x, row.conv) for p in parts], dim=-1)  # stacked gate/up

    return linear


def _frob(t: torch.Tensor) -> float:
    return float(torch.linalg.norm(t.reshape(-1)))


def _inputs(row: Row, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if row.text:
        return torch.randint(0, VOCAB, (n, SEQ), generator=g)
    return torch.randn(n, 3, IMG["image_size"], IMG["image_size"], generator=g)


def _loader(t: torch.Tensor) -> torch.utils.data.DataLoader:
    """A DataLoader keeps pair order, so pair i is (reference[i], data[i]) for the brute force."""
    return torch.utils.data.DataLoader(t, batch_size=len(t))


def _forward(row: Row, model: nn.Module, x: torch.Tensor) -> None:
    target = model.get_submodule(row.tower) if row.tower else model
    target(**({"input_ids": x} if row.text else {"pixel_values": x}))


def brute_force(row: Row, model: nn.Module, x: torch.Tensor, y: torch.Tensor, protocol: str) -> np.ndarray:
    """Rates (pairs, layers, components) from the definition, one pair at a time, in float64."""
    blocks = model.get_submodule(row.blocks)
    config = model.get_submodule(row.tower).config if row.tower else model.config
    heads = int(config.num_attention_heads)
    seen: dict[Any, torch.Tensor] = {}
    handles = []

    def grab(key: Any) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if key == "rope":
                seen[key] = kwargs["position_embeddings"]
            elif isinstance(key, tuple) and key[0] == "bias":
                seen[key] = kwargs["attention_mask"].detach()
            else:
                seen[key] = (args[0] if args else kwargs["hidden_states"]).detach().double()[0]

        return hook

    handles.append(blocks[0].register_forward_pre_hook(grab("z"), with_kwargs=True))
    if row.attention.get("rope") == "captured":
        first_attention = blocks[0].get_submodule(row.parts["mha"][0])
        handles.append(first_attention.register_forward_pre_hook(grab("rope"), with_kwargs=True))
    for layer, block in enumerate(blocks):
        if row.attention.get("bias") == "captured":
            attention = block.get_submodule(row.parts["mha"][0])
            handles.append(attention.register_forward_pre_hook(grab(("bias", layer)), with_kwargs=True))
        for comp in COMPONENTS:
            module = block.get_submodule(row.parts[comp][0])
            handles.append(module.register_forward_pre_hook(grab((layer, comp)), with_kwargs=True))
    out = np.zeros((len(x), len(blocks), len(COMPONENTS)))
    try:
        with torch.no_grad():
            for i in range(len(x)):
                _forward(row, model, x[i : i + 1])
                sx = dict(seen)
                _forward(row, model, y[i : i + 1])
                sy = dict(seen)
                n = sx["z"].shape[0]
                rope = None
                if row.attention.get("rope") == "default":
                    rope = _default_rope(config, n, DECODER["head_dim"])
                elif row.attention.get("rope") == "captured":
                    cos, sin = sx["rope"]
                    rope = (cos.double().reshape(-1, cos.shape[-1]), sin.double().reshape(-1, sin.shape[-1]))
                for layer, block in enumerate(blocks):
                    for c, comp in enumerate(COMPONENTS):
                        bias = sx.get(("bias", layer))
                        if row.attention.get("bias") == "module":  # computed inside attention by its own module
                            side = IMG["image_size"] // IMG["patch_size"]
                            table = block.get_submodule(row.parts["mha"][0]).relative_position_bias
                            bias = table((side, side), False, dim_size=n)
                        f = _component(row, block, comp, heads, rope, bias)
                        a, b = (sx["z"], sy["z"]) if protocol == "shared" else (sx[layer, comp], sy[layer, comp])
                        out[i, layer, c] = _frob(f(a) - f(b)) / _frob(a - b)
    finally:
        for h in handles:
            h.remove()
    return out


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-4), (torch.float64, 1e-9)], ids=["float32", "float64"])
@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
@pytest.mark.parametrize("family", sorted(ROWS))
def test_estimator_equals_the_definition(family: str, protocol: str, dtype: torch.dtype, rtol: float) -> None:
    row = ROWS[family]
    model = row.make().to(dtype)
    x, y = _inputs(row, 3, seed=1), _inputs(row, 3, seed=2)
    if not row.text:
        x, y = x.to(dtype), y.to(dtype)
    report = measure_plasticity(model, _loader(y), reference=_loader(x), protocol=protocol, progress=False)
    expected = brute_force(row, model, x, y, protocol)
    assert report.rates is not None
    if dtype == torch.float64 and row.norm[0] == "rms":
        rtol = 1e-7  # transformers' RMSNorms compute in float32 whatever the input's dtype (their own forward)
    np.testing.assert_allclose(report.rates, expected, rtol=rtol)


@pytest.mark.parametrize(
    ("family", "change"),
    [
        ("llama", "causal"),
        ("llama", "rope"),
        ("gpt2", "causal"),
        ("qwen3", "qk_norm"),
        ("dinov3_vit", "rope"),
        ("beit-relative-bias", "bias"),
        ("data2vec-vision-relative-bias", "bias"),
    ],
)
def test_a_wrong_mask_or_rotary_would_show(family: str, change: str) -> None:
    """The rows' attention scores spread: dropping the mask, the rotary embedding or q/k norms from the
    definition moves attention's rates far beyond the tolerance of the test above."""
    row = ROWS[family]
    wrong = Row(**{**row.__dict__, "attention": {k: v for k, v in row.attention.items() if k != change}})
    model = row.make()
    x, y = _inputs(row, 3, seed=1), _inputs(row, 3, seed=2)
    report = measure_plasticity(model, _loader(y), reference=_loader(x), progress=False)
    mha = COMPONENTS.index("mha")
    right = brute_force(row, model, x, y, "shared")[..., mha]
    np.testing.assert_allclose(report.rates[..., mha], right, rtol=1e-4)
    off = brute_force(wrong, model, x, y, "shared")[..., mha]
    assert np.max(np.abs(off - right) / right) > 1e-2


BOUNDED_ATTENTION = {"vit", "deit", "vit_msn", "ijepa", "beit", "data2vec-vision", "dinov2", "dinov2-swiglu"}
BOUNDED_ATTENTION |= {"clip_vision_model", "siglip_vision_model", "clip-tower", "siglip-tower", "bert", "roberta"}


@pytest.mark.parametrize("family", sorted(ROWS))
def test_bounds_from_the_definition(family: str, tmp_path) -> None:
    """Norms: max |g| with the family's gain rule; linears (Conv1D, stacked gate/up): the spectral norm of the
    matrix they apply, never exceeded by a measured rate; attention: the paper's bound only where it holds,
    else null with the reason, kept through save and load."""
    row = ROWS[family]
    model = row.make()
    x, y = _inputs(row, 3, seed=1), _inputs(row, 3, seed=2)
    report = measure_plasticity(model, _loader(y), reference=_loader(x), protocol="in_situ", progress=False)
    blocks = model.get_submodule(row.blocks)
    for layer, block in enumerate(blocks):
        for c, comp in enumerate(COMPONENTS):
            parts = [block.get_submodule(p) for p in row.parts[comp]]
            bound = report.bounds[layer, c]
            if comp in ("attn_norm", "ffn_norm"):
                w = parts[0].weight.detach().double() + row.norm[1]
                assert bound == pytest.approx(float(w.abs().max()), rel=1e-6)
            elif comp in ("ffn_fc1", "ffn_fc2"):
                w = torch.cat([(p.weight.T if row.conv else p.weight).detach().double() for p in parts])
                assert bound == pytest.approx(float(torch.linalg.matrix_norm(w, ord=2)), rel=1e-6)
                assert np.all(report.rates[:, layer, c] <= bound * (1 + 1e-5))
            elif family in BOUNDED_ATTENTION:
                assert np.isfinite(bound) and np.all(report.rates[:, layer, c] <= bound)
    mha = COMPONENTS.index("mha")
    loaded = type(report).load(report.save(tmp_path / "r.json"))
    if family in BOUNDED_ATTENTION:
        assert "mha" not in loaded.weight_bounds.notes
    else:
        assert np.all(np.isnan(loaded.bounds[:, mha]))
        assert "paper's bound does not cover" in loaded.weight_bounds.notes["mha"]
    assert np.isfinite(loaded.token_rms) and loaded.token_rms == pytest.approx(report.token_rms)


def _gemma2() -> nn.Module:
    return T.Gemma2ForCausalLM(T.Gemma2Config(**DECODER))


def _swin() -> nn.Module:
    return T.SwinModel(
        T.SwinConfig(embed_dim=8, depths=[1], num_heads=[2], image_size=16, patch_size=4, window_size=2)
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [(_gemma2, r"'gemma2'.*four norms"), (_swin, r"'swin'.*hierarchical")],
    ids=["gemma2", "swin"],
)
def test_unsupported_families_say_why_and_how(make: Callable[[], nn.Module], match: str) -> None:
    with pytest.raises(UnsupportedModelError, match=match + r".*register_component_map"):
        measure_plasticity(make(), torch.zeros(4, 3, 16, 16, dtype=torch.float32), progress=False)


def test_a_dinov2_variant_the_map_does_not_describe_is_not_called_a_wrapper() -> None:
    """A Dinov2 whose MLP is neither plain nor the declared SwiGLU is told its module is missing, not that it
    "wraps a supported Dinov2Model"."""
    model = ROWS["dinov2"].make()
    for block in model.dinov2.encoder.layer:
        block.mlp = nn.Sequential()
    with pytest.raises(UnsupportedModelError, match=r"no module 'dinov2\.encoder\.layer\.0\.mlp\.fc1'") as err:
        measure_plasticity(model, _inputs(ROWS["dinov2"], 4, 0), progress=False)
    assert "wraps" not in str(err.value)


# ------------------------------------------------------------------------------------------------- tuner
TASK_TYPES = {"bert": "SEQ_CLS", "roberta": "SEQ_CLS"}
TASK_TYPES |= {f: "CAUSAL_LM" for f in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma")}


def _outputs(row: Row, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    target = model.get_base_model() if isinstance(model, PeftModel) else model
    with torch.no_grad():
        if row.tower:
            return target.get_submodule(row.tower)(pixel_values=x)[0]
        out = target(**({"input_ids": x} if row.text else {"pixel_values": x}))
    return out.logits if getattr(out, "logits", None) is not None else out[0]


def _expected_heads(model: nn.Module) -> list[str]:
    """The task head the paper trains anew: a classifier/score layer, or an LM head not tied to the embeddings."""
    names = dict(model.named_modules())
    heads = [h for h in ("classifier", "score") if h in names]
    lm = names.get("lm_head")
    if lm is not None and lm.weight is not model.get_input_embeddings().weight:
        heads.append("lm_head")
    return heads


@pytest.mark.parametrize("family", sorted(ROWS))
def test_tune_save_load_merge_unload(family: str, tmp_path) -> None:
    """get_peft_model trains every module of the selected components (both of a stacked gate/up, attention
    and its separate output projection) plus the family's head; save, load, merge and unload are exact."""
    from peft import PeftModel, get_peft_model

    from hf_plasticity import PlasticityConfig

    row = ROWS[family]
    x = _inputs(row, 2, seed=5)
    base_out = _outputs(row, row.make(), x)
    config = PlasticityConfig(components=["mha", "ffn_fc1"], keep_original=True, task_type=TASK_TYPES.get(family))
    peft_model = get_peft_model(row.make(), config)
    saved = peft_model.peft_config["default"]
    blocks = row.blocks
    wanted = {f"{blocks}.{i}.{p}" for i in range(2) for c in ("mha", "ffn_fc1") for p in row.parts[c]}
    assert set(saved.selected_modules) == wanted
    names = dict(row.make().named_modules())  # (with SEQ_CLS, PEFT adds both its head names; one exists)
    assert sorted(h for h in saved.modules_to_save or [] if h in names) == sorted(_expected_heads(row.make()))
    with torch.no_grad():  # stands for training: move every trainable weight
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    tuned = _outputs(row, peft_model, x)
    assert not torch.allclose(tuned, base_out)
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(row.make(), tmp_path / "adapter")
    torch.testing.assert_close(_outputs(row, loaded, x), tuned, rtol=0, atol=0)
    unloaded = PeftModel.from_pretrained(row.make(), tmp_path / "adapter").unload()
    fresh = row.make().state_dict()
    heads = tuple(f"{h}." for h in _expected_heads(row.make()))  # PEFT's unload keeps the trained head copy
    for name, value in unloaded.state_dict().items():
        if not name.startswith(heads):
            assert torch.equal(value, fresh[name]), name
    merged = loaded.merge_and_unload()
    assert type(merged) is type(row.make())
    torch.testing.assert_close(_outputs(row, merged, x), tuned, rtol=0, atol=0)  # the trained modules swapped in


# ------------------------------------------------------------------------------------------------- registry
def test_every_registered_family_has_a_row() -> None:
    """Each model type the registry lists is built, measured and tuned by the rows above."""
    from hf_plasticity.components import registered_model_types

    covered = {ROWS[f].make().config.model_type for f in ROWS}
    assert set(registered_model_types()) <= covered


@pytest.mark.parametrize("family", sorted(ROWS))
def test_plain_tensors_measure_and_tune(family: str) -> None:
    """A bare pixel or token tensor (no DataLoader) measures, and tunes: the model's main_input_name decides the
    modality, so BEiT (whose config has a vocab_size, its masked-image-modelling codebook) takes pixels."""
    from peft import get_peft_model

    from hf_plasticity import PlasticityConfig

    row = ROWS[family]
    model = row.make()
    report = measure_plasticity(model, _inputs(row, 6, seed=3), progress=False)
    assert report.num_pairs == 3 and report.rates is not None and np.all(np.isfinite(report.rates))
    tuned = get_peft_model(model, PlasticityConfig(scores=report, top_k=1, task_type=TASK_TYPES.get(family)))
    assert tuned.peft_config["default"].selected_modules
