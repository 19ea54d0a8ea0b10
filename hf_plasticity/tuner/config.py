"""``PlasticityConfig``: which modules to train, chosen from measured (or theoretical) plasticity.

The config is saved as ``adapter_config.json`` like any PEFT config, and carries the resolved module list
and the scores that chose it, so a saved adapter records *why* those modules were trained.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from peft.config import PeftConfig

from ..components import COMPONENTS
from ..errors import InvalidInputError
from ..report.report import PlasticityReport
from .peft_type import PLASTICITY, ensure_peft_type
from .rules import DEFAULT_RULE, DEFAULT_VALUE, RULES

LEGACY_LORA_KEYS = ("r", "lora_alpha", "lora_dropout")
"""LoRA settings earlier versions saved in every ``adapter_config.json`` (for the removed mode 'lora')."""
LEGACY_KEYS = ("mode", *LEGACY_LORA_KEYS)
"""Keys of earlier versions' configs: dropped when a saved config loads, refused (with the fix) in code."""
SIGNALS = ("auto", "measured", "theory")
"""What a report's selection ranks by: see ``PlasticityConfig.signal``."""


@dataclass
class PlasticityConfig(PeftConfig):
    """Train the most plastic components of a vision transformer (Odonnat et al., 2026).

    Exactly one selection rule applies: ``top_k`` (the default, 1: attention, as the paper recommends),
    ``budget``, ``threshold``, ``components``, or any rule registered in :mod:`hf_plasticity.tuner.rules`.
    """

    scores: Any = field(
        default=None,
        metadata={
            "help": "Plasticity scores: a PlasticityReport, the path of a saved report, or a mapping from component "
            "type (or module path) to score. None uses the paper's theoretical ranking "
            "(mha > ffn_fc1 > ffn_fc2 > ffn_norm > attn_norm). Stored as plain scores in adapter_config.json."
        },
    )
    top_k: int | None = field(
        default=None, metadata={"help": "Train the k most plastic component types in every selected layer."}
    )
    budget: float | None = field(
        default=None,
        metadata={
            "help": "Largest fraction (0 < budget <= 1) of the model's parameters to train, head included; filled "
            "greedily with the most plastic modules."
        },
    )
    threshold: float | None = field(
        default=None, metadata={"help": "Train every module whose plasticity score is at least this value."}
    )
    components: list[str] | None = field(
        default=None, metadata={"help": f"Train exactly these component types, among {list(COMPONENTS)}."}
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "Only select modules in these layer indices (default: all layers)."}
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules trained in full besides the selection. None: the model's classification head, found "
            "from its component map (the paper always trains the new head). [] trains no head."
        },
    )
    keep_original: bool = field(
        default=False,
        metadata={
            "help": "False (default, the paper): train the selected modules' own weights in "
            "place; the model then holds one adapter, and disable_adapter(), unload() and delete_adapter() raise, "
            "as no original weights remain. True: train a copy beside each frozen original, so those work and "
            "several adapters can share the model, at the cost of one more copy of the selected weights."
        },
    )
    signal: str = field(
        default="auto",
        metadata={
            "help": "What a measured report ranks by. 'auto' (default): the measured ranking, unless some "
            "LayerNorm's measured rate exceeds its theoretical bound (embedding tokens of spread < 1: the "
            "measurement is dominated by scale), then the paper's theoretical ranking, with the reason recorded. "
            "'measured': the measured ranking whatever it is. 'theory': the theoretical ranking (the report is "
            "kept as provenance). The evidence: benchmarks/results/reproduce and the README."
        },
    )
    score_source: str | None = field(
        default=None, metadata={"help": "Where the scores came from (filled in: report, mapping or theory)."}
    )
    selected_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "The resolved modules to train, most plastic first (filled in when the adapter is created; "
            "loading an adapter reuses it)."
        },
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names the tuner wraps (filled in: selected_modules)."},
    )
    base_model_shape: dict[str, int] | None = field(
        default=None,
        metadata={
            "help": "Depth and width of the model the adapter was made for (filled in; loading onto a model of "
            "another shape raises AdapterLoadError)."
        },
    )

    def __post_init__(self) -> None:
        ensure_peft_type()
        super().__post_init__()
        self.peft_type = PLASTICITY
        self._check_types()
        rules = [name for name in RULES if getattr(self, name, None) is not None]
        if len(rules) > 1:
            raise InvalidInputError(f"choose one selection rule, got {rules}; set only one of {list(RULES)}")
        if not rules:
            setattr(self, DEFAULT_RULE, DEFAULT_VALUE)
        name = self.rule
        setattr(self, name, RULES[name].check(getattr(self, name)))
        if self.layers is not None:
            if not self.layers or any(not isinstance(i, int) or i < 0 for i in self.layers):
                raise InvalidInputError(f"layers={self.layers} must be a non-empty list of layer indices >= 0")
            self.layers = sorted(set(self.layers))
        if self.signal not in SIGNALS:
            raise InvalidInputError(f"signal={self.signal!r}; choose one of {list(SIGNALS)}")
        if isinstance(self.scores, os.PathLike):
            self.scores = os.fspath(self.scores)  # plain data until the adapter is created (see from_report)
        if isinstance(self.scores, dict):
            from .scores import normalise_scores

            normalise_scores(self.scores, self.signal)  # refuse bad values now; resolved when the adapter is made
        elif self.scores is not None and not isinstance(self.scores, str | PlasticityReport):
            raise InvalidInputError(
                f"scores of type {type(self.scores).__name__} not understood; pass a PlasticityReport, a report path, "
                "or a mapping component -> score"
            )

    def _check_types(self) -> None:
        """Refuse values of the wrong type or range here, before torch meets them deep inside training."""
        if self.layers is not None and (
            not isinstance(self.layers, list | tuple) or not all(_is_int(i) for i in self.layers)
        ):
            raise InvalidInputError(
                f"layers={self.layers!r} must be a list of layer indices, e.g. layers=[{self.layers!r}]"
            )
        if self.modules_to_save is not None and (
            isinstance(self.modules_to_save, str) or not all(isinstance(m, str) for m in self.modules_to_save)
        ):
            raise InvalidInputError(
                f"modules_to_save={self.modules_to_save!r} must be a list of module names, e.g. ['classifier']"
            )

    @classmethod
    def check_kwargs(cls, **kwargs: Any) -> dict[str, Any]:
        """PEFT's hook on a saved ``adapter_config.json`` before the config is built: refuse a mode-'lora' adapter
        with the way forward, and drop the keys earlier versions saved in every config (``mode``, ``r``,
        ``lora_alpha``, ``lora_dropout``), which never changed what a mode-'full' adapter trains (PEFT would
        otherwise warn about them as keys of a newer version)."""
        if kwargs.get("mode") == "lora":
            raise lora_mode_removed(saved=True)
        kwargs = {k: v for k, v in kwargs.items() if k not in LEGACY_KEYS}
        return dict(super().check_kwargs(**kwargs))

    @classmethod
    def from_report(cls, report: PlasticityReport | str | os.PathLike[str], **kwargs: Any) -> PlasticityConfig:
        """A config whose scores are a measured report (or its saved JSON, loaded here once).

        ``score_source`` is filled in at once (what the ``signal`` guard decided, and why), so the choice can be
        read before a model exists; the scores themselves are resolved when the adapter is created.
        """
        from .scores import describe_scores

        source = kwargs.pop("score_source", None)
        if isinstance(report, str | os.PathLike):
            source = source or f"report {os.fspath(report)}"
            report = PlasticityReport.load(report)
        config = cls(scores=report, **kwargs)
        config.score_source = source or describe_scores(config)
        return config

    @property
    def in_place(self) -> bool:
        """Whether this adapter trains the model's own weights (without ``keep_original``)."""
        return not self.keep_original

    @property
    def rule(self) -> str:
        """The name of the selection rule this config applies (see :mod:`hf_plasticity.tuner.rules`)."""
        return next(name for name in RULES if getattr(self, name, None) is not None)

    def to_dict(self) -> dict[str, Any]:
        """PEFT's dict of the fields, plus the value of a registered rule that is no field (so it saves too)."""
        out = dict(super().to_dict())
        out.update({n: getattr(self, n) for n in RULES if n not in out and getattr(self, n, None) is not None})
        return out

    def resolved_scores(self) -> dict[str, Any]:
        """The JSON-ready scores this config selects by (what ``adapter_config.json`` stores), without changing it."""
        from .scores import scores_of

        return dict(scores_of(self))

    def resolved_score_source(self) -> str:
        """``score_source`` as the adapter will record it (already filled in by ``from_report`` and at creation)."""
        from .scores import describe_scores

        return self.score_source or describe_scores(self)

    def component_scores(self) -> dict[str, float]:
        """One score per component type (from the report, the mapping, or the theoretical ranking)."""
        return dict(self.resolved_scores()["components"])

    def given_module_scores(self) -> dict[str, float]:
        """Scores the user gave per module path in a mapping (else empty: component scores apply to every layer)."""
        return dict(self.resolved_scores().get("modules", {}))

    def module_scores(self) -> dict[str, float]:
        """Deprecated name of :meth:`given_module_scores`."""
        warnings.warn(
            "PlasticityConfig.module_scores() is now given_module_scores() (the scores given per module path)",
            FutureWarning,
            stacklevel=2,
        )
        return self.given_module_scores()


