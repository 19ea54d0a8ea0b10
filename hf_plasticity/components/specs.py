"""What a component is: the five types, the one ranking rule, and the declared specs a family map is made of.

A spec says what the module(s) compute (a norm and its gain rule, one linear or several stacked, attention with
its projections and auxiliary inputs), so the estimator, the bounds and the tuner dispatch on it, never on
module names or shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ComponentMapError

if TYPE_CHECKING:
    pass


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


def rank_components(
    scores: Mapping[str, float | None], places: Mapping[str, tuple[int, str]] | None = None
) -> list[str]:
    """Component types, module paths or cells by score, highest first; missing or non-finite scores last.

    The one ranking rule and its one tie-break: reports, selections, LoRA rank allocation and model cards all
    order through it. Equal scores go to the shallower layer, then in canonical component order
    (:data:`COMPONENTS`), then in the mapping's own order. ``places`` gives each name's (layer, component)
    when the names are module paths or cells; a name without one is its own component type (layer 0).
    """
    order = {name: i for i, name in enumerate(scores)}
    places = places or {}

    def key(name: str) -> tuple[float, int, int, int]:
        value = scores[name]
        first = -value if value is not None and math.isfinite(value) else math.inf
        layer, component = places.get(name, (0, name))
        canonical = COMPONENTS.index(component) if component in COMPONENTS else len(COMPONENTS)
        return (first, layer, canonical, order[name])

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
    ``block_arguments``: how the estimator gets the auxiliary arguments the model's forward gives each block and
    attention module (masks, positions, rotary cos/sin): ``"captured"`` from one forward pass, or built as a
    rotary decoder's forward builds them (``"rotary_decoder"``, see ``hf_plasticity.measure.arguments``), which
    costs no forward pass beyond the embedding.
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
    block_arguments: Literal["captured", "rotary_decoder"] = "captured"

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


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)
