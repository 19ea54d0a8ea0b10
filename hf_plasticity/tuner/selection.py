"""From scores and a rule to the list of modules to train: the decision a ``PlasticityConfig`` encodes.

Scores are looked up per (layer, component) through the model's component map, so a report measured on
``ViTModel`` applies to ``ViTForImageClassification`` of the same shape (their module paths differ by
the ``vit.`` prefix, their layers do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..components import (
    COMPONENTS,
    ResolvedComponents,
    rank_components,
    resolve_components,
)
from ..errors import InvalidInputError
from .config import PlasticityConfig
from .rules import Candidates, rule_of
from .scores import Scores, normalise_scores, resolve_scores, scores_of


@dataclass(frozen=True)
class Selection:
    """The chosen modules (most plastic first), their scores, and the head(s) trained alongside."""

    modules: list[str]
    scores: dict[str, float]
    components: dict[str, str]
    heads: list[str]


def select_modules(model: nn.Module, config: PlasticityConfig) -> Selection:
    """Apply the config's rule to the model; raises with the fix when nothing (sensible) is selected."""
    resolved = resolve_components(model)
    layers = _layers(config, resolved)
    heads = resolved.head_paths() if config.modules_to_save is None else _check_heads(model, config, resolved)
    candidates = {path: comp for layer, comp, path in resolved.iter_modules() if layer in layers}
    normalised = scores_of(config)
    scores = candidate_scores(normalised, resolved, candidates)
    places = {path: (layer, comp) for layer, comp, path in resolved.iter_modules() if path in candidates}
    scored = rank_components({p: scores[p] for p in candidates if p in scores}, places)
    rule = rule_of(config)
    context = Candidates(
        components=candidates,
        scores=scores,
        ranked=scored,
        type_scores=_type_scores(normalised, scores, candidates),
        heads=heads,
        cost=lambda path: _component_cost(model, path),
        base_parameters=lambda: base_parameter_count(model),
    )
    chosen = rule.select(context, getattr(config, rule.name))
    if not chosen:
        raise InvalidInputError(
            f"the {rule.name} rule selected no module (layers {sorted(layers)}); widen the selection"
        )
    # a component made of several modules (stacked gate/up, attention + its output projection) trains them all
    expand = resolved.modules_of
    return Selection(
        modules=[m for p in chosen for m in expand(p)],
        scores={m: scores[p] for p in chosen if p in scores for m in expand(p)},
        components={m: candidates[p] for p in chosen for m in expand(p)},
        heads=heads,
    )


def base_modules(module: nn.Module) -> list[nn.Module]:
    """The base model's own modules under ``module``: adapters already on the model (their layers' factors and
    copies, PEFT's saved-module copies) are looked through, so a second adapter sees the model the first saw."""
    from peft.utils.other import ModulesToSaveWrapper

    if isinstance(module, BaseTunerLayer):
        return base_modules(module.get_base_layer())
    if isinstance(module, ModulesToSaveWrapper):
        return base_modules(module.original_module)
    found = [module]
    for child in module.children():
        found.extend(base_modules(child))
    return found


def base_parameter_count(module: nn.Module) -> int:
    """Parameters the base model itself holds under ``module`` (adapters excluded; shared tensors once)."""
    seen = {id(p): p.numel() for m in base_modules(module) for p in m.parameters(recurse=False)}
    return sum(seen.values())


def _check_heads(model: nn.Module, config: PlasticityConfig, resolved: ResolvedComponents) -> list[str]:
    """``modules_to_save`` names must match a module (as PEFT matches them: a path or its last parts)."""
    saved = list(config.modules_to_save or [])
    names = [n for n, _ in model.named_modules() if n]
    unmatched = [h for h in saved if not any(n == h or n.endswith("." + h) for n in names)]
    # PeftModelForSequenceClassification appends both of its usual head names to every config ("classifier",
    # "score"); a model has one of them, so the other matching nothing is PEFT's doing, not the user's mistake
    added = [h for h in _PEFT_SEQ_CLS_HEADS if h in unmatched] if _task(config) == "SEQ_CLS" else []
    if added and len(added) < len(_PEFT_SEQ_CLS_HEADS):
        unmatched = [h for h in unmatched if h not in added]
    else:
        added = []
    if unmatched:
        raise InvalidInputError(
            f"modules_to_save={config.modules_to_save}: {unmatched} match no module of this model, so the head would "
            f"stay frozen; this model's head is {resolved.head_paths()} (pass modules_to_save=None to train it, or [] "
            "to train no head)"
        )
    return list(dict.fromkeys(h for h in saved if h not in added))


