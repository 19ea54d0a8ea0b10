"""The card's ``plasticity:`` metadata block: what was measured, what chose the modules, what was trained.

The block is bounded whatever the depth of the model: the component ranking, the :data:`TOP_MODULES` most
plastic modules and counts, never one entry per layer (the full per-layer table is in
``plasticity_report.json`` and in the card's body). ``ModelCard.load(...).data.plasticity`` returns it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ...components import COMPONENTS, rank_components
from ...errors import ModelCardError, PlasticityError
from ...io import jsonable
from ...report.report import PlasticityReport
from .common import PAPER, REPORT_NAME, TOP_MODULES, finite_or_low, num, version
from .sources import plasticity_config_of, public_name, public_score_source, report_of

if TYPE_CHECKING:
    from ...tuner.config import PlasticityConfig

MEASURED, THEORY, GIVEN, NAMED = "measured ranking", "theoretical ranking", "given scores", "named components"
"""What can choose the modules (``selected_by``)."""
LORA_RULE, CONFIGURED = "plasticity_lora_config", "configured ranks"
"""The rule of a LoRA adapter whose ranks follow the measurement, and what sets them otherwise (``selected_by``)."""


def plasticity_metadata(
    report: PlasticityReport | None = None,
    config: PlasticityConfig | None = None,
    model: Any = None,
    adapter_name: str = "default",
) -> dict[str, Any]:
    """The ``plasticity:`` metadata block: measurement, ranking, top modules, what chose them, training.

    Any of the three may be missing: a report alone gives the measurement; a config adds the rule, what
    chose the modules (``signal``, ``selected_by``, ``fallback``) and the trained modules (its stored scores
    stand in for a missing report); a PEFT model adds the parameter counts and its own module paths.
    """
    if config is None and model is not None:
        config = plasticity_config_of(model, adapter_name)
    if report is None:
        report = report_of(config, model, adapter_name)
    if report is None and config is None:
        raise ModelCardError("a plasticity card needs a PlasticityReport, a PlasticityConfig or a plasticity model")
    paths = module_paths(report, model) if report is not None else None
    block: dict[str, Any] = {"paper": PAPER, "library": f"hf-plasticity {version()}"}
    block.update(_measurement(report, paths) if report is not None else _stored_scores(config))
    if config is not None:
        block.update(choice(config))
        block["selection"] = _selection(config)
        trained = trained_components(config, paths)
        if trained is not None:
            for row in block["ranking"]:
                row["trained"] = row["component"] in trained
        selected = list(config.selected_modules or [])
        # None until the config is applied to a model (get_peft_model resolves the modules)
        block["trained"] = {"modules": len(selected) or None, "components": dict(trained or {})}
        block["modules_to_save"] = list(config.modules_to_save or [])
    if model is not None and hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        block["trainable_parameters"] = int(trainable)
        block["total_parameters"] = int(total)
        block["trainable_share"] = num(trainable / total) if total else None
    return block


def choice(config: PlasticityConfig) -> dict[str, Any]:
    """What chose the modules: ``signal`` asked, ``selected_by`` (which ranking), ``fallback`` (why not the measured).

    Read from the plain scores the config saves (``adapter_config.json``), so a saved adapter says the same.
    ``fallback`` is set only when ``signal="auto"`` set a measurement aside; a ``signal="theory"`` choice is
    the user's and needs no excuse.
    """
    from ...tuner.rules import rule_of  # lazily: importing the tuner imports PEFT, whose hooks import the cards

    measured = config.resolved_scores().get("report") or {}
    why = measured.get("fallback")
    if not rule_of(config).ranked:
        by = NAMED
    elif measured:
        by = THEORY if why else MEASURED
    elif str(config.resolved_score_source()).startswith("theory"):
        by = THEORY
    else:
        by = GIVEN
    fallback = why if by == THEORY and why and config.signal == "auto" else None
    return {"signal": config.signal, "selected_by": by, "fallback": fallback}


def trained_components(config: PlasticityConfig, paths: dict[str, list[str]] | None) -> dict[str, int | None] | None:
    """How many modules of each component type were trained (None: the types cannot be told without the model;
    a count of None: the config is not applied to a model yet)."""
    selected = list(config.selected_modules or [])
    if selected and paths:
        counts: Counter[str] = Counter()
        for module in selected:
            comp = next((c for c, ps in paths.items() for p in ps if module == p or module.endswith("." + p)), None)
            if comp is not None:
                counts[comp] += 1
        if sum(counts.values()) == len(selected):
            return {c: counts[c] for c in COMPONENTS if counts[c]}
    from ...tuner.rules import rule_of

    rule = rule_of(config)
    names = rule.trained_types(getattr(config, rule.name), config.component_scores())
    if names is None:  # a rule that picks single modules: only the module paths tell their types
        return None
    per_type = len(selected) // len(names) if selected and names and len(selected) % len(names) == 0 else None
    return {c: per_type for c in names}


def module_paths(report: PlasticityReport, model: Any) -> dict[str, list[str]]:
    """The trained model's own module paths when known (a report of ``ViTModel`` lacks the ``vit.`` prefix)."""
    if model is None:
        return report.module_paths
    from ...components import resolve_components

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        resolved = resolve_components(base)
    except PlasticityError:
        return report.module_paths
    if resolved.num_layers != report.num_layers:
        return report.module_paths
    return {c: list(resolved.paths[c]) for c in report.components}


