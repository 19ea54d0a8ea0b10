"""The component-map registry: the one place that knows where each architecture keeps its components.

Everything else (the estimator, the PEFT tuner, model cards) asks this module which modules exist, so
supporting a new architecture is one :func:`register_component_map` call plus one test row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from torch import nn

from .errors import UnknownComponentError, UnsupportedModelError

COMPONENTS: tuple[str, ...] = ("attn_norm", "mha", "ffn_norm", "ffn_fc1", "ffn_fc2")
"""The five component types of a pre-norm transformer block, in the paper's naming."""

THEORETICAL_RANKING: tuple[str, ...] = ("mha", "ffn_fc1", "ffn_fc2", "ffn_norm", "attn_norm")
"""The paper's theoretical ranking of component types, most plastic first."""

COMPONENT_DESCRIPTIONS: dict[str, str] = {
    "attn_norm": "LayerNorm before attention",
    "mha": "multi-head self-attention",
    "ffn_norm": "LayerNorm before the MLP",
    "ffn_fc1": "first MLP linear (the linear map alone, before the activation)",
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
        finite = value is not None and math.isfinite(value)
        canonical = COMPONENTS.index(name) if name in COMPONENTS else len(COMPONENTS)
        return (-value if finite else math.inf, canonical, order[name])

    return sorted(scores, key=key)


@dataclass(frozen=True)
class ComponentSpec:
    """Where one component lives inside a transformer block.

    ``path`` is the module that owns the component's parameters: what finetuning unfreezes and what the
    estimator applies. It is the whole component: the paper's ``ffn_fc1`` is the linear map alone, so
    the parameter-free activation after it is not part of any component.
    """

    path: str


@dataclass(frozen=True)
class ComponentMap:
    """An architecture family's layout, in module paths relative to its base model.

    ``layers`` is the path of the ``nn.ModuleList`` of blocks; ``components`` maps each component type to
    its :class:`ComponentSpec` inside one block. ``fixed_image_size`` says whether the family's embedding
    only takes the configured image size (ViT, DeiT) or interpolates positions (Dinov2).
    ``attention_projections`` names the query, key, value and output linears inside the ``mha`` module,
    which the theoretical bound of attention reads head by head (:mod:`hf_plasticity.measure.bounds`).
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    components: dict[str, ComponentSpec]
    embeddings: str = "embeddings"
    head_names: tuple[str, ...] = ("classifier",)
    fixed_image_size: bool = True
    attention_projections: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        missing = set(COMPONENTS) - set(self.components)
        if missing:
            raise ValueError(f"component map {self.family!r} lacks {sorted(missing)}; it must name {COMPONENTS}")


@dataclass(frozen=True)
class ResolvedComponents:
    """A component map bound to one live model: absolute module paths and the modules themselves."""

    map: ComponentMap
    model: nn.Module
    base_prefix: str
    num_layers: int
    embeddings_path: str
    paths: dict[str, list[str]] = field(default_factory=dict)
    _modules: dict[tuple[int, str], nn.Module] = field(default_factory=dict, repr=False, compare=False)

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def component(self, layer: int, component: str) -> nn.Module:
        """The module that computes ``component`` of block ``layer``.

        Looked up once per (layer, component): the estimator asks for every component on every batch.
        """
        key = (layer, component)
        if key not in self._modules:
            self._modules[key] = self.module(self.paths[component][layer])
        return self._modules[key]

    def layer_path(self, layer: int) -> str:
        return _join(self.base_prefix, f"{self.map.layers}.{layer}")

    def embeddings(self) -> nn.Module:
        return self.module(self.embeddings_path)

    def iter_modules(self, components: tuple[str, ...] = COMPONENTS) -> Iterator[tuple[int, str, str]]:
        """Yield ``(layer, component, module_path)`` for every layer and the given component types."""
        for layer in range(self.num_layers):
            for comp in components:
                yield layer, comp, self.paths[comp][layer]

    def head_paths(self) -> list[str]:
        """Module paths of the task head(s), which finetuning always trains."""
        names = dict(self.model.named_modules())
        return [h for h in self.map.head_names if h in names]


_REGISTRY: dict[str, ComponentMap] = {}


def register_component_map(component_map: ComponentMap, *, overwrite: bool = False) -> ComponentMap:
    """Register a layout for the ``config.model_type`` values it names; returns it, for chaining."""
    for model_type in component_map.model_types:
        if model_type in _REGISTRY and not overwrite and _REGISTRY[model_type] != component_map:
            raise ValueError(
                f"model_type {model_type!r} already has the component map {_REGISTRY[model_type].family!r}; "
                "pass overwrite=True to replace it"
            )
        _REGISTRY[model_type] = component_map
    return component_map


def registered_model_types() -> list[str]:
    return sorted(_REGISTRY)


def get_component_map(model_or_type: nn.Module | str) -> ComponentMap:
    """The registered map for a model (by its ``config.model_type``) or for a model-type string."""
    model_type = model_or_type if isinstance(model_or_type, str) else _model_type(model_or_type)
    try:
        return _REGISTRY[model_type]
    except KeyError:
        what = f"model type {model_type!r}" if model_type else f"{type(model_or_type).__name__} (no config.model_type)"
        raise UnsupportedModelError(
            f"hf_plasticity has no component map for {what}. Supported model types: "
            f"{', '.join(registered_model_types())}. To support another architecture, describe where its "
            "blocks and components live with hf_plasticity.register_component_map(ComponentMap(...))."
        ) from None


def resolve_components(model: nn.Module) -> ResolvedComponents:
    """Bind the model's component map to the live model, checking every named module exists."""
    cmap = get_component_map(model)
    prefix = _base_prefix(model)
    names = dict(model.named_modules())
    layers_path = _join(prefix, cmap.layers)
    layers = names.get(layers_path)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(
            f"{type(model).__name__} does not have the block list {layers_path!r} that the {cmap.family!r} "
            "component map expects; register a map that matches this model's named_modules()"
        )
    paths: dict[str, list[str]] = {}
    for comp, spec in cmap.components.items():
        paths[comp] = []
        for layer in range(len(layers)):
            full = _join(layers_path, f"{layer}.{spec.path}")
            if full not in names:
                raise UnsupportedModelError(
                    f"{type(model).__name__} has no module {full!r} for component {comp!r} of the "
                    f"{cmap.family!r} map (a variant this map does not cover, e.g. a SwiGLU MLP); "
                    "register a map matching its named_modules()"
                )
            paths[comp].append(full)
    return ResolvedComponents(
        map=cmap,
        model=model,
        base_prefix=prefix,
        num_layers=len(layers),
        embeddings_path=_join(prefix, cmap.embeddings),
        paths=paths,
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
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return prefix
    return ""


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


_VIT_LIKE = {
    "attn_norm": ComponentSpec("layernorm_before"),
    "mha": ComponentSpec("attention"),
    "ffn_norm": ComponentSpec("layernorm_after"),
    "ffn_fc1": ComponentSpec("mlp.fc1"),
    "ffn_fc2": ComponentSpec("mlp.fc2"),
}

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
register_component_map(
    ComponentMap(
        family="dinov2",
        model_types=("dinov2",),
        layers="encoder.layer",
        components={
            "attn_norm": ComponentSpec("norm1"),
            "mha": ComponentSpec("attention"),
            "ffn_norm": ComponentSpec("norm2"),
            "ffn_fc1": ComponentSpec("mlp.fc1"),
            "ffn_fc2": ComponentSpec("mlp.fc2"),
        },
        fixed_image_size=False,
    )
)