def _refuse_removed_arguments(init: Any) -> Any:
    """Wrap the dataclass ``__init__`` so arguments of the removed modes get a typed error naming the fix.

    ``mode`` is no longer a field (``check_kwargs`` alone carries saved configs that have it), so without this
    ``PlasticityConfig(mode="lora", r=8)`` would die in a bare ``TypeError``. ``mode="full"``, the one mode that
    remains, is what the config always does: it still works, with a ``FutureWarning`` to drop the argument, as
    PEFT deprecates its own arguments. A saved config (it carries ``peft_type``) reaches this ``__init__`` without
    ``check_kwargs`` when PEFT's base ``PeftConfig.from_pretrained`` reads it (transformers' ``load_adapter``), so
    the hook runs here for it too: an old file loads silently, whichever way it is read.
    """

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "peft_type" in kwargs:  # a saved adapter_config.json (PEFT and transformers build configs from its keys)
            kwargs = type(self).check_kwargs(**kwargs)
        if "mode" in kwargs:
            mode = kwargs.pop("mode")
            if mode == "lora":
                raise lora_mode_removed()
            if mode != "full":
                raise InvalidInputError(
                    f"mode={mode!r}: PlasticityConfig has no modes any more; it trains the selected modules' own "
                    f"weights (what mode='full' did): drop the argument. For LoRA use PEFT's: {_LORA_WAY}"
                )
            warnings.warn(
                "PlasticityConfig(mode='full') is deprecated: mode was removed, and training the selected modules' "
                "own weights is what PlasticityConfig always does; drop the argument",
                FutureWarning,
                stacklevel=2,
            )
        lora = [k for k in LEGACY_LORA_KEYS if k in kwargs]
        if lora:
            raise InvalidInputError(
                f"PlasticityConfig does not take the LoRA settings {lora} (mode='lora' was removed): "
                f"hf_plasticity has one LoRA implementation, PEFT's. {_LORA_WAY}"
            )
        for name in [n for n in kwargs if n in RULES and n not in _FIELDS]:  # a registered rule that is no field
            setattr(self, name, kwargs.pop(name))
        init(self, *args, **kwargs)

    return __init__


_FIELDS = {f.name for f in fields(PlasticityConfig)}
PlasticityConfig.__init__ = _refuse_removed_arguments(PlasticityConfig.__init__)  # type: ignore[method-assign]


_LORA_WAY = (
    "hf_plasticity.plasticity_lora_config(report, budget=..., model=...) returns a standard peft.LoraConfig, with "
    "ranks allocated from the measured plasticity (an adapter plain peft loads); for a fixed rank on the selected "
    "modules, use peft's own LoraConfig(target_modules=...)"
)


def lora_mode_removed(saved: bool = False) -> InvalidInputError:
    """The one error for ``mode="lora"``: hf_plasticity has one LoRA implementation, PEFT's."""
    if saved:
        return InvalidInputError(
            "this adapter was saved with PlasticityConfig(mode='lora'), which no longer exists: hf_plasticity has "
            f"one LoRA implementation, PEFT's. Retrain it as a PEFT LoRA adapter: {_LORA_WAY}. (Or, with the "
            "hf_plasticity version that saved it, merge it into the base model with export_merged.)"
        )
    return InvalidInputError(
        f"PlasticityConfig(mode='lora') was removed: hf_plasticity has one LoRA implementation, PEFT's. {_LORA_WAY}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