def _measurement(report: PlasticityReport, paths: dict[str, list[str]]) -> dict[str, Any]:
    stats = report.summary()
    mean, ci, bounds = report.mean, report.ci95, report.bounds
    cells = [
        {
            "module": paths[comp][layer],
            "layer": layer,
            "component": comp,
            "score": num(mean[layer, c]),
            "ci95": num(ci[layer, c]),
            **({"bound": num(bounds[layer, c])} if bounds is not None else {}),
        }
        for layer in range(report.num_layers)
        for c, comp in enumerate(report.components)
    ]
    ranking = []
    for comp, s in stats.items():
        row: dict[str, Any] = {"component": comp, "score": num(s.mean), "ci95": num(s.ci95), "n": int(s.n)}
        if bounds is not None:
            row["bound"] = num(s.bound)  # the largest over layers
        ranking.append(row)
    out: dict[str, Any] = {
        "protocol": report.protocol,
        "pairs": int(report.num_pairs),
        "excluded_pairs": int(report.excluded_pairs),
        "data": _data(report.data_name, report.reference_name, report.seed),
        "measured_model": {
            "model_id": public_name(report.model.get("model_id"), "checkpoint"),
            "model_type": report.model.get("model_type"),
            "config_hash": report.model.get("config_hash"),
        },
        "score_source": "report",
        "ranking": ranking,
        "num_layers": int(report.num_layers),
        "top_modules": _top(cells),
        "per_layer": f"{REPORT_NAME} and the card's per-layer table",
    }
    if report.tokens:
        out["embedding"] = {
            "radius": num(report.radius),
            "token_spread": num(report.token_spread),
            "tokens": report.seq_len,
        }
    return out


def _stored_scores(config: PlasticityConfig) -> dict[str, Any]:
    """What a config alone knows: the scores it was given and where they came from (no intervals)."""
    provenance = config.resolved_scores().get("report") or {}
    out: dict[str, Any] = {"score_source": public_score_source(config.resolved_score_source())}
    if provenance.get("fallback") and provenance.get("ranking"):  # the measured order; its scores were set aside
        out["ranking"] = [{"component": c} for c in provenance["ranking"]]
    else:
        scores = config.component_scores()
        out["ranking"] = [{"component": c, "score": num(scores[c])} for c in rank_components(scores)]
    if provenance:
        out["protocol"] = provenance.get("protocol")
        out["pairs"] = provenance.get("num_pairs")
        out["data"] = _data(provenance.get("data"), provenance.get("reference"), None)
        out["measured_model"] = {
            "model_id": public_name(provenance.get("model_id"), "checkpoint"),
            "model_type": provenance.get("model_type"),
            "config_hash": provenance.get("config_hash"),
        }
    per_layer = config.resolved_scores().get("layers") or {}
    if per_layer:
        out["num_layers"] = max(len(v) for v in per_layer.values())
        cells = [
            {"layer": layer, "component": c, "score": num(v[layer])}
            for c, v in per_layer.items()
            for layer in range(len(v))
        ]
        out["top_modules"] = _top(cells)
    return out


def _data(downstream: str | None, reference: str | None, seed: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"downstream": public_name(downstream), "reference": public_name(reference)}
    out["pairs_from"] = "reference and downstream" if reference else "within the downstream data"
    if seed is not None:
        out["seed"] = seed
    return out


