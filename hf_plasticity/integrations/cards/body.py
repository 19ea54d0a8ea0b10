"""The card's prose and tables, from the metadata block: every sentence states only what the block records.

Tables come from :mod:`hf_plasticity.report.tables`, the renderer of ``report.to_markdown()``; the card adds
its marks (trained components, each layer's most plastic and trained modules) through that renderer.
"""

from __future__ import annotations

from typing import Any

from ...components import THEORETICAL_RANKING
from ...report.report import PlasticityReport
from ...report.tables import Cell, layer_cells, layer_table, pairs_sentence, ranking_table
from .common import fmt
from .metadata import GIVEN, LORA_RULE, MEASURED, NAMED, THEORY

THEORY_TEXT = "the paper's theoretical ranking (" + " > ".join(THEORETICAL_RANKING) + ")"


def summary(block: dict[str, Any], base_model: str | None, local: bool, is_adapter: bool) -> str:
    """The card's opening sentence: what the model is and what chose its trained modules."""
    base = f"`{base_model}`" if base_model else "a local checkpoint (not on the Hub)" if local else "its base model"
    if not is_adapter:
        measured = (block.get("measured_model") or {}).get("model_id")
        known = base_model or measured
        name = f"`{known}`" if known and not known.startswith("a local ") else "This model"
        name += f", from {known}" if known and known.startswith("a local ") else ""
        return f"{name}, with the plasticity of its components measured by hf-plasticity."
    sel, by = block["selection"], block["selected_by"]
    share = block.get("trainable_share")
    tail = f" {share:.2%} of the parameters are trainable." if share is not None else ""
    n = _modules(block)
    if by == NAMED:
        return f"A finetune of {base} that trains {_rule_words(sel)}, as it was told: {n}.{tail}"
    head = f"A finetune of {base} that trains {n} chosen by the `{sel['rule']}` rule from "
    if by == MEASURED:
        return (
            f"A finetune of {base} that trains only its most plastic components, as measured (Odonnat et al., "
            f"2026): {n} chosen by the `{sel['rule']}` rule from the measured ranking.{tail}"
        )
    if by == GIVEN:
        return head + f"plasticity scores given by hand ({block.get('score_source')}).{tail}"
    if block.get("fallback"):
        return (
            head
            + f"{THEORY_TEXT}, not from the measurement below, which was set aside (the reason is given below).{tail}"
        )
    if block.get("pairs"):
        return head + f'{THEORY_TEXT}, as asked (`signal="theory"`), not from the measurement below.{tail}'
    return head + f"{THEORY_TEXT}; no measurement was made.{tail}"


def choice_text(block: dict[str, Any], report: PlasticityReport | None = None) -> str:
    """How the modules were chosen: the rule, the signal, which ranking chose them, and why if not the measured one."""
    sel = block.get("selection")
    if not sel:
        return ""
    by = block["selected_by"]
    lines = [f"- **Rule:** `{sel['rule']}={_value(sel['value'])}`: {_rule_words(sel)}."]
    if by != NAMED:
        lines.append(f"- **Signal:** `{block['signal']}`: {_signal_words(block['signal'])}.")
    if by == MEASURED:
        lines.append("- **Chosen by:** the measured ranking in the table below.")
    elif by == THEORY:
        lines.append(f"- **Chosen by:** {THEORY_TEXT}.")
    elif by == GIVEN:
        lines.append(f"- **Chosen by:** scores given by hand ({block.get('score_source')}).")
    else:
        lines.append("- **Chosen by:** the component types named in the rule; no ranking was used.")
    if block.get("fallback"):
        lines.append(f"- **Why not the measured ranking:** {fallback_words(block['fallback'], report)}")
    elif by == THEORY and block.get("pairs"):
        lines.append('- **Why not the measured ranking:** `signal="theory"` asked for the theoretical ranking.')
    trained = block.get("trained") or {}
    if trained.get("components"):
        kinds = ", ".join(f"`{c}`" + (f" ({k} modules)" if k else "") for c, k in trained["components"].items())
        where = "; marked ✓ in the ranking below" if block.get("pairs") else ""
        lines.append(f"- **Trained:** {kinds}{where}.")
    return "\n".join(lines)


