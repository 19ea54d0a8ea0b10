"""The component-map registry: the one place that knows where each architecture keeps its components.

Everything else (the estimator, the bounds, the PEFT tuner, model cards) asks this module which modules exist
and what each component is (a norm and its gain rule, one linear or several stacked, attention with its
projections and auxiliary inputs), never module names or shapes; so supporting a new architecture is one
:func:`register_component_map` call plus one row in ``tests/test_families.py``, whose brute force checks it
against the definition (``../shared/architectures.md``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import ComponentMapError, UnknownComponentError, UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn

COMPONENTS: tuple[str, ...] = ("attn_norm", "mha", "ffn_norm", "ffn_fc1", "ffn_fc2")
"""The five component types of a pre-norm transformer block, in the paper's naming."""

THEORETICAL_RANKING: tuple[str, ...] = ("mha", "ffn_fc1", "ffn_fc2", "ffn_norm", "attn_norm")
"""The paper's theoretical ranking of component types, most plastic first."""

COMPONENT_DESCRIPTIONS: dict[str, str] = {
    "attn_norm": "norm of the attention sublayer (LayerNorm or RMSNorm; before attention in pre-norm blocks)",
    "mha": "multi-head self-attention (without the residual add)",
    "ffn_norm": "norm of the MLP sublayer (before the MLP in pre-norm blocks)",
    "ffn_fc1": "first MLP linear(s), the linear map alone before the activation (gate and up stacked if gated)",
    "ffn_fc2": "second MLP linear",
}


def rank_components(scores: Mapping[str, float | None]) -> list[str]:
    """Component types (or module paths) by score, highest first; missing or non-finite scores last.

    The one ranking rule: reports, selections, LoRA rank allocation and model cards all order through it.
    Ties between component types go in canonical order (:data:`COMPONENTS`); ties between module paths keep
    the mapping's own order, which callers give as the model's (shallower layer first, then component order),
    so a selection never depends on dictionary accidents.
    """
    order = {name: i for i, name in enumerate(scores)}

    def key(name: str) -> tuple[float, int, int]:
        value = scores[name]
        first = -value if value is not None and math.isfinite(value) else math.inf
        canonical = COMPONENTS.index(name) if name in COMPONENTS else len(COMPONENTS)
        return (first, canonical, order[name])

    return sorted(scores, key=key)


@dataclass(frozen=True)
class ComponentSpec:
    """Where one component lives inside a transformer block, and what it is.

    ``path`` is the module that owns the component's parameters: what finetuning unfreezes and what the
    estimator applies. It is the whole component: the paper's ``ffn_fc1`` is the linear map alone, so
    the parameter-free activation after it is not part of any component. A plain ``ComponentSpec`` takes the
    ViT defaults for its component type (a LayerNorm, one ``nn.Linear``, attention with q/k/v/o projections);
    the subclasses below declare anything else, so the estimator, the bounds and the tuner never guess from
    module names or shapes.
    """

    path: str

    @property
    def paths(self) -> tuple[str, ...]:
        """Every module (relative to the block) that owns the component's parameters, in call order."""
        return (self.path,)


@dataclass(frozen=True)
class NormSpec(ComponentSpec):
    """A normalisation layer. ``kind``: ``"layernorm"`` (g * (x - mean) / std + b) or ``"rmsnorm"``
    (g * x / rms(x)). ``gain_offset``: the effective gain is ``gain_offset + weight`` (Gemma stores w and
    multiplies by 1 + w: read the module's forward, not the parameter's name)."""

    kind: Literal["layernorm", "rmsnorm"] = "layernorm"
    gain_offset: float = 0.0


@dataclass(frozen=True)
class LinearSpec(ComponentSpec):
    """A linear map. ``stacked``: further linears applied to the same input whose outputs, concatenated with
    ``path``'s, form the component (a gated MLP's gate and up projections: one (2 * intermediate, hidden)
    matrix). ``transposed``: the weight is stored in x out (GPT-2's ``Conv1D``) instead of out x in."""

    stacked: tuple[str, ...] = ()
    transposed: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.stacked)


