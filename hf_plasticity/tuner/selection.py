"""From scores and a rule to the list of modules to train: the decision a ``PlasticityConfig`` encodes.

Scores are looked up per (layer, component) through the model's component map, so a report measured on
``ViTModel`` applies to ``ViTForImageClassification`` of the same shape (their module paths differ by
the ``vit.`` prefix, their layers do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..components import (
    COMPONENTS,
    THEORETICAL_RANKING,
    ResolvedComponents,
    rank_components,
    resolve_components,
    validate_components,
)
from ..errors import InvalidInputError
from ..report import PlasticityReport
from .config import PlasticityConfig

_NORMALISED = {"components", "modules", "layers", "report"}


@dataclass(frozen=True)
class Selection:
    """The chosen modules (most plastic first), their scores, and the head(s) trained alongside."""

    modules: list[str]
    scores: dict[str, float]
    components: dict[str, str]
    heads: list[str]


def scores_of(config: PlasticityConfig) -> dict[str, Any]:
    """The config's scores as plain JSON (a report or a path normalised under its ``signal`` guard); pure."""
    if isinstance(config.scores, dict) and "components" in config.scores and set(config.scores) <= _NORMALISED:
        return config.scores
    scores = PlasticityReport.load(config.scores) if isinstance(config.scores, str) else config.scores
    return normalise_scores(scores, config.signal, per_layer=config.budget is not None)[0]


def describe_scores(config: PlasticityConfig) -> str:
    """Where the config's scores come from, and what the guard decided: ``score_source`` in adapter_config.json."""
    if isinstance(config.scores, str):
        return f"report {config.scores}"
    if isinstance(config.scores, dict) and "components" in config.scores and set(config.scores) <= _NORMALISED:
        return "mapping"
    return normalise_scores(config.scores, config.signal, per_layer=config.budget is not None)[1]


def resolve_scores(config: PlasticityConfig) -> PlasticityReport | None:
    """Resolve the config's scores in place, when the adapter is created; returns the measured report, if any.

    After this the config holds only plain values (``scores`` and ``score_source`` as adapter_config.json stores
    them); the report itself is kept by the tuner model (``PlasticityModel.plasticity_reports``) for cards.
    """
    report = config.scores if isinstance(config.scores, PlasticityReport) else None
    if isinstance(config.scores, str):
        report = PlasticityReport.load(config.scores)
    source = config.score_source or describe_scores(config)
    config.scores = (
        scores_of(config)
        if report is None
        else normalise_scores(report, config.signal, per_layer=config.budget is not None)[0]
    )
    config.score_source = source
    return report


def select_modules(model: nn.Module, config: PlasticityConfig) -> Selection:
    """Apply the config's rule to the model; raises with the fix when nothing (sensible) is selected."""
    resolved = resolve_components(model)
    layers = _layers(config, resolved)
    heads = resolved.head_paths() if config.modules_to_save is None else _check_heads(model, config, resolved)
    candidates = {path: comp for layer, comp, path in resolved.iter_modules() if layer in layers}
    normalised = scores_of(config)
    scores = module_scores(normalised, resolved, candidates)
    # candidates are in model order, so ties go to the shallower layer, then the canonical component order
    scored = rank_components({p: scores[p] for p in candidates if p in scores})
    rule = config.rule
    if rule == "components":
        chosen = [p for p in scored if candidates[p] in config.components]
        chosen += [p for p in candidates if candidates[p] in config.components and p not in scores]
    elif rule == "top_k":
        comp_scores = _type_scores(normalised, scores, candidates)
        if config.top_k > len(comp_scores):
            raise InvalidInputError(
                f"top_k={config.top_k} but only {len(comp_scores)} component types have scores "
                f"({sorted(comp_scores)}); lower top_k or measure more components"
            )
        ranked = rank_components(comp_scores)
        chosen = [p for p in scored if candidates[p] in ranked[: config.top_k]]
    elif rule == "threshold":
        chosen = [p for p in scored if scores[p] >= config.threshold]
        if not chosen:
            values = [scores[p] for p in scored]
            raise InvalidInputError(
                f"no module has plasticity >= threshold={config.threshold} (scores range "
                f"{min(values, default=math.nan):.4g} .. {max(values, default=math.nan):.4g}); lower the threshold"
            )
    else:
        chosen = _fill_budget(model, config, scored, heads)
    if not chosen:
        raise InvalidInputError(f"the {rule} rule selected no module (layers {sorted(layers)}); widen the selection")
    return Selection(
        modules=chosen,
        scores={p: scores[p] for p in chosen if p in scores},
        components={p: candidates[p] for p in chosen},
        heads=heads,
    )


