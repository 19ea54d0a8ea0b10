"""Trainer finetuning of text models: a causal LM and a text classifier learn, and their adapters reload exactly."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer, TrainingArguments

from hf_plasticity import InvalidInputError, PlasticityConfig
from hf_plasticity.cli import main
from hf_plasticity.data.text import token_windows
from hf_plasticity.integrations.training import finetune, text_dataset
from tests.text_data import (
    DOWNSTREAM_TEXT,
    REFERENCE_TEXT,
    save_with_tokenizer,
    tiny_bert_classifier,
    tiny_llama,
    tiny_llama_classifier,
    word_tokenizer,
)

L = 16
LABELLED = {"text": REFERENCE_TEXT + DOWNSTREAM_TEXT, "label": [0] * len(REFERENCE_TEXT) + [1] * len(DOWNSTREAM_TEXT)}
"""Which module's docstring a paragraph comes from: argparse/json/collections/functools (0) or the others (1)."""

CASES = {
    "llama-causal-lm": ("CAUSAL_LM", tiny_llama),
    "bert-seq-cls": ("SEQ_CLS", tiny_bert_classifier),
    "llama-seq-cls": ("SEQ_CLS", tiny_llama_classifier),
}
"""Model and task per case: the task types' text models (a causal LM, a post-norm encoder, a decoder's score head)."""


def training_args(out: Path, **kw: object) -> TrainingArguments:
    base = {
        "output_dir": str(out),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "max_steps": 30,
        "learning_rate": 3e-3,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 5,
        "disable_tqdm": True,
        "seed": 0,
        "use_cpu": True,
    }
    return TrainingArguments(**{**base, **kw})


def _loss(model: torch.nn.Module, task: str) -> float:
    """The training objective on the whole data, computed directly from the model's forward."""
    model.eval()
    with torch.no_grad():
        if task == "CAUSAL_LM":
            windows = token_windows(LABELLED["text"], word_tokenizer(), L)
            return float(model(input_ids=windows, labels=windows).loss)
        batch = word_tokenizer()(LABELLED["text"], truncation=True, max_length=L, padding=True, return_tensors="pt")
        return float(model(**batch, labels=torch.tensor(LABELLED["label"])).loss)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    batch = word_tokenizer()(DOWNSTREAM_TEXT[:4], truncation=True, max_length=L, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module", params=list(CASES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    task, make = CASES[request.param]
    out = tmp_path_factory.mktemp(request.param)
    model = make()
    before = _loss(model, task)
    data = datasets.Dataset.from_dict(LABELLED)
    config = PlasticityConfig(task_type=task)
    result = finetune(model, data, data, config, training_args(out), tokenizer=word_tokenizer(), seq_len=L)
    return {"task": task, "make": make, "out": out, "result": result, "before": before}


def test_finetuning_lowers_the_training_objective(trained: dict) -> None:
    after = _loss(trained["result"].model, trained["task"])
    assert after < trained["before"] - 0.05, (trained["before"], after)


def test_the_saved_adapter_reloads_to_identical_outputs(trained: dict) -> None:
    reloaded = PeftModel.from_pretrained(trained["make"](), trained["out"] / "adapter")
    assert torch.equal(_logits(reloaded), _logits(trained["result"].model))


def test_the_tokenizer_is_saved_with_the_adapter(trained: dict) -> None:
    saved = AutoTokenizer.from_pretrained(trained["out"] / "adapter")
    assert saved(DOWNSTREAM_TEXT[0])["input_ids"] == word_tokenizer()(DOWNSTREAM_TEXT[0])["input_ids"]


def test_evaluation_reports_the_task_metric(trained: dict) -> None:
    metrics = trained["result"].eval_metrics
    assert "eval_loss" in metrics
    assert ("eval_accuracy" in metrics) == (trained["task"] == "SEQ_CLS")


# ------------------------------------------------------------------------------------- text_dataset
def test_causal_lm_rows_become_windows_that_are_their_own_labels() -> None:
    ds = text_dataset(datasets.Dataset.from_dict({"text": DOWNSTREAM_TEXT}), word_tokenizer(), "CAUSAL_LM", L)
    windows = token_windows(DOWNSTREAM_TEXT, word_tokenizer(), L)
    rows = ds[:]
    assert torch.equal(rows["input_ids"], windows) and torch.equal(rows["labels"], windows)


def test_classification_rows_are_truncated_and_keep_their_labels() -> None:
    ds = text_dataset(datasets.Dataset.from_dict(LABELLED), word_tokenizer(), "SEQ_CLS", L)
    assert ds["labels"] == LABELLED["label"]
    assert max(len(ids) for ids in ds["input_ids"]) == L
    assert ds[0]["input_ids"] == word_tokenizer()(LABELLED["text"][0], truncation=True, max_length=L)["input_ids"]


@pytest.mark.parametrize(
    ("data", "task", "match"),
    [
        ({"text": DOWNSTREAM_TEXT}, "SEQ_CLS", "needs a 'label' column"),
        ({"n": [1, 2]}, "CAUSAL_LM", "no text column"),
        ({"text": DOWNSTREAM_TEXT}, "IMAGE_CLS", "not a text task"),
    ],
    ids=["classification-without-labels", "no-text", "image-task"],
)
def test_text_dataset_refuses_what_it_cannot_train_on(data: dict, task: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        text_dataset(datasets.Dataset.from_dict(data), word_tokenizer(), task, L)


def test_text_task_without_tokenizer_asks_for_one(tmp_path: Path) -> None:
    data = datasets.Dataset.from_dict({"text": DOWNSTREAM_TEXT})
    with pytest.raises(InvalidInputError, match="pass tokenizer="):
        finetune(tiny_llama(), data, None, PlasticityConfig(task_type="CAUSAL_LM"), training_args(tmp_path))


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("case", list(CASES))
def test_cli_finetune_on_a_text_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    task, make = CASES[case]
    folder = save_with_tokenizer(make(), tmp_path / "model")
    if task == "CAUSAL_LM":
        data = tmp_path / "corpus.txt"
        data.write_text("\n\n".join(DOWNSTREAM_TEXT), encoding="utf-8")
    else:
        data = tmp_path / "labelled.jsonl"
        rows = [{"text": t, "label": y} for t, y in zip(LABELLED["text"], LABELLED["label"], strict=True)]
        data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    argv = ["finetune", "--model", str(folder), "--data", str(data), "--output-dir", str(out), "--seq-len", str(L)]
    argv += ["--num-pairs", "8", "--max-steps", "4", "--per-device-train-batch-size", "8", "--use-cpu"]
    argv += ["--disable-tqdm", "true", "--eval-strategy", "no", "--watch-every", "2", "--watch-pairs", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "selected (" in printed
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "report.json").is_file()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == task
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["eval_loss"] > 0
    series = json.loads((out / "plasticity_series.json").read_text())  # held-out windows re-measured at 0, 2, 4
    assert [row["step"] for row in series["plasticity"]] == [0, 2, 4]


def test_cli_finetune_refuses_a_task_that_does_not_fit_the_data(tmp_path: Path, capsys) -> None:
    folder = save_with_tokenizer(tiny_llama(), tmp_path / "model")
    argv = [
        "finetune",
        "--model",
        str(folder),
        "--data",
        "digits",
        "--task",
        "CAUSAL_LM",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "does not fit the data 'digits', which holds images" in capsys.readouterr().err