@dataclass(frozen=True)
class AttentionSpec(ComponentSpec):
    """Self-attention without its residual add.

    ``path`` is called with the hidden states and the auxiliary inputs its own layer gives it in the model's
    forward (masks, position ids, rotary cos/sin; ``auxiliary_inputs=True`` means the estimator captures them
    per layer). ``output``: a separate output projection applied to ``path``'s output (BERT's
    ``attention.output.dense``; its LayerNorm and residual are not part of it). ``projections``: the query,
    key, value and output linears, relative to the block, that the paper's bound reads head by head; or
    ``fused_qkv`` + ``projections[3]`` for one q|k|v matrix (GPT-2's ``c_attn``). ``bound``: None when the
    paper's bound holds (bidirectional softmax attention, separate q, k, v, o, no rotary embedding); otherwise
    why no bound is given (reports store the reason instead of a number).
    """

    output: str | None = None
    projections: tuple[str, str, str, str] | None = None
    fused_qkv: str | None = None
    transposed: bool = False
    auxiliary_inputs: bool = False
    bound: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.output is None else (self.path, self.output)


def _typed(comp: str, spec: ComponentSpec, projections: tuple[str, str, str, str]) -> ComponentSpec:
    """A plain ComponentSpec as the typed spec it stands for (the ViT defaults of its component type)."""
    if type(spec) is not ComponentSpec:
        return spec
    if comp in ("attn_norm", "ffn_norm"):
        return NormSpec(spec.path)
    if comp in ("ffn_fc1", "ffn_fc2"):
        return LinearSpec(spec.path)
    return AttentionSpec(spec.path, projections=tuple(f"{spec.path}.{p}" for p in projections))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ComponentMap:
    """An architecture family's layout, in module paths relative to its base model.

    ``layers`` is the path of the ``nn.ModuleList`` of blocks; ``components`` maps each component type to
    its spec inside one block. ``fixed_image_size`` says whether the family's embedding only takes the
    configured image size (ViT, DeiT) or interpolates positions (Dinov2). ``inputs``: the keyword the model's
    forward takes its data by (``pixel_values`` or ``input_ids``). ``tower``: for a multi-modal model, the
    sub-model (``vision_model``) whose blocks are measured and whose own forward is run. ``variants``: a
    config flag (``use_swiglu_ffn``) that, when true, replaces some component specs. ``head_names``: the task
    heads finetuning trains by default (a head tied to the input embeddings is not a new head and is left out).
    ``attention_projections`` (q, k, v, o inside the ``mha`` module) applies to plain ``ComponentSpec``s.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    components: dict[str, ComponentSpec]
    embeddings: str = "embeddings"
    head_names: tuple[str, ...] = ("classifier",)
    fixed_image_size: bool = True
    attention_projections: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    inputs: Literal["pixel_values", "input_ids"] = "pixel_values"
    tower: str | None = None
    variants: dict[str, dict[str, ComponentSpec]] = field(default_factory=dict)
    causal: bool = False

    def __post_init__(self) -> None:
        missing = set(COMPONENTS) - set(self.components)
        if missing:
            raise ComponentMapError(
                f"component map {self.family!r} lacks {sorted(missing)}; it must name {COMPONENTS}"
            )
        typed = {c: _typed(c, s, self.attention_projections) for c, s in self.components.items()}
        object.__setattr__(self, "components", typed)
        for specs in self.variants.values():
            specs.update({c: _typed(c, s, self.attention_projections) for c, s in specs.items()})

    def specs_for(self, config: Any) -> dict[str, ComponentSpec]:
        """The component specs of a model with this config: the family's, with its active variants applied."""
        specs = dict(self.components)
        for flag, override in self.variants.items():
            if getattr(config, flag, False):
                specs.update(override)
        return specs

    def module_table(self) -> list[tuple[str, str]]:
        """``(component, its module paths and kind)`` per component type, variants included, for people
        (``hf-plasticity list``, the README's table)."""
        rows = []
        for comp in COMPONENTS:
            spec = self.components[comp]
            text = f"{' + '.join(spec.paths)} ({_kind(spec)})"
            for flag, override in self.variants.items():
                other = override.get(comp)
                if other is None or (other.paths, _kind(other)) == (spec.paths, _kind(spec)):
                    continue
                where = "" if other.paths == spec.paths else f"{' + '.join(other.paths)} "
                text += f"; with {flag}: {where}({_kind(other)})"
            rows.append((comp, text))
        return rows

    def describe(self) -> str:
        """One line: where the family's blocks are and what each component is."""
        where = f"blocks {_join(self.tower or '', self.layers)}, input {self.inputs}"
        return f"{where}; " + "; ".join(f"{c}: {t}" for c, t in self.module_table())


