"""Trainer training of plasticity adapters: finetune(), checkpoints and resuming, best model, checkpointing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainingArguments

from hf_plasticity import InvalidInputError, PlasticityConfig
from hf_plasticity.cli import main
from hf_plasticity.integrations.training import (
    FinetuneResult,
    accuracy_metrics,
    finetune,
    finetune_reference,
    parse_rule,
)
from tests.conftest import IMAGE_SIZE, TINY_MODELS, pixels


def tiny_data(n: int = 24, seed: int = 0) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"pixel_values": pixels(n, seed).numpy(), "label": [i % 3 for i in range(n)]})


def training_args(out: Path, **kw: object) -> TrainingArguments:
    base = {
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "max_steps": 6,
        "learning_rate": 1e-2,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 2,
        "disable_tqdm": True,
        "seed": 0,
        "use_cpu": True,
    }
    return TrainingArguments(**{**base, **kw})


def trained_state(result: FinetuneResult) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(result.model).items()}


MODES = {
    "full-in-place": {},
    "full-keep-original": {"keep_original": True},
}


@pytest.mark.parametrize("rule, expected", [
    ("top_k=2", {"top_k": 2}),
    ("budget=0.01", {"budget": 0.01}),
    ("threshold=0.5", {"threshold": 0.5}),
    ("components=mha,ffn_fc1", {"components": ["mha", "ffn_fc1"]}),
], ids=["top_k", "budget", "threshold", "components"])  # fmt: skip
def test_parse_rule(rule: str, expected: dict) -> None:
    assert parse_rule(rule) == expected


@pytest.mark.parametrize(
    "rule", ["top_k", "best=1", "top_k=x", "budget="], ids=["no-value", "unknown", "nan", "empty"]
)
def test_parse_rule_rejects(rule: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_rule(rule)


def test_accuracy_metrics_use_the_bundled_evaluate_metric() -> None:
    compute = accuracy_metrics()
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert compute((logits, np.array([0, 1, 1, 1]))) == {"accuracy": 0.5}


@pytest.mark.parametrize("mode", list(MODES))
def test_finetune_trains_evaluates_and_saves(tmp_path: Path, mode: str) -> None:
    config = PlasticityConfig(components=["mha"], **MODES[mode])
    result = finetune(TINY_MODELS["vit"](), tiny_data(), tiny_data(9, seed=5), config, training_args(tmp_path))
    assert 0.0 <= result.eval_metrics["eval_accuracy"] <= 1.0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["eval"]["eval_accuracy"] == result.eval_metrics["eval_accuracy"]
    assert result.train_metrics["train_loss"] > 0


@pytest.mark.parametrize("mode", list(MODES))
def test_resume_from_checkpoint_is_bit_identical(tmp_path: Path, mode: str) -> None:
    config = PlasticityConfig(components=["mha"], **MODES[mode])
    whole = finetune(
        TINY_MODELS["vit"](), tiny_data(), None, config,
        training_args(tmp_path / "a", save_strategy="steps", save_steps=3), save=False,
    )  # fmt: skip
    checkpoint = tmp_path / "a" / "checkpoint-3"
    assert checkpoint.is_dir()
    resumed = finetune(
        TINY_MODELS["vit"](), tiny_data(), None, PlasticityConfig(components=["mha"], **MODES[mode]),
        training_args(tmp_path / "b", resume_from_checkpoint=str(checkpoint)), save=False,
    )  # fmt: skip
    a, b = trained_state(whole), trained_state(resumed)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_load_best_model_at_end_restores_the_best_checkpoint(tmp_path: Path) -> None:
    args = training_args(
        tmp_path, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
    )  # fmt: skip
    result = finetune(
        TINY_MODELS["vit"](), tiny_data(), tiny_data(9, seed=5), PlasticityConfig(components=["mha"]), args, save=False
    )
    best = Path(result.trainer.state.best_model_checkpoint)
    saved = load_file(best / "adapter_model.safetensors")
    live = get_peft_model_state_dict(result.model)
    assert saved.keys() == live.keys() and saved
    for key in saved:
        assert torch.equal(saved[key], live[key]), key


@pytest.mark.parametrize("mode", list(MODES))
def test_gradient_checkpointing_trains_the_same_weights(tmp_path: Path, mode: str) -> None:
    plain = finetune(
        TINY_MODELS["vit"](), tiny_data(), None, PlasticityConfig(components=["mha"], **MODES[mode]),
        training_args(tmp_path / "a"), save=False,
    )  # fmt: skip
    checkpointed = finetune(
        TINY_MODELS["vit"](), tiny_data(), None, PlasticityConfig(components=["mha"], **MODES[mode]),
        training_args(tmp_path / "b", activation_checkpointing=True), save=False,
    )  # fmt: skip
    assert checkpointed.model.base_model.model.is_activation_checkpointing
    a, b = trained_state(plain), trained_state(checkpointed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_finetune_rejects_a_config_for_a_peft_model(tmp_path: Path) -> None:
    from peft import get_peft_model

    peft_model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig())
    with pytest.raises(InvalidInputError, match="already a PeftModel"):
        finetune(peft_model, tiny_data(), None, PlasticityConfig(), training_args(tmp_path))


def test_cli_finetune_writes_adapter_report_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from transformers import ViTImageProcessor

    model_dir = tmp_path / "tiny"
    TINY_MODELS["vit"]().save_pretrained(model_dir)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(model_dir)
    out = tmp_path / "run"
    code = main([
        "finetune", "--model", str(model_dir), "--data", "digits", "--rule", "components=mha",
        "--num_pairs", "16", "--eval_fraction", "0.05", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--output-dir", str(out), "--disable_tqdm", "true", "--watch_every", "1", "--watch_pairs", "4",
    ])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"adapter", "report.json", "metrics.json", "plasticity.png"}
    assert (out / "plasticity_series.json").is_file() and (out / "plasticity_series.png").is_file()
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert "mode" not in config and all("attention" in m for m in config["selected_modules"])
    assert "eval_accuracy" in json.loads((out / "metrics.json").read_text())["eval"]
    assert "selected (2 modules)" in capsys.readouterr().out


def test_cli_finetune_requires_output_dir(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--model", "bundled"])
    assert exc.value.code == 2
    assert "--output-dir is required" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ reference data
@pytest.mark.parametrize(
    "name, model, expected",
    [
        ("auto", "bundled", "fashion-mnist"),  # the bundled model's pretraining data, as the demo pairs it
        ("auto", "someone/vit", None),  # no known pretraining data: pairs within --data
        ("none", "bundled", None),
        (None, "bundled", None),
        ("fashion-mnist-sample", "someone/vit", "fashion-mnist-sample"),
    ],
    ids=["auto-bundled", "auto-other", "none", "None", "named"],
)
def test_finetune_reference(name: str | None, model: str, expected: str | None) -> None:
    data, label = finetune_reference(name, model)
    if expected is None:
        assert data is None and label is None
    else:
        assert label.startswith(expected) and len(data) > 0 and "image" in data.column_names


def test_finetune_of_the_bundled_model_says_where_its_pairs_came_from(tmp_path: Path, capsys) -> None:
    """`hf-plasticity finetune` on the defaults: reference pairs like the demo, said in the summary and the card."""
    argv = ["finetune", "--output-dir", str(tmp_path), "--max_steps", "1", "--num_pairs", "16"]
    assert main([*argv, "--eval_fraction", "0.05", "--eval_strategy", "no", "--per_device_train_batch_size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "measured on 16 pairs of images, x from the reference data, fashion-mnist" in printed
    assert "y from the downstream data, digits" in printed and "by the " in printed
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "x from the reference data, fashion-mnist" in card and "y from the downstream data, digits" in card
    assert "`hf-plasticity/vit-fashion-mnist`" in card  # the bundled model by its id, not its install path
    assert not re.search(r"(?:^|[\s`'\"(=:])/(?:[\w.~-]+/)+", card, re.MULTILINE)


@pytest.mark.parametrize("flag", ["--output-dir", "--output_dir", "--out-dir"], ids=["dash", "underscore", "old"])
def test_cli_finetune_output_dir_spellings(flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every spelling reaches TrainingArguments.output_dir (``--out-dir`` is the old one, kept as an alias)."""
    seen: list[str] = []

    class Stop(Exception):
        pass

    def stop(ft_args: object, training_args: TrainingArguments) -> None:
        seen.append(training_args.output_dir)
        raise Stop

    monkeypatch.setattr("hf_plasticity.integrations.training.run_finetune", stop)
    with pytest.raises(Stop):
        main(["finetune", flag, str(tmp_path / "run")])
    assert seen == [str(tmp_path / "run")]
