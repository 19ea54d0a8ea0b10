"""The registry of family maps, and binding a map to a live model (:class:`ResolvedComponents`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ComponentMapError, UnknownComponentError, UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn

from .specs import COMPONENT_DESCRIPTIONS, COMPONENTS, ComponentMap, ComponentSpec, _join


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
    _looked_up: dict[tuple[int, str], nn.Module] = field(default_factory=dict, repr=False, compare=False)

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def component(self, layer: int, component: str) -> nn.Module:
        """The (first) module that computes ``component`` of block ``layer``.

        Looked up once per (layer, component): the estimator asks for every component on every batch.
        """
        key = (layer, component)
        if key not in self._looked_up:
            self._looked_up[key] = self.module(self.modules_of(self.paths[component][layer])[0])
        return self._looked_up[key]

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

    @property
    def main_input(self) -> str:
        """What the measured forward takes, ``"pixel_values"`` or ``"input_ids"``: transformers' own
        ``main_input_name`` of :meth:`base` (a dual encoder's vision tower says pixels, the whole model says
        tokens), else the family's declared ``inputs``. Never guessed from the config: BEiT's ``vocab_size``
        is its masked-image-modelling codebook, not a sign that it reads tokens."""
        name = getattr(self.base(), "main_input_name", None)
        return name if name in ("pixel_values", "input_ids") else self.map.inputs

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


def refused_model_types() -> dict[str, str]:
    """Model types known not to fit, each with the reason its ``UnsupportedModelError`` gives."""
    return dict(sorted(_REFUSED.items()))


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


def _input_embedding_weight(model: nn.Module) -> Any:
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return None
    try:
        emb = get()
    except (NotImplementedError, AttributeError):
        return None
    return getattr(emb, "weight", None)
