"""Model cards: the plasticity metadata, its round trip, merging, every place a user saves, the bundled card."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from peft import get_peft_model
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_plasticity import (
    ModelCardError,
    PlasticityConfig,
    PlasticityReport,
    build_model_card,
    measure_plasticity,
    write_model_card,
)
from hf_plasticity.cli import main
from hf_plasticity.integrations.cards import CARD_NAME, TOP_MODULES, plasticity_metadata
from tests.conftest import TINY_MODELS, pixels

ROOT = Path(__file__).resolve().parents[2]


def _load_script(name: str) -> Any:
    """A maintainer script under scripts/ (not part of the package), imported by path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundled = _load_script("regenerate_bundled_card")


@pytest.fixture(scope="module")
def report() -> PlasticityReport:
    return measure_plasticity(TINY_MODELS["vit"](), pixels(24, seed=3), progress=False)


def plasticity_model(report: PlasticityReport, **kwargs: object) -> nn.Module:
    return get_peft_model(TINY_MODELS["vit"](), PlasticityConfig.from_report(report, **kwargs))


SOURCES = {
    "report": lambda r: r,
    "config": lambda r: PlasticityConfig.from_report(r, top_k=2),
    "model": lambda r: plasticity_model(r, top_k=2),
}


# ------------------------------------------------------------------------------------------ metadata
@pytest.mark.parametrize("source", sorted(SOURCES), ids=sorted(SOURCES))
def test_loaded_card_returns_the_same_plasticity_block(report, source: str, tmp_path: Path) -> None:
    card = build_model_card(SOURCES[source](report))
    write_model_card(card, tmp_path)
    loaded = ModelCard.load(tmp_path / CARD_NAME)
    assert loaded.data.plasticity == card.data.plasticity
    assert [r["component"] for r in loaded.data.plasticity["ranking"]] == report.ranking()


def test_ranking_scores_and_intervals_follow_the_definition(report) -> None:
    """Score = mean rate over every pair and layer; 95% CI = 1.96 * sample std / sqrt(n), from the raw rates."""
    block = plasticity_metadata(report)
    for row in block["ranking"]:
        rates = report.rates[:, :, report.components.index(row["component"])].ravel()
        rates = rates[np.isfinite(rates)].astype(np.float64)
        assert row["n"] == rates.size
        assert row["score"] == pytest.approx(rates.mean(), rel=1e-5)
        assert row["ci95"] == pytest.approx(1.96 * rates.std(ddof=1) / math.sqrt(rates.size), rel=1e-4)
    top = block["top_modules"]
    assert len(top) == min(TOP_MODULES, report.num_layers * len(report.components))
    assert [m["score"] for m in top] == sorted((m["score"] for m in top), reverse=True)
    for m in top:  # each is one (layer, component) cell: its mean over the pairs
        rates = report.rates[:, m["layer"], report.components.index(m["component"])]
        assert m["score"] == pytest.approx(float(np.mean(rates[np.isfinite(rates)])), rel=1e-5)
        assert m["module"] == report.module_paths[m["component"]][m["layer"]]


def test_adapter_card_carries_no_removed_mode(report) -> None:
    """``PlasticityConfig`` has no modes: neither the text, the metadata nor the tags speak of one."""
    card = build_model_card(plasticity_model(report, components=["mha"]))
    assert "mode" not in card.data.plasticity["selection"]
    assert not [t for t in card.data.tags if t.startswith("plasticity-") and t != "plasticity-lora"]
    assert not re.search(r"\bmode\b", card.text, flags=re.IGNORECASE)


def test_adapter_metadata_names_selection_and_parameter_share(report) -> None:
    model = plasticity_model(report, components=["mha"])
    data = build_model_card(model, metrics={"eval_accuracy": 0.75, "epoch": 1.0}).data
    block = data.plasticity
    assert data.library_name == "peft" and "plasticity" in data.tags
    assert block["selection"] == {"rule": "components", "value": ["mha"], "layers": "all",
                                  "keep_original": False}  # fmt: skip
    assert model.peft_config["default"].selected_modules == ["vit.layers.0.attention", "vit.layers.1.attention"]
    assert block["trained"] == {"modules": 2, "components": {"mha": 2}}
    assert {r["component"] for r in block["ranking"] if r["trained"]} == {"mha"}
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert (block["trainable_parameters"], block["total_parameters"]) == (trainable, total)
    assert block["trainable_share"] == pytest.approx(trainable / total, rel=1e-5)
    assert [(e.metric_type, e.metric_value) for e in data.eval_results] == [("accuracy", 0.75)]