def fallback_words(recorded: str, report: PlasticityReport | None) -> str:
    """Why ``signal="auto"`` set the measurement aside, in plain words (else the reason the config recorded)."""
    cells = report.exceeding_bounds() if report is not None else []
    if not cells:
        return recorded.rstrip(".") + "."
    comp, layer, value, bound = max(cells, key=lambda cell: cell[2] / cell[3])
    total = sum(1 for c in report.components if c.endswith("_norm")) * report.num_layers
    return (
        f"the LayerNorms measured faster than their theoretical upper bound allows ({len(cells)} of {total} "
        f"LayerNorm measurements; the largest, `{comp}` of layer {layer}, at {value:.3g} against a bound of "
        f"{bound:.3g}). That happens when the embedding tokens lie close together (spread {report.token_spread:.3g}, "
        "below 1): a LayerNorm then mostly rescales them, and its rate measures that scale rather than how "
        'non-smooth it is. So `signal="auto"` set the measurement aside and the theoretical ranking chose.'
    )


def pairs_text(block: dict[str, Any]) -> str:
    data = block.get("data") or {}
    return pairs_sentence(block.get("pairs"), data.get("downstream"), data.get("reference"), block.get("protocol"))


def ranking(block: dict[str, Any]) -> str:
    rows = block.get("ranking") or []
    if not rows or not block.get("pairs"):
        return ""  # a ranking nobody measured (the theory's, or given scores) is told in words, not as plasticity
    marked = any("trained" in r for r in rows)
    return ranking_table(rows, trained={r["component"] for r in rows if r.get("trained")} if marked else None)


def per_layer(block: dict[str, Any], report: PlasticityReport | None, config: Any, paths: dict[str, list[str]]) -> str:
    """Every layer's cells (ranking order), its most plastic module, and the modules trained in it."""
    comps = [r["component"] for r in block.get("ranking") or []]
    if report is not None:
        cells = layer_cells(report, comps)
    else:
        stored = (config.resolved_scores().get("layers") or {}) if config is not None else {}
        comps = [c for c in comps if c in stored]
        if not comps:
            return ""
        depth = max(len(stored[c]) for c in comps)
        cells = [[(_at(stored[c], layer), None, None) for c in comps] for layer in range(depth)]
    extra = {"most plastic": [_top_cell(row, comps, paths, layer) for layer, row in enumerate(cells)]}
    selected = list(config.selected_modules or []) if config is not None else []
    if selected and paths:
        extra["trained"] = [
            ", ".join(
                f"`{c}`"
                for c in comps
                if c in paths and layer < len(paths[c]) and _is_selected(paths[c][layer], selected)
            )
            for layer in range(len(cells))
        ]
    return layer_table(comps, cells, extra)


def training_text(block: dict[str, Any]) -> str:
    sel = block.get("selection")
    if not sel:
        return ""
    layers = "all layers" if sel["layers"] == "all" else f"layers {sel['layers']}"
    how = "their own weights trained in full" + (
        " (a trained copy beside the frozen original)" if sel.get("keep_original") else ", in place"
    )
    text = (
        f"[hf-plasticity](https://pypi.org/project/hf-plasticity/)'s `PlasticityConfig` (a PEFT method) selected "
        f"{_rule_words(sel)}, in {layers} ({_modules(block)}), {how}"
    )
    heads = block.get("modules_to_save") or []
    text += f"; the head ({', '.join(f'`{h}`' for h in heads)}) was trained in full." if heads else "."
    if block.get("trainable_parameters") is not None:
        text += (
            f" Trainable parameters: {block['trainable_parameters']:,} of {block['total_parameters']:,} "
            f"({block['trainable_share']:.2%})."
        )
    return text


def metrics_table(values: dict[str, float], dataset: str) -> str:
    if not values:
        return ""
    lines = ["| metric | value | data |", "|---|---:|---|"]
    lines += [f"| {k} | {fmt(v)} | {dataset} |" for k, v in values.items()]
    return "\n".join(lines)