_PEFT_SEQ_CLS_HEADS = ("classifier", "score")


def _task(config: PlasticityConfig) -> str | None:
    task = getattr(config, "task_type", None)
    return None if task is None else str(getattr(task, "value", task))


def _component_cost(model: nn.Module, name: str) -> int:
    """What training a component costs: the sum over the modules its name stands for (``a+b``)."""
    return sum(base_parameter_count(model.get_submodule(p)) for p in ResolvedComponents.modules_of(name))


def _layers(config: PlasticityConfig, resolved: ResolvedComponents) -> set[int]:
    if config.layers is None:
        return set(range(resolved.num_layers))
    bad = [i for i in config.layers if i >= resolved.num_layers]
    if bad:
        raise InvalidInputError(
            f"layers {bad} do not exist: the model has {resolved.num_layers} layers (0..{resolved.num_layers - 1})"
        )
    return set(config.layers)


def candidate_scores(normalised: Scores, resolved: ResolvedComponents, candidates: dict[str, str]) -> dict[str, float]:
    """The score each candidate module is ranked by: its per-layer report mean, else the score given for its
    path, else its component type's score (one value per module, what every rule selects on).

    ``normalised`` is a config's resolved ``scores``; a per-layer cell left ``None`` (not measured, or set aside
    by the ``auto`` guard) leaves its module unscored, so no rule ranks it.
    """
    per_layer = normalised.get("layers") or {}
    modules = dict(normalised.get("modules") or {})
    comps = dict(normalised.get("components") or {})
    report = normalised.get("report") or {}
    model_type = getattr(resolved.model.config, "model_type", None)
    if report.get("model_type") and report["model_type"] != model_type:
        raise InvalidInputError(
            f"the scores come from a {report['model_type']!r} model but this is a {model_type!r} model; measure "
            "this architecture first"
        )
    unknown = [m for m in modules if m not in candidates and m not in dict(resolved.model.named_modules())]
    if unknown:
        raise InvalidInputError(f"scored modules {unknown[:3]} are not in this model; use its named_modules() paths")
    out: dict[str, float] = {}
    for layer in range(resolved.num_layers):
        for comp in COMPONENTS:
            path = resolved.paths[comp][layer]
            if path not in candidates:
                continue
            if comp in per_layer:
                if len(per_layer[comp]) != resolved.num_layers:
                    raise InvalidInputError(
                        f"the report has {len(per_layer[comp])} layers but the model has {resolved.num_layers}; "
                        "measure this model"
                    )
                value = per_layer[comp][layer]
            elif path in modules:
                value = modules[path]
            elif comp in comps:
                value = comps[comp]
            else:
                continue
            if value is not None and math.isfinite(value):
                out[path] = float(value)
    return out


def _type_scores(normalised: Scores, scores: dict[str, float], candidates: dict[str, str]) -> dict[str, float]:
    """Score of each component type: the config's own, else the mean of its modules' scores."""
    comps = {c: v for c, v in normalised["components"].items() if v is not None and math.isfinite(v)}
    for comp in {candidates[p] for p in scores} - set(comps):
        same = [scores[p] for p in scores if candidates[p] == comp]
        comps[comp] = sum(same) / len(same)
    return comps


__all__ = [
    "Selection",
    "base_modules",
    "base_parameter_count",
    "candidate_scores",
    "normalise_scores",
    "resolve_scores",
    "scores_of",
    "select_modules",
]