def lora_targets(model: nn.Module, modules: list[str]) -> list[str]:
    """The linear layers inside the selected modules, or the module itself when it has none (LayerNorm).

    A linear already wrapped by LoRA (a second LoRA adapter) is targeted as it stands, not looked into.
    """
    from peft.tuners.lora.layer import LoraLayer

    targets = []
    for path in modules:
        module = model.get_submodule(path)
        if isinstance(module, nn.Linear | LoraLayer):
            targets.append(path)
            continue
        found: list[str] = []
        for name, sub in module.named_modules():
            if not name or any(name.startswith(f + ".") for f in found):
                continue
            if isinstance(sub, nn.Linear | LoraLayer):
                found.append(name)
        targets.extend([f"{path}.{n}" for n in found] or [path])
    return targets


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


def trainable_cost(module: nn.Module, config: PlasticityConfig) -> int:
    """Parameters that training ``module`` adds: all of them (full), or its LoRA factors (lora)."""
    if config.mode == "full":
        return base_parameter_count(module)
    linears = [m for m in base_modules(module) if isinstance(m, nn.Linear)]
    if not linears:
        return base_parameter_count(module)
    return sum(config.r * (m.in_features + m.out_features) for m in linears)


def _check_heads(model: nn.Module, config: PlasticityConfig, resolved: ResolvedComponents) -> list[str]:
    """``modules_to_save`` names must match a module (as PEFT matches them: a path or its last parts)."""
    names = [n for n, _ in model.named_modules() if n]
    unmatched = [h for h in config.modules_to_save if not any(n == h or n.endswith("." + h) for n in names)]
    if unmatched:
        raise InvalidInputError(
            f"modules_to_save={config.modules_to_save}: {unmatched} match no module of this model, so the head would "
            f"stay frozen; this model's head is {resolved.head_paths()} (pass modules_to_save=None to train it, or [] "
            "to train no head)"
        )
    return list(config.modules_to_save)


def _fill_budget(model: nn.Module, config: PlasticityConfig, scored: list[str], heads: list[str]) -> list[str]:
    total = base_parameter_count(model)
    allowance = config.budget * total
    head_cost = sum(base_parameter_count(model.get_submodule(h)) for h in heads)
    if head_cost > allowance:
        raise InvalidInputError(
            f"budget={config.budget} allows {int(allowance)} parameters but the head(s) {heads} alone have "
            f"{head_cost}; raise the budget or pass modules_to_save=[]"
        )
    used, chosen = head_cost, []
    for path in scored:
        cost = trainable_cost(model.get_submodule(path), config)
        if used + cost <= allowance:
            chosen.append(path)
            used += cost
    if not chosen:
        smallest = min((trainable_cost(model.get_submodule(p), config) for p in scored), default=0)
        raise InvalidInputError(
            f"budget={config.budget} ({int(allowance)} parameters, {head_cost} taken by the head) fits no module; "
            f"the smallest needs {smallest}: raise the budget"
        )
    return chosen


def _layers(config: PlasticityConfig, resolved: ResolvedComponents) -> set[int]:
    if config.layers is None:
        return set(range(resolved.num_layers))
    bad = [i for i in config.layers if i >= resolved.num_layers]
    if bad:
        raise InvalidInputError(
            f"layers {bad} do not exist: the model has {resolved.num_layers} layers (0..{resolved.num_layers - 1})"
        )
    return set(config.layers)


