"""Scores, from what a user passes (a report, its path, a mapping) to the plain JSON an adapter stores.

Part of the selection: it runs when the adapter is created (``resolve_scores``), never in the config's
constructor, so a ``PlasticityConfig`` stays data. The ``signal`` guard lives here: the one place that decides
whether a measurement is trusted, per component type (``top_k`` and the other type rules) or per cell
(a rule marked ``per_module``, such as ``budget``, and LoRA ranks).
"""

from __future__ import annotations

import math
from typing import Any, TypedDict, cast

from ..components import COMPONENTS, THEORETICAL_RANKING, validate_components
from ..errors import InvalidInputError
from ..report.report import PlasticityReport
from .rules import rule_of

_NORMALISED = {"components", "modules", "layers", "report"}
"""Keys of already-normalised scores (as adapter_config.json stores them)."""


class Scores(TypedDict, total=False):
    """What ``PlasticityConfig.scores`` holds once resolved, and what ``adapter_config.json`` stores.

    ``components``: one score per component type (what ``top_k`` ranks); ``modules``: scores given per module
    path; ``layers``: per component, the measured mean of each layer (``None``: not measured, or set aside by
    the ``auto`` guard); ``report``: the measurement's provenance (model, protocol, pairs, data, ranking, and the
    guard's ``fallback`` or ``guard`` reason).
    """

    components: dict[str, float]
    modules: dict[str, float]
    layers: dict[str, list[float | None]]
    report: dict[str, Any]


def scores_of(config: Any) -> Scores:
    """The config's scores as plain JSON (a report or a path normalised under its ``signal`` guard); pure."""
    if isinstance(config.scores, dict) and "components" in config.scores and set(config.scores) <= _NORMALISED:
        return cast(Scores, config.scores)
    scores = PlasticityReport.load(config.scores) if isinstance(config.scores, str) else config.scores
    return normalise_scores(scores, config.signal, per_layer=rule_of(config).per_module)[0]


def describe_scores(config: Any) -> str:
    """Where the config's scores come from, and what the guard decided: ``score_source`` in adapter_config.json."""
    if isinstance(config.scores, str):
        return f"report {config.scores}"
    if isinstance(config.scores, dict) and "components" in config.scores and set(config.scores) <= _NORMALISED:
        return "mapping"
    return normalise_scores(config.scores, config.signal, per_layer=rule_of(config).per_module)[1]


def resolve_scores(config: Any) -> PlasticityReport | None:
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
        else normalise_scores(report, config.signal, per_layer=rule_of(config).per_module)[0]
    )
    config.score_source = source
    return report


def theoretical_scores() -> dict[str, float]:
    """Rank-valued scores reproducing the paper's theoretical ranking (5 = most plastic)."""
    return {c: float(len(THEORETICAL_RANKING) - i) for i, c in enumerate(THEORETICAL_RANKING)}


def normalise_scores(scores: Any, signal: str = "auto", per_layer: bool = False) -> tuple[Scores, str]:
    """Turn a report, report path or mapping into JSON-ready ``{"components": ..., "modules": ...}``.

    ``per_layer``: the rule ranks single modules (``budget``, LoRA ranks), so the ``auto`` guard sets aside only
    the LayerNorm cells whose rate exceeds their bound instead of the whole measurement.
    """
    if scores is None:
        return {"components": theoretical_scores(), "modules": {}}, "theory (Odonnat et al., 2026)"
    if isinstance(scores, PlasticityReport):
        guarded, source = _guarded(scores, signal, per_layer)
        return cast(Scores, guarded), source
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
        return cast(Scores, kept), "mapping"
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