def test_config_without_report_gives_its_scores(report) -> None:
    scores = {"mha": 2.0, "ffn_fc1": 1.0, "ffn_fc2": 0.5, "ffn_norm": 0.2, "attn_norm": 0.1}
    block = plasticity_metadata(config=PlasticityConfig(scores=scores, top_k=1))
    assert [{k: r[k] for k in ("component", "score")} for r in block["ranking"]] == [
        {"component": c, "score": v} for c, v in scores.items()
    ]
    assert block["score_source"] == "mapping" and "ci95" not in block["ranking"][0]
    assert (block["selected_by"], block["fallback"]) == ("given scores", None)


def test_bounds_and_embedding_statistics_reach_the_metadata(report) -> None:
    block = plasticity_metadata(report)
    for row in block["ranking"]:  # a type's bound is its largest over layers; the card keeps 6 digits
        assert row["bound"] == pytest.approx(np.nanmax(report.bounds[:, report.components.index(row["component"])]))
    for m in block["top_modules"]:
        assert m["bound"] == pytest.approx(report.bounds[m["layer"], report.components.index(m["component"])])
    assert block["embedding"] == pytest.approx(
        {"radius": report.radius, "token_spread": report.token_spread, "tokens": report.seq_len}, rel=1e-5
    )
    without = measure_plasticity(TINY_MODELS["vit"](), pixels(24, seed=3), bounds=False, progress=False)
    block = plasticity_metadata(without)
    assert not any("bound" in row for row in [*block["ranking"], *block["top_modules"]])


def test_metadata_passes_huggingface_hub_validation(report) -> None:
    card = build_model_card(plasticity_model(report), metrics={"accuracy": 0.5}, base_model="google/vit-base")
    strict = ModelCard(str(card), ignore_metadata_errors=False)  # raises on metadata the Hub rejects
    assert strict.data.base_model == "google/vit-base"
    assert "base_model:adapter:google/vit-base" in strict.data.tags
    assert [(e.task_type, e.metric_type, e.metric_value) for e in strict.data.eval_results] == [
        ("image-classification", "accuracy", 0.5)
    ]


# ------------------------------------------------------------------------------------------ writing
def test_save_pretrained_writes_our_card_report_and_figure(report, tmp_path: Path) -> None:
    plasticity_model(report).save_pretrained(tmp_path)
    text = (tmp_path / CARD_NAME).read_text()
    assert "[More Information Needed]" not in text and "import hf_plasticity" in text
    assert ModelCard.load(tmp_path / CARD_NAME).data.plasticity["score_source"] == "report"
    assert PlasticityReport.load(tmp_path / "plasticity_report.json").ranking() == report.ranking()
    assert (tmp_path / "plasticity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](plasticity.png)" in text
    assert "_report" not in json.loads((tmp_path / "adapter_config.json").read_text())


USER_README = "---\nlicense: apache-2.0\ntags:\n- mine\n---\n\n# My model\n\nMy own notes.\n"


def test_an_existing_readme_is_merged_not_clobbered(report, tmp_path: Path) -> None:
    (tmp_path / CARD_NAME).write_text(USER_README)
    model = plasticity_model(report)
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # twice: our section is replaced, not repeated
    text = (tmp_path / CARD_NAME).read_text()
    card = ModelCard.load(tmp_path / CARD_NAME)
    assert card.data.license == "apache-2.0" and {"mine", "plasticity"} <= set(card.data.tags)
    assert "My own notes." in text and text.count("<!-- hf_plasticity:begin") == 1
    assert card.data.plasticity == build_model_card(model).data.plasticity


def test_an_unparsable_readme_is_left_alone(report, tmp_path: Path) -> None:
    bad = "---\ntags: [unclosed\n---\nnotes\n"
    (tmp_path / CARD_NAME).write_text(bad)
    with pytest.raises(ModelCardError, match="cannot be parsed"):
        write_model_card(build_model_card(report), tmp_path)
    assert (tmp_path / CARD_NAME).read_text() == bad


def test_a_card_needs_plasticity_information() -> None:
    with pytest.raises(ModelCardError, match="no PlasticityConfig adapter"):
        build_model_card(TINY_MODELS["vit"]())


def test_trainer_save_model_and_model_card_keep_our_card(report, tmp_path: Path) -> None:
    model = plasticity_model(report)
    rows = [{"pixel_values": x, "labels": torch.tensor(i % 3)} for i, x in enumerate(pixels(4, seed=5))]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[])
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    trainer.save_model()
    trainer.create_model_card(model_name="tiny-plasticity")  # what Trainer.push_to_hub writes before uploading
    text = (tmp_path / CARD_NAME).read_text()
    card = ModelCard.load(tmp_path / CARD_NAME)
    assert card.data.library_name == "peft" and card.data.plasticity["trained"]["modules"] == 2
    assert "Training hyperparameters" in text  # the Trainer's own summary is kept below our section
    assert text.count("<!-- hf_plasticity:begin") == 1