def _kind(spec: ComponentSpec) -> str:
    if isinstance(spec, NormSpec):
        name = "LayerNorm" if spec.kind == "layernorm" else "RMSNorm"
        return name + (f", gain {spec.gain_offset:g} + w" if spec.gain_offset else "")
    if isinstance(spec, LinearSpec):
        what = "stacked linears" if spec.stacked else "linear"
        return what + (", Conv1D" if spec.transposed else "")
    assert isinstance(spec, AttentionSpec)
    parts = ["attention"]
    if spec.output:
        parts.append("then its output projection")
    parts.append("paper's bound" if spec.bound is None else "no bound")
    return ", ".join(parts)


@dataclass(frozen=True)
class ResolvedComponents:
    """A component map bound to one live model: absolute module paths and the modules themselves.

    ``paths[component][layer]`` names the component in reports: its module's path, or, when several modules
    make it up (stacked gate/up linears, attention followed by a separate output projection), their paths
    joined with ``+``. :meth:`modules_of` splits such a name back into module paths.
    """

    map: ComponentMap
    model: nn.Module
    base_prefix: str
    num_layers: int
    embeddings_path: str
    paths: dict[str, list[str]] = field(default_factory=dict)
    specs: dict[str, ComponentSpec] = field(default_factory=dict)
    _modules: dict[tuple[int, str], nn.Module] = field(default_factory=dict, repr=False, compare=False)

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def component(self, layer: int, component: str) -> nn.Module:
        """The (first) module that computes ``component`` of block ``layer``.

        Looked up once per (layer, component): the estimator asks for every component on every batch.
        """
        key = (layer, component)
        if key not in self._modules:
            self._modules[key] = self.module(self.modules_of(self.paths[component][layer])[0])
        return self._modules[key]

    def component_modules(self, layer: int, component: str) -> list[nn.Module]:
        """Every module of ``component`` in block ``layer``, in the order of :attr:`ComponentSpec.paths`."""
        return [self.module(p) for p in self.modules_of(self.paths[component][layer])]

    def sub(self, layer: int, relative: str) -> nn.Module:
        """A module of block ``layer`` by its path relative to the block (e.g. an attention projection)."""
        return self.module(_join(self.layer_path(layer), relative))

    @staticmethod
    def modules_of(name: str) -> list[str]:
        """The module paths a component name stands for (``a+b`` -> ``[a, b]``)."""
        return name.split("+")

    def spec(self, component: str) -> ComponentSpec:
        return self.specs[component]

    def layer_path(self, layer: int) -> str:
        return _join(self.base_prefix, f"{self.map.layers}.{layer}")

    def layers(self) -> nn.ModuleList:
        return self.module(_join(self.base_prefix, self.map.layers))  # type: ignore[return-value]

    def embeddings(self) -> nn.Module:
        return self.module(self.embeddings_path)

    def base(self) -> nn.Module:
        """The model whose forward the estimator runs: the base model, or a multi-modal model's tower."""
        return self.module(self.base_prefix) if self.base_prefix else self.model

    def iter_modules(self, components: tuple[str, ...] = COMPONENTS) -> Iterator[tuple[int, str, str]]:
        """Yield ``(layer, component, name)`` for every layer and the given component types."""
        for layer in range(self.num_layers):
            for comp in components:
                yield layer, comp, self.paths[comp][layer]

    def iter_module_paths(self, components: tuple[str, ...] = COMPONENTS) -> Iterator[tuple[int, str, str]]:
        """Yield ``(layer, component, module_path)`` for every module of every component (several per name)."""
        for layer, comp, name in self.iter_modules(components):
            for path in self.modules_of(name):
                yield layer, comp, path

    def head_paths(self) -> list[str]:
        """Module paths of the task head(s), which finetuning always trains; a head whose weight is the
        input embedding matrix (a tied LM head) is the pretrained vocabulary, not a new head, and is left out."""
        names = dict(self.model.named_modules())
        tied = _input_embedding_weight(self.model)
        heads = []
        for h in self.map.head_names:
            module = names.get(h)
            if module is None:
                continue
            if tied is not None and getattr(module, "weight", None) is tied:
                continue
            heads.append(h)
        return heads


_REGISTRY: dict[str, ComponentMap] = {}
_REFUSED: dict[str, str] = {}


def register_component_map(component_map: ComponentMap, *, overwrite: bool = False) -> ComponentMap:
    """Register a layout for the ``config.model_type`` values it names; returns it, for chaining."""
    for model_type in component_map.model_types:
        if model_type in _REGISTRY and not overwrite and _REGISTRY[model_type] != component_map:
            raise ComponentMapError(
                f"model_type {model_type!r} already has the component map {_REGISTRY[model_type].family!r}; "
                "pass overwrite=True to replace it"
            )
        _REGISTRY[model_type] = component_map
        _REFUSED.pop(model_type, None)
    return component_map