def _top(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The :data:`TOP_MODULES` most plastic (layer, component) cells, by the one ranking rule."""
    known = {str(i): c for i, c in enumerate(cells) if c["score"] is not None}
    ranked = rank_components(
        {i: c["score"] for i, c in known.items()}, {i: (c["layer"], c["component"]) for i, c in known.items()}
    )
    return [known[i] for i in ranked[:TOP_MODULES]]


def _selection(config: PlasticityConfig) -> dict[str, Any]:
    rule = config.rule
    out: dict[str, Any] = {"rule": rule, "value": jsonable(getattr(config, rule), digits=6)}
    out["layers"] = list(config.layers) if config.layers is not None else "all"
    out["keep_original"] = bool(config.keep_original)
    return out


# ---------------------------------------------------------------------------------------- LoRA adapters
def lora_metadata(report: PlasticityReport, config: Any, model: Any, adapter_name: str = "default") -> dict[str, Any]:
    """The ``plasticity:`` block of a PEFT LoRA adapter: the report's measurement, then the ranks the model trains.

    ``selection.targets`` lists every adapted linear with the rank and alpha its LoRA layer holds (one entry per
    linear, as ``adapter_config.json``'s ``rank_pattern``), highest rank first. ``selection.rule`` is
    ``plasticity_lora_config`` when the config has that function's shape (a rank and alpha = rank for every
    target), else ``configured``: the ranks are then as configured and the measurement is shown beside them.
    ``trainable_share`` is the trainable parameters over the *base* model's (the budget's denominator).
    """
    from ...tuner.selection import base_parameter_count

    paths = module_paths(report, model)
    block: dict[str, Any] = {"paper": PAPER, "library": f"hf-plasticity {version()}"}
    block.update(_measurement(report, paths))
    allocated = allocated_by_rule(config)
    block["selected_by"] = MEASURED if allocated else CONFIGURED
    targets = lora_targets(model, adapter_name, report, paths)
    saved = list(config.modules_to_save or [])
    located = [_locate(t["module"], paths) for t in targets] + [_locate(m, paths) for m in saved]
    counts = Counter(comp for comp, _ in located if comp is not None)
    for row in block["ranking"]:
        row["trained"] = row["component"] in counts
    block["selection"] = {
        "rule": LORA_RULE if allocated else "configured",
        "method": "lora",
        "r": int(config.r),
        "lora_alpha": num(config.lora_alpha),
        "targets": targets,
    }
    block["trained"] = {"modules": len(targets), "components": {c: counts[c] for c in COMPONENTS if counts[c]}}
    block["modules_to_save"] = saved
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = base_parameter_count(model.get_base_model())
    block["trainable_parameters"] = int(trainable)
    block["base_parameters"] = int(base)
    block["trainable_share"] = num(trainable / base) if base else None
    return block


def allocated_by_rule(config: Any) -> bool:
    """Whether a ``LoraConfig`` has the shape :func:`hf_plasticity.plasticity_lora_config` gives it: every target
    named in ``rank_pattern``, with alpha equal to its rank (the config does not record who made it)."""
    ranks = dict(config.rank_pattern or {})
    targets = config.target_modules
    if not ranks or isinstance(targets, str) or set(targets or []) != set(ranks):
        return False
    return dict(config.alpha_pattern or {}) == ranks


def lora_targets(
    model: Any, adapter_name: str, report: PlasticityReport, paths: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Each LoRA layer of ``adapter_name``: its path, component, layer, measured cell mean, rank and alpha."""
    from peft.tuners.lora import LoraLayer

    rows = []
    for order, (name, module) in enumerate(model.get_base_model().named_modules()):
        if not isinstance(module, LoraLayer) or adapter_name not in module.r:
            continue
        comp, layer = _locate(name, paths)
        score = None
        if comp is not None and layer is not None and comp in report.components:
            score = num(report.mean[layer, report.components.index(comp)])
        row: dict[str, Any] = {"module": name, "component": comp, "layer": layer, "score": score}
        row["rank"] = int(module.r[adapter_name])
        row["alpha"] = num(module.lora_alpha[adapter_name])
        rows.append((order, row))
    if not rows:
        raise ModelCardError(f"the LoRA adapter {adapter_name!r} adapts no module of the model; nothing to card")
    rows.sort(key=lambda item: (-item[1]["rank"], -finite_or_low(item[1]["score"]), item[0]))
    return [row for _, row in rows]


def _locate(module: str, paths: dict[str, list[str]]) -> tuple[str | None, int | None]:
    """The (component, layer) a module path belongs to (it is the component's module or inside it)."""
    for comp, per_layer in paths.items():
        for layer, path in enumerate(per_layer):
            if module == path or module.startswith(path + ".") or module.endswith("." + path):
                return comp, layer
    return None, None
