"""``hf-plasticity measure`` on text models: text files and data set folders, the tokenizer from the model folder."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from hf_plasticity.cli import main
from hf_plasticity.report.report import PlasticityReport
from tests.text_data import DOWNSTREAM_TEXT, REFERENCE_TEXT, save_with_tokenizer, tiny_llama, word_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-cli")
    paths = {
        "reference": root / "reference.txt",
        "data": root / "downstream.txt",
        "saved": root / "downstream-saved",
        "llama": save_with_tokenizer(tiny_llama(), root / "llama"),
        "bare": save_with_tokenizer(tiny_llama(), root / "llama-bare", tokenizer=False),
        "tokenizer": root / "tokenizer",
    }
    paths["reference"].write_text("\n\n".join(REFERENCE_TEXT), encoding="utf-8")
    paths["data"].write_text("\n\n".join(DOWNSTREAM_TEXT), encoding="utf-8")
    datasets.Dataset.from_dict({"text": DOWNSTREAM_TEXT}).save_to_disk(str(paths["saved"]))
    word_tokenizer().save_pretrained(paths["tokenizer"])
    return paths


def _measure(corpus: dict[str, Path], out: Path, *extra: str, model: str = "llama", data: str = "data") -> int:
    argv = ["measure", "--model", str(corpus[model]), "--data", str(corpus[data]), "--reference"]
    argv += [str(corpus["reference"]), "--seq-len", "16", "--num-pairs", "8", "--batch-size", "4"]
    return main([*argv, "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("data", ["data", "saved"], ids=["text-file", "saved-data-set"])
def test_measure_a_causal_lm_on_text(corpus: dict[str, Path], data: str, tmp_path: Path, capsys) -> None:
    assert _measure(corpus, tmp_path / "r.json", data=data) == 0
    report = PlasticityReport.load(tmp_path / "r.json")
    assert report.num_pairs == 8 and report.reference_name == str(corpus["reference"])
    assert report.model["model_type"] == "llama"
    assert "8 pairs, shared protocol" in capsys.readouterr().out


def test_the_text_file_and_its_saved_data_set_give_the_same_rates(corpus: dict[str, Path], tmp_path: Path) -> None:
    assert _measure(corpus, tmp_path / "file.json") == 0
    assert _measure(corpus, tmp_path / "saved.json", data="saved") == 0
    a, b = PlasticityReport.load(tmp_path / "file.json"), PlasticityReport.load(tmp_path / "saved.json")
    assert (a.rates == b.rates).all()


def test_a_model_folder_without_tokenizer_names_the_flag(corpus: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert _measure(corpus, tmp_path / "r.json", model="bare") == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_tokenizer_flag_supplies_the_missing_tokenizer(corpus: dict[str, Path], tmp_path: Path) -> None:
    assert _measure(corpus, tmp_path / "bare.json", "--tokenizer", str(corpus["tokenizer"]), model="bare") == 0
    assert _measure(corpus, tmp_path / "own.json") == 0
    bare, own = PlasticityReport.load(tmp_path / "bare.json"), PlasticityReport.load(tmp_path / "own.json")
    assert (bare.rates == own.rates).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--tokenizer", "/no/such/tokenizer"), "no tokenizer folder"),
        (("--seq-len", "4000"), "at most 64"),
        (("--text-column", "body"), "no column 'body'"),
    ],
    ids=["missing-tokenizer-folder", "window-longer-than-positions", "unknown-text-column"],
)
def test_bad_text_options_exit_2(
    corpus: dict[str, Path], extra: tuple[str, ...], message: str, tmp_path, capsys
) -> None:
    assert _measure(corpus, tmp_path / "r.json", *extra) == 2
    assert message in capsys.readouterr().err