def module_scores(
    normalised: dict[str, Any], resolved: ResolvedComponents, candidates: dict[str, str]
) -> dict[str, float]:
    """Score of every candidate: per-layer report means, else explicit module scores, else its type's score.

    ``normalised`` is a config's resolved ``scores``; a per-layer cell left ``None`` (not measured, or set aside
    by the ``auto`` guard) leaves its module unscored, so no rule ranks it.
    """
    per_layer = normalised.get("layers") or {}
    modules = dict(normalised.get("modules") or {})
    comps = dict(normalised.get("components") or {})
    report = normalised.get("report") or {}
    if report.get("model_type") and report["model_type"] != getattr(resolved.model.config, "model_type", None):
        raise InvalidInputError(
            f"the scores come from a {report['model_type']!r} model but this is a "
            f"{resolved.model.config.model_type!r} model; measure this architecture first"
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


def _type_scores(normalised: dict[str, Any], scores: dict[str, float], candidates: dict[str, str]) -> dict[str, float]:
    """Score of each component type: the config's own, else the mean of its modules' scores."""
    comps = {c: v for c, v in normalised["components"].items() if v is not None and math.isfinite(v)}
    for comp in {candidates[p] for p in scores} - set(comps):
        same = [scores[p] for p in scores if candidates[p] == comp]
        comps[comp] = sum(same) / len(same)
    return comps


# ------------------------------------------------------------------ scores: from a report or mapping to plain JSON
def theoretical_scores() -> dict[str, float]:
    """Rank-valued scores reproducing the paper's theoretical ranking (5 = most plastic)."""
    return {c: float(len(THEORETICAL_RANKING) - i) for i, c in enumerate(THEORETICAL_RANKING)}


def normalise_scores(scores: Any, signal: str = "auto", per_layer: bool = False) -> tuple[dict[str, Any], str]:
    """Turn a report, report path or mapping into JSON-ready ``{"components": ..., "modules": ...}``.

    ``per_layer``: the rule ranks single modules (``budget``, LoRA ranks), so the ``auto`` guard sets aside only
    the LayerNorm cells whose rate exceeds their bound instead of the whole measurement.
    """
    if scores is None:
        return {"components": theoretical_scores(), "modules": {}}, "theory (Odonnat et al., 2026)"
    if isinstance(scores, PlasticityReport):
        return _guarded(scores, signal, per_layer)
    if (
        isinstance(scores, dict)
        and set(scores) <= {"components", "modules", "layers", "report"}
        and "components" in scores
    ):
        # already normalised (e.g. read back from adapter_config.json): keep it whole, provenance included
        kept = {
            **scores,
            "components": dict(scores["components"]),
            "modules": dict(scores.get("modules", {})),
        }
        return kept, "mapping"
    if isinstance(scores, dict):
        bad_values = {k: v for k, v in scores.items() if not (_is_number(v) and math.isfinite(v))}
        if bad_values:
            name, value = next(iter(bad_values.items()))
            raise InvalidInputError(
                f"scores[{name!r}]={value!r} is not a finite number; scores map a component type (or module path) "
                f"to a plasticity score, e.g. {{{name!r}: 2.0}} (measure with measure_plasticity, or pass "
                "scores=None for the paper's ranking)"
            )
        comps = {k: float(v) for k, v in scores.items() if k in COMPONENTS}
        modules = {k: float(v) for k, v in scores.items() if k not in COMPONENTS}
        bad = [k for k in modules if "." not in k]
        if bad:
            validate_components(bad)  # raises UnknownComponentError naming the valid types
        return {"components": comps, "modules": modules}, "mapping"
    raise InvalidInputError(
        f"scores of type {type(scores).__name__} not understood; pass a PlasticityReport, a report path, or a "
        "mapping component -> score"
    )


def _guarded(report: PlasticityReport, signal: str, per_layer: bool = False) -> tuple[dict[str, Any], str]:
    """The report's scores, or the theoretical ones when ``signal`` asks or the guard trips (recorded).

    A per-module rule keeps the measurement and leaves the scale-dominated cells unranked: on the bundled ViT the
    in-situ guard trips on layer 0's two LayerNorms only, and the other 28 cells are what budget and LoRA ranks
    follow (README, *Parameter budgets*).
    """
    measured = _from_report(report)
    exceeding = report.exceeding_bounds() if signal == "auto" else []
    if signal == "measured" or (signal == "auto" and not exceeding):
        return measured, "report"
    if per_layer and exceeding:
        for comp, layer, _, _ in exceeding:
            measured["layers"][comp][layer] = None
        cells = ", ".join(f"{comp}@{layer}" for comp, layer, _, _ in exceeding)
        why = (
            f"{len(exceeding)} LayerNorm cell(s) measured above their theoretical bound ({cells}; embedding token "
            f"spread {report.token_spread:.3g} < 1) are dominated by scale and left unranked"
        )
        measured["report"]["guard"] = why
        return measured, "report (" + why + ")"
    if exceeding:
        comp, layer, value, bound = max(exceeding, key=lambda cell: cell[2] / cell[3])
        why = (
            f"{len(exceeding)} LayerNorm cell(s) measured above their theoretical bound (largest: {comp} of layer "
            f"{layer}, {value:.3g} > max |gain| {bound:.3g}; embedding token spread {report.token_spread:.3g} < 1): "
            "the measurement is dominated by scale, so the theoretical ranking was used"
        )
    else:
        why = "signal='theory': the theoretical ranking was used"
    measured["report"]["fallback"] = why
    return {**measured, "components": theoretical_scores(), "layers": {}}, "theory (report: " + why + ")"


def _from_report(report: PlasticityReport) -> dict[str, Any]:
    return {
        "components": report.scores(),
        "layers": {
            comp: [None if not math.isfinite(v) else float(v) for v in report.mean[:, i]]
            for i, comp in enumerate(report.components)
        },
        "modules": {},
        "report": {
            "model_id": report.model.get("model_id"),
            "model_type": report.model.get("model_type"),
            "config_hash": report.model.get("config_hash"),
            "protocol": report.protocol,
            "num_pairs": report.num_pairs,
            "data": report.data_name,
            "reference": report.reference_name,
            "ranking": report.ranking(),
        },
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