def base_kwargs(model: Any) -> str:
    base = model.get_base_model() if model is not None and hasattr(model, "get_base_model") else None
    labels = getattr(getattr(base, "config", None), "num_labels", None)
    return f", num_labels={labels}" if labels and hasattr(base, "classifier") else ""


def _modules(block: dict[str, Any]) -> str:
    n = (block.get("trained") or {}).get("modules")
    return f"{n} module(s)" if n else "the modules"


def _rule_words(sel: dict[str, Any]) -> str:
    """The rule's own words for its value (a rule this process does not know is named as it was written)."""
    from ...tuner.rules import RULES  # lazily: importing the tuner imports PEFT, whose hooks import the cards

    rule = RULES.get(sel["rule"])
    return rule.describe(sel["value"]) if rule is not None else f"the modules the `{sel['rule']}` rule chose"


def _signal_words(signal: str) -> str:
    if signal == "measured":
        return "rank by the measurement, whatever it says"
    if signal == "theory":
        return "rank by the paper's theoretical ranking; a measurement is kept for reference only"
    return (
        "rank by the measurement, unless a LayerNorm measured above its theoretical bound (then the measurement "
        "is dominated by scale and the theoretical ranking is used)"
    )


def _value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _at(values: list[Any], layer: int) -> Any:
    return values[layer] if layer < len(values) else None


def _top_cell(row: list[Cell], comps: list[str], paths: dict[str, list[str]], layer: int) -> str:
    scored = [(m, c) for (m, _, _), c in zip(row, comps, strict=True) if m is not None and m == m]
    if not scored:
        return ""
    comp = max(scored, key=lambda mc: mc[0])[1]
    module = paths[comp][layer] if comp in paths and layer < len(paths[comp]) else comp
    return f"`{module}`"


def _is_selected(path: str, selected: list[str]) -> bool:
    return any(m == path or m.endswith("." + path) for m in selected)


# ---------------------------------------------------------------------------------------- LoRA adapters
LORA_RULE_TEXT = (
    "every (layer, component) of the report gets an allocation c × its measured mean; a linear's rank is "
    "floor(c × score) (at most min(in, out); rank 0 leaves it untouched), a LayerNorm whose allocation reaches 1 "
    "is trained whole, and c is the largest that keeps the trainable parameters, head included, within the budget"
)


def lora_summary(block: dict[str, Any], base_model: str | None, local: bool) -> str:
    """The opening sentence of a LoRA adapter's card: plain PEFT LoRA, and what set its ranks."""
    base = f"`{base_model}`" if base_model else "a local checkpoint (not on the Hub)" if local else "its base model"
    sel = block["selection"]
    ranks = [t["rank"] for t in sel["targets"]]
    spread = f"rank {ranks[0]}" if min(ranks) == max(ranks) else f"ranks {min(ranks)}–{max(ranks)}"
    what = f"{len(ranks)} linear module(s) at {spread}"
    if sel["rule"] == LORA_RULE:
        how = (
            "whose ranks were allocated from the plasticity measured on each (layer, component) by "
            f"`hf_plasticity.plasticity_lora_config`: {what}"
        )
    else:
        how = f"with the ranks it was configured with ({what}), shown beside the plasticity measured on its base model"
    share = block.get("trainable_share")
    tail = f", {share:.2%} of the base model's parameters trainable" if share is not None else ""
    return (
        f"A plain [PEFT](https://github.com/huggingface/peft) LoRA adapter for {base} {how}{tail}. "
        "It loads with `peft` alone; hf-plasticity is not needed to use it."
    )


