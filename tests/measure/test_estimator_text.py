"""Measuring text models on text: every form of text input reaches the estimator as the same token pairs."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_plasticity import measure_plasticity
from hf_plasticity.data.text import token_windows
from hf_plasticity.errors import InvalidInputError, NotEnoughPairsError
from tests.text_data import (
    DOWNSTREAM_TEXT,
    REFERENCE_TEXT,
    save_with_tokenizer,
    tiny_bert_classifier,
    tiny_llama,
    word_tokenizer,
)

L = 16
OPTIONS = {"num_pairs": 12, "batch_size": 5, "bounds": False, "progress": False}


def _windows(rows: list[str]) -> torch.Tensor:
    return token_windows(rows, word_tokenizer(), L)


def _same_rates(a, b) -> None:
    assert a.num_pairs == b.num_pairs
    assert a.rates.shape == b.rates.shape and (a.rates == b.rates).all()


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
@pytest.mark.parametrize("form", ["strings", "dataset"], ids=["list-of-strings", "datasets-text-column"])
def test_text_measures_as_its_token_windows(protocol: str, form: str) -> None:
    model = tiny_llama()
    ref, data = REFERENCE_TEXT, DOWNSTREAM_TEXT
    if form == "dataset":
        ref, data = datasets.Dataset.from_dict({"text": ref}), datasets.Dataset.from_dict({"text": data})
    from_text = measure_plasticity(
        model, data, ref, protocol=protocol, tokenizer=word_tokenizer(), seq_len=L, **OPTIONS
    )
    from_ids = measure_plasticity(
        model, _windows(DOWNSTREAM_TEXT), _windows(REFERENCE_TEXT), protocol=protocol, **OPTIONS
    )
    _same_rates(from_text, from_ids)
    assert from_text.protocol == protocol and from_text.num_pairs == 12


@pytest.mark.filterwarnings("ignore::hf_plasticity.errors.SmallSampleWarning")  # the one-pair references
def test_dataloader_of_input_ids_dicts_measures_like_the_tensors_it_yields() -> None:
    model = tiny_llama()
    ref, data = _windows(REFERENCE_TEXT)[:12], _windows(DOWNSTREAM_TEXT)[:12]

    def loader(t: torch.Tensor) -> torch.utils.data.DataLoader:
        rows = [{"input_ids": r, "attention_mask": torch.ones_like(r)} for r in t]
        return torch.utils.data.DataLoader(rows, batch_size=4)

    streamed = measure_plasticity(model, loader(data), loader(ref), **{**OPTIONS, "batch_size": 4})
    # the same pairs, in the same order, from indexable tensors: ref row i with data row i
    direct = [
        measure_plasticity(model, data[i : i + 1], ref[i : i + 1], **{**OPTIONS, "num_pairs": 1}).rates
        for i in range(12)
    ]
    got = torch.as_tensor(streamed.rates)
    want = torch.cat([torch.as_tensor(r) for r in direct])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_tokenizer_saved_beside_the_model_is_used(tmp_path: Path) -> None:
    folder = save_with_tokenizer(tiny_llama(), tmp_path / "llama")
    model = AutoModelForCausalLM.from_pretrained(folder)
    found = measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, seq_len=L, **OPTIONS)
    given = measure_plasticity(
        model, DOWNSTREAM_TEXT, REFERENCE_TEXT, tokenizer=word_tokenizer(), seq_len=L, **OPTIONS
    )
    _same_rates(found, given)


def test_a_model_folder_without_tokenizer_asks_for_one(tmp_path: Path) -> None:
    folder = save_with_tokenizer(tiny_llama(), tmp_path / "llama", tokenizer=False)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(InvalidInputError, match=r"no tokenizer was given.*--tokenizer"):
        measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, seq_len=L, **OPTIONS)


def test_default_window_length_is_capped_by_the_model_positions() -> None:
    model = tiny_llama(max_positions=24)
    report = measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, tokenizer=word_tokenizer(), **OPTIONS)
    windows = token_windows(DOWNSTREAM_TEXT, word_tokenizer(), 24)
    direct = measure_plasticity(model, windows, token_windows(REFERENCE_TEXT, word_tokenizer(), 24), **OPTIONS)
    _same_rates(report, direct)


@pytest.mark.parametrize(
    ("data", "reference", "kwargs", "error", "match"),
    [
        (torch.full((4, 8), 10_000), None, {}, InvalidInputError, r"token id 10000, outside the model's vocabulary"),
        (
            torch.zeros(4, 80, dtype=torch.long),
            None,
            {},
            InvalidInputError,
            r"80 tokens but the model takes at most 64",
        ),
        (torch.zeros(4, 8), None, {}, InvalidInputError, "not integers"),
        (
            torch.zeros(4, 8, dtype=torch.long),
            torch.zeros(4, 9, dtype=torch.long),
            {},
            InvalidInputError,
            "same length",
        ),
        (
            ["a b c"],
            REFERENCE_TEXT,
            {"tokenizer": word_tokenizer(), "seq_len": L},
            NotEnoughPairsError,
            "fewer than one",
        ),
    ],
    ids=["beyond-vocab", "longer-than-positions", "float-ids", "mismatched-lengths", "too-short-text"],
)
def test_bad_text_input_is_refused_before_measuring(data, reference, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        measure_plasticity(tiny_llama(), data, reference, **{**OPTIONS, "num_pairs": 2}, **kwargs)


@pytest.mark.parametrize("world_size", [2, 3], ids=["two-shards", "three-shards"])
def test_text_shards_merge_to_the_one_process_report(world_size: int) -> None:
    model = tiny_bert_classifier()
    kwargs = {**OPTIONS, "tokenizer": word_tokenizer(), "seq_len": L}
    whole = measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, **kwargs)
    shards = [
        measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, rank=r, world_size=world_size, **kwargs)
        for r in range(world_size)
    ]
    merged = shards[0]
    for shard in shards[1:]:
        merged = merged.merge(shard)
    assert merged.num_pairs == whole.num_pairs
    for comp in whole.components:
        assert merged.stat(comp).mean == pytest.approx(whole.stat(comp).mean, rel=1e-6)


def test_text_for_an_image_model_is_refused_with_the_reason() -> None:
    from tests.conftest import TINY_MODELS

    with pytest.raises(InvalidInputError, match="is text but ViTForImageClassification takes images"):
        measure_plasticity(TINY_MODELS["vit"](), torch.zeros(4, 8, dtype=torch.long), **OPTIONS)


def test_pixels_for_a_text_model_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInputError, match="holds pixels but LlamaForCausalLM takes token ids"):
        measure_plasticity(tiny_llama(), torch.zeros(4, 3, 8, 8), **OPTIONS)