def refuse_model_type(model_type: str, reason: str) -> None:
    """Record why a family is not supported, so its error says why (not just "no map")."""
    if model_type not in _REGISTRY:
        _REFUSED[model_type] = reason


def registered_model_types() -> list[str]:
    return sorted(_REGISTRY)


def registered_maps() -> list[ComponentMap]:
    """Every registered family, once each, in registration order."""
    seen: dict[str, ComponentMap] = {}
    for cmap in _REGISTRY.values():
        seen.setdefault(cmap.family, cmap)
    return list(seen.values())


def get_component_map(model_or_type: nn.Module | str) -> ComponentMap:
    """The registered map for a model (by its ``config.model_type``) or for a model-type string."""
    model_type = model_or_type if isinstance(model_or_type, str) else _model_type(model_or_type)
    try:
        return _REGISTRY[model_type or ""]
    except KeyError:
        what = f"model type {model_type!r}" if model_type else f"{type(model_or_type).__name__} (no config.model_type)"
        why = f" ({_REFUSED[model_type]})" if model_type in _REFUSED else ""
        raise UnsupportedModelError(
            f"hf_plasticity has no component map for {what}{why}. Supported model types: "
            f"{', '.join(registered_model_types())}. To support another architecture, describe where its "
            "blocks and components live with hf_plasticity.register_component_map(ComponentMap(...))."
        ) from None


def resolve_components(model: nn.Module) -> ResolvedComponents:
    """Bind the model's component map to the live model, checking every named module exists."""
    from torch import nn  # here, not at the top: `hf-plasticity list` reads the registry without torch

    cmap = get_component_map(model)
    prefix = cmap.tower if cmap.tower is not None else _base_prefix(model)
    names = dict(model.named_modules())
    if cmap.tower is not None and cmap.tower not in names:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no tower {cmap.tower!r} that the {cmap.family!r} component map measures; "
            "register a map that matches this model's named_modules()"
        )
    layers_path = _join(prefix, cmap.layers)
    layers = names.get(layers_path)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(
            f"{type(model).__name__} does not have the block list {layers_path!r} that the {cmap.family!r} "
            "component map expects; register a map that matches this model's named_modules()"
        )
    base = names[prefix] if prefix else model
    specs = cmap.specs_for(getattr(base, "config", None) or getattr(model, "config", None))
    paths: dict[str, list[str]] = {}
    for comp, spec in specs.items():
        paths[comp] = []
        for layer in range(len(layers)):
            full = [_join(layers_path, f"{layer}.{p}") for p in spec.paths]
            absent = [p for p in full if p not in names]
            if absent:
                flags = f" (variants by config flag: {sorted(cmap.variants)})" if cmap.variants else ""
                raise UnsupportedModelError(
                    f"{type(model).__name__} has no module {absent[0]!r} for component {comp!r} of the "
                    f"{cmap.family!r} map{flags}: this model is a variant the map does not describe; describe it "
                    "with hf_plasticity.register_component_map(ComponentMap(...), overwrite=True), matching its "
                    "named_modules()"
                )
            paths[comp].append("+".join(full))
    return ResolvedComponents(
        map=cmap,
        model=model,
        base_prefix=prefix,
        num_layers=len(layers),
        embeddings_path=_join(prefix, cmap.embeddings),
        paths=paths,
        specs=specs,
    )


def validate_components(components: list[str] | tuple[str, ...] | str | None) -> tuple[str, ...]:
    """Normalise a user's component selection to registered names, in canonical order."""
    if components is None:
        return COMPONENTS
    if isinstance(components, str):
        components = [components]
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise UnknownComponentError(
            f"unknown component(s) {unknown}; choose among {list(COMPONENTS)} "
            f"({'; '.join(f'{k}: {v}' for k, v in COMPONENT_DESCRIPTIONS.items())})"
        )
    if not components:
        raise UnknownComponentError(f"no component selected; choose among {list(COMPONENTS)}")
    return tuple(c for c in COMPONENTS if c in components)


def _model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def _base_prefix(model: nn.Module) -> str:
    """The path of the base model inside a task model ('' when the model is the base model)."""
    from torch import nn

    prefix = getattr(model, "base_model_prefix", "")
    if prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return prefix
    return ""


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _input_embedding_weight(model: nn.Module) -> Any:
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return None
    try:
        emb = get()
    except (NotImplementedError, AttributeError):
        return None
    return getattr(emb, "weight", None)


# ------------------------------------------------------------------------------------------- the families
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
