"""What a measured report selects: the guard against LayerNorm rates dominated by the embedding's scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import get_peft_model
from torch import nn

from hf_plasticity import COMPONENTS, InvalidInputError, PlasticityConfig, PlasticityReport, measure_plasticity
from tests.conftest import TINY_MODELS, pixels, scale_embedding


def vit_with_token_scale(scale: float) -> nn.Module:
    """A tiny ViT whose embedding outputs are multiplied by ``scale`` (token spread scales with it)."""
    return scale_embedding(TINY_MODELS["vit"](), scale)


def measured(scale: float, **kwargs: object) -> tuple[nn.Module, PlasticityReport]:
    model = vit_with_token_scale(scale)
    return model, measure_plasticity(model, pixels(16, seed=51), progress=False, **kwargs)


@pytest.fixture(scope="module")
def low_spread() -> tuple[nn.Module, PlasticityReport]:
    """Small tokens (the bundled model's case): the LayerNorms' measured rates exceed their max-gain bound."""
    return measured(0.2)


def test_low_spread_tokens_put_layernorms_above_their_bound(low_spread) -> None:
    _, report = low_spread
    assert report.token_spread < 1
    cells = report.exceeding_bounds()
    assert cells and {c for c, *_ in cells} <= {"attn_norm", "ffn_norm"}  # linear maps and attention never
    assert report.ranking()[0] in ("attn_norm", "ffn_norm")  # what the raw measurement would select


def test_auto_falls_back_to_the_theoretical_ranking_and_says_why(low_spread, tmp_path: Path) -> None:
    _, report = low_spread
    config = PlasticityConfig.from_report(report, top_k=1)
    peft_model = get_peft_model(vit_with_token_scale(0.2), config)
    selected = peft_model.peft_config["default"].selected_modules
    assert selected and all(path.endswith(".attention") for path in selected)  # mha, the theory's first
    assert config.score_source.startswith("theory (report:") and "above their theoretical bound" in config.score_source
    peft_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert "token spread" in saved["scores"]["report"]["fallback"]
    assert saved["scores"]["report"]["ranking"] == report.ranking()  # the measurement itself is kept


def test_measured_signal_keeps_the_raw_ranking(low_spread) -> None:
    _, report = low_spread
    config = PlasticityConfig.from_report(report, top_k=1, signal="measured")
    selected = get_peft_model(vit_with_token_scale(0.2), config).peft_config["default"].selected_modules
    top = report.ranking()[0]
    suffix = {"attn_norm": "layernorm_before", "ffn_norm": "layernorm_after"}[top]
    assert selected and all(path.endswith(suffix) for path in selected)


def test_auto_uses_a_clean_measurement_as_measured() -> None:
    """Tokens of spread > 1: no LayerNorm exceeds its bound, and the measured ranking is used."""
    _, report = measured(20.0)
    assert report.token_spread > 1 and not report.exceeding_bounds()
    auto = PlasticityConfig.from_report(report, top_k=2)
    raw = PlasticityConfig.from_report(report, top_k=2, signal="measured")
    assert auto.score_source == "report" and auto.component_scores() == raw.component_scores()


def test_theory_signal_ignores_the_measurement() -> None:
    _, report = measured(20.0)
    config = PlasticityConfig.from_report(report, signal="theory")
    assert max(config.component_scores(), key=config.component_scores().get) == "mha"
    assert "signal='theory'" in config.resolved_scores()["report"]["fallback"]


def test_report_without_bounds_cannot_trip_the_guard() -> None:
    _, report = measured(0.2, bounds=False)
    assert report.exceeding_bounds() == []
    assert PlasticityConfig.from_report(report).score_source == "report"


def test_unknown_signal_names_the_choices(low_spread) -> None:
    with pytest.raises(InvalidInputError, match=r"signal='best'.*'auto', 'measured', 'theory'"):
        PlasticityConfig.from_report(low_spread[1], signal="best")


@pytest.mark.parametrize("budget", [pytest.param(b, id=f"budget-{b}") for b in (0.2, 0.5)])
def test_budget_ranks_each_module_by_its_own_cell_and_leaves_guarded_cells_out(low_spread, budget: float) -> None:
    """``budget`` under ``auto``: the most plastic (layer, component) cells first, greedily, within the budget;
    the LayerNorm cells above their bound are not ranked (the rest of the measurement is kept)."""
    from hf_plasticity import resolve_components, select_modules

    _, report = low_spread
    model = vit_with_token_scale(0.2)
    resolved = resolve_components(model)
    excluded = {(c, layer) for c, layer, *_ in report.exceeding_bounds()}
    cells = [
        (float(report.mean[layer, ci]), layer, ci, resolved.paths[comp][layer])
        for layer in range(report.num_layers)
        for ci, comp in enumerate(report.components)
        if (comp, layer) not in excluded
    ]
    order = [
        path for *_, path in sorted(cells, key=lambda c: (-c[0], c[1], COMPONENTS.index(report.components[c[2]])))
    ]
    total = sum(p.numel() for p in model.parameters())
    left = budget * total - sum(p.numel() for p in model.classifier.parameters())
    expected = []
    for path in order:
        cost = sum(p.numel() for p in model.get_submodule(path).parameters())
        if cost <= left:
            expected.append(path)
            left -= cost
    chosen = select_modules(model, PlasticityConfig.from_report(report, budget=budget)).modules
    assert chosen == expected
    assert not {resolved.paths[c][layer] for c, layer in excluded} & set(chosen)


def test_rank_components_breaks_ties_by_the_mappings_order_for_module_paths() -> None:
    from hf_plasticity import rank_components

    assert rank_components({"b.x": 1.0, "a.y": 2.0, "c.z": 1.0, "d.w": float("nan")}) == ["a.y", "b.x", "c.z", "d.w"]
    assert rank_components({"mha": 1.0, "attn_norm": 1.0}) == ["attn_norm", "mha"]  # canonical component order
