"""Model cards of PEFT LoRA adapters made by plasticity_lora_config: the report's measurement, the ranks trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model
from torch import nn

from hf_plasticity import (
    ModelCardError,
    PlasticityReport,
    attach_report,
    build_model_card,
    measure_plasticity,
    plasticity_lora_config,
    save_card_files,
)
from hf_plasticity.integrations.cards import CARD_NAME, FIGURE_NAME, REPORT_NAME
from tests.conftest import TINY_MODELS, pixels


@pytest.fixture(scope="module")
def report() -> PlasticityReport:
    return measure_plasticity(TINY_MODELS["vit"](), pixels(24, seed=3), progress=False)


def lora_model(report: PlasticityReport, budget: float = 0.2) -> nn.Module:
    config = plasticity_lora_config(report, budget=budget, model=TINY_MODELS["vit"]())
    return get_peft_model(TINY_MODELS["vit"](), config)


BUDGETS = [pytest.param(b, id=f"budget-{b}") for b in (0.1, 0.3)]


# ------------------------------------------------------------------------------------------ metadata
def test_lora_card_carries_the_reports_ranking(report) -> None:
    block = build_model_card(lora_model(report), report=report).data.plasticity
    assert [r["component"] for r in block["ranking"]] == report.ranking()
    assert block["score_source"] == "report" and block["pairs"] == report.num_pairs


@pytest.mark.parametrize("budget", BUDGETS)
def test_lora_card_targets_have_exactly_the_configs_ranks(report, budget: float) -> None:
    model = lora_model(report, budget)
    config = model.peft_config["default"]
    sel = build_model_card(model, report=report).data.plasticity["selection"]
    assert sel["rule"] == "plasticity_lora_config" and sel["method"] == "lora"
    assert {t["module"]: t["rank"] for t in sel["targets"]} == config.rank_pattern
    assert {t["module"]: t["alpha"] for t in sel["targets"]} == config.alpha_pattern
    assert [t["rank"] for t in sel["targets"]] == sorted(config.rank_pattern.values(), reverse=True)


@pytest.mark.parametrize("budget", BUDGETS)
def test_lora_card_marks_trained_components_and_modules_to_save(report, budget: float) -> None:
    model = lora_model(report, budget)
    config = model.peft_config["default"]
    block = build_model_card(model, report=report).data.plasticity
    paths = report.module_paths  # component -> its module per layer (the tiny ViT's own paths)
    adapted = {c for c, ps in paths.items() for p in ps for t in [*config.target_modules, *config.modules_to_save]
               if t == p or t.startswith(p + ".")}  # fmt: skip
    assert {r["component"] for r in block["ranking"] if r["trained"]} == adapted
    assert block["modules_to_save"] == list(config.modules_to_save)


@pytest.mark.parametrize("budget", BUDGETS)
def test_lora_card_trained_share_is_trainable_over_base_parameters(report, budget: float) -> None:
    model = lora_model(report, budget)
    block = build_model_card(model, report=report).data.plasticity
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in TINY_MODELS["vit"]().parameters())  # the model before any adapter
    assert (block["trainable_parameters"], block["base_parameters"]) == (trainable, base)
    assert block["trainable_share"] == pytest.approx(trainable / base, rel=1e-5)
    assert block["trainable_share"] <= budget


def test_lora_card_loads_with_peft_alone(report) -> None:
    card = build_model_card(lora_model(report), report=report, repo_id="someone/vit-lora")
    assert card.data.library_name == "peft" and {"plasticity-lora", "lora"} <= set(card.data.tags)
    assert 'PeftModel.from_pretrained(base, "someone/vit-lora")' in card.text
    assert "import hf_plasticity" not in card.text


def test_lora_card_passes_huggingface_hub_validation(report, tmp_path: Path) -> None:
    card = build_model_card(lora_model(report), report=report, base_model="google/vit-base")
    strict = ModelCard(str(card), ignore_metadata_errors=False)  # raises on metadata the Hub rejects
    assert strict.data.base_model == "google/vit-base"
    assert "base_model:adapter:google/vit-base" in strict.data.tags
    (tmp_path / CARD_NAME).write_text(str(card))
    assert ModelCard.load(tmp_path / CARD_NAME).data.plasticity == card.data.plasticity


@pytest.mark.parametrize("given", ["object", "path"], ids=["report-object", "report-path"])
def test_lora_card_takes_the_report_or_its_path(report, tmp_path: Path, given: str) -> None:
    arg = report if given == "object" else report.save(tmp_path / "r.json")
    card = build_model_card(lora_model(report), report=arg)
    assert [r["component"] for r in card.data.plasticity["ranking"]] == report.ranking()


def test_a_lora_model_without_report_names_the_fix(report) -> None:
    with pytest.raises(ModelCardError, match=r"pass report="):
        build_model_card(lora_model(report))


def test_a_hand_made_lora_config_is_carded_with_ranks_as_configured(report) -> None:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"])
    card = build_model_card(get_peft_model(TINY_MODELS["vit"](), config), report=report)
    sel = card.data.plasticity["selection"]
    assert sel["rule"] == "configured" and card.data.plasticity["selected_by"] == "configured ranks"
    assert {(t["module"], t["rank"], t["alpha"]) for t in sel["targets"]} == {
        (f"vit.layers.{i}.attention.{p}", 4, 8.0) for i in range(2) for p in ("q_proj", "v_proj")
    }
    assert "as configured" in card.text


# ------------------------------------------------------------------------------------------ writing
def test_save_card_files_writes_card_report_and_figure_for_lora(report, tmp_path: Path) -> None:
    save_card_files(lora_model(report), tmp_path, report=report)
    assert {p.name for p in tmp_path.iterdir()} == {CARD_NAME, REPORT_NAME, FIGURE_NAME}
    assert ModelCard.load(tmp_path / CARD_NAME).data.plasticity["selection"]["rule"] == "plasticity_lora_config"
    assert PlasticityReport.load(tmp_path / REPORT_NAME).ranking() == report.ranking()


@pytest.mark.parametrize("attached", [False, True], ids=["plain-lora-keeps-peft-card", "attached-report-our-card"])
def test_save_pretrained_writes_our_card_only_after_attach_report(report, tmp_path: Path, attached: bool) -> None:
    model = lora_model(report)
    if attached:
        attach_report(model, report)
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / CARD_NAME)
    assert (getattr(card.data, "plasticity", None) is not None) is attached
    assert (tmp_path / REPORT_NAME).is_file() is attached
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_attach_report_needs_a_plasticity_or_lora_adapter(report) -> None:
    from peft import IA3Config

    model = get_peft_model(TINY_MODELS["vit"](), IA3Config(target_modules=["fc1"], feedforward_modules=["fc1"]))
    with pytest.raises(ModelCardError, match="no plasticity or LoRA adapter"):
        attach_report(model, report)