# ------------------------------------------------------------------------------------------ CLI
def test_cli_card_from_report_adapter_and_metrics(report, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    plasticity_model(report, top_k=1).save_pretrained(adapter)
    (adapter / CARD_NAME).write_text(USER_README)
    report_path = report.save(tmp_path / "r.json")
    (tmp_path / "eval.json").write_text(json.dumps({"eval_accuracy": 0.625, "eval_runtime": 3.0}))
    status = main(
        ["card", "--report", str(report_path), "--adapter", str(adapter), "--metrics", str(tmp_path / "eval.json")]
    )
    assert status == 0
    card = ModelCard.load(adapter / CARD_NAME)
    assert [(e.metric_type, e.metric_value) for e in card.data.eval_results] == [("accuracy", 0.625)]
    assert card.data.plasticity["trained"]["modules"] == 2 and card.data.license == "apache-2.0"
    assert "My own notes." in card.text


def test_cli_card_reads_the_evaluation_part_of_finetunes_metrics(report, tmp_path: Path, capsys) -> None:
    report_path = report.save(tmp_path / "r.json")
    metrics = {"train": {"train_loss": 0.9, "train_runtime": 12.0}, "eval": {"eval_accuracy": 0.75, "epoch": 3.0}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))  # the shape finetune writes
    argv = ["card", "--report", str(report_path), "--output-dir", str(tmp_path / "card")]
    assert main([*argv, "--metrics", str(tmp_path / "metrics.json")]) == 0
    card = ModelCard.load(tmp_path / "card" / CARD_NAME)
    assert [(e.metric_type, e.metric_value) for e in card.data.eval_results] == [("accuracy", 0.75)]

    (tmp_path / "train_only.json").write_text(json.dumps({"train": metrics["train"], "eval": {}}))
    argv[-1] = str(tmp_path / "card2")
    assert main([*argv, "--metrics", str(tmp_path / "train_only.json")]) == 2
    assert "no evaluation results" in capsys.readouterr().err
    assert not (tmp_path / "card2").exists()


def test_cli_card_output_dir_gets_card_figure_and_report(report, tmp_path: Path) -> None:
    report_path = report.save(tmp_path / "r.json")
    out = tmp_path / "card"
    assert main(["card", "--report", str(report_path), "--output-dir", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {CARD_NAME, "plasticity.png", "plasticity_report.json"}
    assert ModelCard.load(out / CARD_NAME).data.plasticity["ranking"]
    assert PlasticityReport.load(out / "plasticity_report.json").ranking() == report.ranking()


def test_cli_card_refuses_out_and_output_dir_together(report, tmp_path: Path, capsys) -> None:
    report_path = report.save(tmp_path / "r.json")
    argv = ["card", "--report", str(report_path), "--out", str(tmp_path / "x.md"), "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists() and not (tmp_path / CARD_NAME).exists()


def test_cli_card_needs_an_input(capsys) -> None:
    assert main(["card", "--out", "x.md"]) == 2
    assert "--report, --adapter" in capsys.readouterr().err


def test_cli_card_bundled_points_at_the_script(capsys) -> None:
    assert main(["card", "--bundled"]) == 2
    assert "scripts/regenerate_bundled_card.py" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bundled model
@pytest.mark.parametrize(
    "path, figure",
    [(bundled.BUNDLED_CARD, "vit-fashion-mnist.png"), (bundled.SHIPPED_CARD, None)],
    ids=["model_cards", "assets"],
)
def test_bundled_card_is_what_the_generator_writes(path: str, figure: str | None) -> None:
    """`python scripts/regenerate_bundled_card.py` writes these from the committed report; they must match."""
    expected = str(bundled.bundled_model_card(PlasticityReport.load(ROOT / bundled.BUNDLED_REPORT), figure=figure))
    assert (ROOT / path).read_text(encoding="utf-8") == expected


def test_bundled_card_metadata() -> None:
    card = ModelCard.load(ROOT / bundled.BUNDLED_CARD)
    report = PlasticityReport.load(ROOT / bundled.BUNDLED_REPORT)
    assert [r["component"] for r in card.data.plasticity["ranking"]] == report.ranking()
    pretraining = json.loads((ROOT / "hf_plasticity/assets/vit-fashion-mnist/config.json").read_text())
    assert card.data.eval_results[0].metric_value == pretraining["hf_plasticity_pretraining"]["test_accuracy"]
    assert card.data.library_name == "transformers" and "plasticity" in card.data.tags


def test_bundled_script_regenerates_into_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "model_cards").mkdir()
    (tmp_path / "hf_plasticity/assets/vit-fashion-mnist").mkdir(parents=True)
    (tmp_path / bundled.BUNDLED_REPORT).write_bytes((ROOT / bundled.BUNDLED_REPORT).read_bytes())
    written = bundled.regenerate(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} == {
        bundled.BUNDLED_CARD,
        bundled.BUNDLED_FIGURE,
        bundled.SHIPPED_CARD,
    }
    assert (tmp_path / bundled.BUNDLED_CARD).read_text() == (ROOT / bundled.BUNDLED_CARD).read_text()