def lora_choice_text(block: dict[str, Any], report: PlasticityReport) -> str:
    """How the ranks were set: the rule (or the config), alpha, what was trained whole."""
    sel = block["selection"]
    if sel["rule"] == LORA_RULE:
        lines = [f"- **Rule:** `{LORA_RULE}`: {LORA_RULE_TEXT}."]
        lines.append("- **Chosen by:** the per-layer measurement in the tables below.")
        above = report.exceeding_bounds()
        if above:
            total = sum(1 for c in report.components if c.endswith("_norm")) * report.num_layers
            lines.append(
                f'- **Left out by the default `signal="auto"`:** {len(above)} of {total} LayerNorm cells measured '
                "above their theoretical upper bound (a rate dominated by the tokens' scale, not by non-smoothness); "
                "they get no allocation."
            )
    else:
        lines = [
            f"- **Ranks:** as configured in the `LoraConfig` (r={sel['r']}, lora_alpha={sel['lora_alpha']}); "
            "they were not allocated by `plasticity_lora_config`, and the measurement below did not set them."
        ]
    alphas = {(t["rank"], t["alpha"]) for t in sel["targets"]}
    if all(float(a) == float(r) for r, a in alphas):
        lines.append("- **Scaling:** alpha = rank for every module (scaling 1).")
    trained = block.get("trained") or {}
    if trained.get("components"):
        kinds = ", ".join(f"`{c}` ({k} module(s))" for c, k in trained["components"].items())
        lines.append(f"- **Trained:** {kinds}; marked ✓ in the ranking below.")
    heads = block.get("modules_to_save") or []
    if heads:
        lines.append(f"- **Trained whole** (`modules_to_save`): {', '.join(f'`{h}`' for h in heads)}.")
    return "\n".join(lines)


def lora_targets_table(block: dict[str, Any]) -> str:
    """Every adapted linear, highest rank first, with its component, layer and measured cell mean."""
    lines = ["| rank | alpha | module | component | layer | plasticity |", "| ---: | ---: | --- | --- | ---: | ---: |"]
    for t in block["selection"]["targets"]:
        comp = f"`{t['component']}`" if t["component"] else "—"
        layer = "—" if t["layer"] is None else str(t["layer"])
        lines.append(f"| {t['rank']} | {fmt(t['alpha'])} | `{t['module']}` | {comp} | {layer} | {fmt(t['score'])} |")
    return "\n".join(lines)


def lora_per_layer(block: dict[str, Any], report: PlasticityReport, paths: dict[str, list[str]]) -> str:
    """Every layer's cells (ranking order) with the LoRA ranks and whole-trained modules that layer holds."""
    comps = [r["component"] for r in block.get("ranking") or []]
    cells = layer_cells(report, comps)
    ranks: list[list[str]] = [[] for _ in cells]
    for t in block["selection"]["targets"]:
        if t["layer"] is not None and t["layer"] < len(cells):
            path = paths[t["component"]][t["layer"]]
            leaf = t["module"][len(path) :].lstrip(".") if t["module"].startswith(path) else ""
            ranks[t["layer"]].append(f"`{t['component']}{'.' + leaf if leaf else ''}` {t['rank']}")
    whole: list[list[str]] = [[] for _ in cells]
    for module in block.get("modules_to_save") or []:
        for comp in comps:
            for layer, path in enumerate(paths.get(comp, [])[: len(cells)]):
                if module == path or module.endswith("." + path):
                    whole[layer].append(f"`{comp}`")
    extra = {
        "most plastic": [_top_cell(row, comps, paths, layer) for layer, row in enumerate(cells)],
        "LoRA rank": [", ".join(r) for r in ranks],
        "trained whole": [", ".join(w) for w in whole],
    }
    return layer_table(comps, cells, extra)


def lora_training_text(block: dict[str, Any]) -> str:
    sel = block["selection"]
    text = (
        f"PEFT's own LoRA (`peft.LoraConfig`, r={sel['r']} with a per-module `rank_pattern`) on "
        f"{len(sel['targets'])} linear module(s)"
    )
    heads = block.get("modules_to_save") or []
    text += f"; {', '.join(f'`{h}`' for h in heads)} trained in full." if heads else "."
    text += (
        f" Trainable parameters: {block['trainable_parameters']:,}, {block['trainable_share']:.2%} of the base "
        f"model's {block['base_parameters']:,}."
    )
    return text
