"""Token pairs: windows cut from text, checked ``input_ids``, and pair plans over tokens (seeded, sharded)."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch

from hf_plasticity.data.pairs import make_pair_batches
from hf_plasticity.data.text import check_token_ids, read_text_file, token_windows
from hf_plasticity.errors import EmptyDataError, InvalidInputError, NotEnoughPairsError
from tests.text_data import DOWNSTREAM_TEXT, REFERENCE_TEXT, word_tokenizer

VOCAB = 50


def ids(n: int, length: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def _by_hand(rows: list[str], length: int) -> list[list[int]]:
    """The definition: every row's ids (special tokens included), joined end to end, cut every L tokens."""
    stream: list[int] = []
    for row in rows:
        stream += word_tokenizer()(row)["input_ids"]
    return [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)]


# ----------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("length", [1, 7, 64], ids=["L1", "L7", "L64"])
def test_windows_are_the_joined_token_stream_cut_every_l_tokens(length: int) -> None:
    windows = token_windows(REFERENCE_TEXT, word_tokenizer(), length)
    assert windows.dtype == torch.int64
    assert windows.tolist() == _by_hand(REFERENCE_TEXT, length)


def test_windows_of_a_dataset_text_column_equal_those_of_its_strings() -> None:
    ds = datasets.Dataset.from_dict({"text": DOWNSTREAM_TEXT, "label": [0] * len(DOWNSTREAM_TEXT)})
    assert torch.equal(token_windows(ds, word_tokenizer(), 16), token_windows(DOWNSTREAM_TEXT, word_tokenizer(), 16))


def test_text_shorter_than_one_window_names_its_token_count() -> None:
    with pytest.raises(NotEnoughPairsError, match=r"makes 4 tokens, fewer than one window of seq_len=8"):
        token_windows(["one two three"], word_tokenizer(), 8)


@pytest.mark.parametrize(
    ("texts", "error"),
    [([], EmptyDataError), ([""], NotEnoughPairsError)],
    ids=["no-rows", "empty-string"],
)
def test_empty_text_is_refused(texts: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        token_windows(texts, word_tokenizer(), 4)


def test_windows_without_tokenizer_name_the_fix() -> None:
    with pytest.raises(InvalidInputError, match=r"tokenizer=AutoTokenizer.from_pretrained"):
        token_windows(REFERENCE_TEXT, None, 8)


def test_text_file_rows_are_its_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nstill first\n\n\nsecond\r\n\r\nthird\n", encoding="utf-8")
    assert read_text_file(path) == ["first line\nstill first", "second", "third"]


def test_empty_text_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(EmptyDataError, match="empty"):
        read_text_file(tmp_path / "empty.txt")


# ------------------------------------------------------------------------------------- input_ids
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (ids(4, 8).float(), r"float32, not integers.*ids.long\(\)"),
        (ids(4, 8).float() + 0.5, r"float32, not integers.*tokenizer's ids"),
        (ids(4, 8).bool(), "not integers"),
        (
            ids(4, 8) + VOCAB,
            rf"token id {2 * VOCAB - 1}|token id \d+, outside the model's vocabulary \(0..{VOCAB - 1}\)",
        ),
        (ids(4, 8) - VOCAB, r"token id -\d+, outside"),
        (ids(4, 8)[:, :0], "0 tokens"),
        (ids(4, 8)[None], r"shape \(N, L\)"),
    ],
    ids=["float", "fractional", "bool", "beyond-vocab", "negative", "empty-sequences", "3d"],
)
def test_bad_input_ids_are_refused(bad: torch.Tensor, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        check_token_ids(bad, "downstream", VOCAB)


def test_int32_ids_become_int64_unchanged() -> None:
    original = ids(3, 5)
    checked = check_token_ids(original.int(), "downstream", VOCAB)
    assert checked.dtype == torch.int64 and torch.equal(checked, original)


# ------------------------------------------------------------------------------------- pair plans
def _collect(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*pairs.batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_reference_ids_supply_x_and_data_ids_supply_y() -> None:
    ref, data = ids(20, 6, seed=1), ids(30, 6, seed=2)
    x, y = _collect(make_pair_batches(data, ref, num_pairs=12, batch_size=5, seed=3, vocab_size=VOCAB))
    rows_of = {tuple(r) for r in ref.tolist()}, {tuple(r) for r in data.tolist()}
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (12, 6)
    assert all(tuple(r) in rows_of[0] for r in x.tolist())
    assert all(tuple(r) in rows_of[1] for r in y.tolist())


def test_token_pairs_are_seeded_and_disjoint_within_one_source() -> None:
    data = torch.arange(40 * 3).reshape(40, 3)  # every row distinct
    first = _collect(make_pair_batches(data, num_pairs=15, batch_size=4, seed=7))
    again = _collect(make_pair_batches(data, num_pairs=15, batch_size=4, seed=7))
    other = _collect(make_pair_batches(data, num_pairs=15, batch_size=4, seed=8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    rows = [tuple(r) for r in torch.cat(first).tolist()]
    assert len(set(rows)) == 30  # x and y never share a window


@pytest.mark.parametrize("world_size", [2, 3], ids=["two-processes", "three-processes"])
def test_token_shards_partition_the_one_process_batches(world_size: int) -> None:
    ref, data = ids(50, 4, seed=1), ids(50, 4, seed=2)
    whole = make_pair_batches(data, ref, num_pairs=37, batch_size=6, seed=0)
    batches = list(whole.batches)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for rank in range(world_size):
        shard = make_pair_batches(data, ref, num_pairs=37, batch_size=6, seed=0, rank=rank, world_size=world_size)
        got = list(shard.batches)
        assert shard.batch_ids == list(range(rank, len(batches), world_size))
        assert shard.plan == whole.plan
        seen.update(zip(shard.batch_ids, got, strict=True))
    assert sorted(seen) == list(range(len(batches)))
    for index, (x, y) in enumerate(batches):
        assert torch.equal(seen[index][0], x) and torch.equal(seen[index][1], y)


def test_text_data_sets_pair_windows_of_the_reference_with_windows_of_the_downstream() -> None:
    ref = datasets.Dataset.from_dict({"text": REFERENCE_TEXT})
    data = datasets.Dataset.from_dict({"text": DOWNSTREAM_TEXT})
    pairs = make_pair_batches(data, ref, num_pairs=10, batch_size=4, seed=0, tokenizer=word_tokenizer(), seq_len=12)
    x, y = _collect(pairs)
    ref_windows = {tuple(w) for w in _by_hand(REFERENCE_TEXT, 12)}
    data_windows = {tuple(w) for w in _by_hand(DOWNSTREAM_TEXT, 12)}
    assert x.shape == y.shape == (10, 12)
    assert all(tuple(w) in ref_windows for w in x.tolist())
    assert all(tuple(w) in data_windows for w in y.tolist())
    assert pairs.num_pairs == 10


def test_the_plan_depends_on_the_window_length() -> None:
    kwargs = {"num_pairs": 4, "batch_size": 4, "seed": 0, "tokenizer": word_tokenizer()}
    short = make_pair_batches(DOWNSTREAM_TEXT, REFERENCE_TEXT, seq_len=8, **kwargs)
    long = make_pair_batches(DOWNSTREAM_TEXT, REFERENCE_TEXT, seq_len=16, **kwargs)
    assert short.plan != long.plan


def test_pre_tokenized_input_ids_column_is_used_as_is() -> None:
    data = ids(10, 5, seed=4)
    ds = datasets.Dataset.from_dict({"input_ids": data.tolist()})
    x, y = _collect(make_pair_batches(ds, num_pairs=5, batch_size=5, seed=0))
    assert {tuple(r) for r in torch.cat([x, y]).tolist()} == {tuple(r) for r in data.tolist()}


def test_text_column_is_chosen_among_several() -> None:
    ds = datasets.Dataset.from_dict({"title": ["a b"] * len(DOWNSTREAM_TEXT), "body": DOWNSTREAM_TEXT})
    with pytest.raises(InvalidInputError, match=r"several text columns.*text_column="):
        make_pair_batches(ds, num_pairs=2, batch_size=2, seed=0, tokenizer=word_tokenizer(), seq_len=8)
    x, _ = _collect(
        make_pair_batches(
            ds, num_pairs=2, batch_size=2, seed=0, tokenizer=word_tokenizer(), seq_len=8, text_column="body"
        )
    )
    assert {tuple(w) for w in x.tolist()} <= {tuple(w) for w in _by_hand(DOWNSTREAM_TEXT, 8)}


@pytest.mark.parametrize(
    ("data", "reference", "kwargs", "error", "match"),
    [
        (ids(8, 6), ids(8, 7), {}, InvalidInputError, "6 tokens.*have 7|7 tokens.*have 6"),
        (
            ids(8, 6),
            torch.randn(8, 3, 4, 4),
            {},
            InvalidInputError,
            "holds pixels but the downstream data holds input_ids",
        ),
        (ids(8, 6), None, {"vocab_size": 10}, InvalidInputError, "outside the model's vocabulary"),
        (ids(8, 6), None, {"max_length": 4}, InvalidInputError, "at most 4 .*seq_len <= 4"),
        (ids(8, 6).double(), None, {}, InvalidInputError, "not integers"),
        (DOWNSTREAM_TEXT, None, {}, InvalidInputError, "raw text but no tokenizer"),
        (["too short"], None, {"tokenizer": word_tokenizer()}, NotEnoughPairsError, "fewer than one window"),
    ],
    ids=[
        "mismatched-lengths",
        "ids-and-pixels",
        "beyond-vocab",
        "longer-than-positions",
        "float-ids",
        "missing-tokenizer",
        "too-short-text",
    ],
)
def test_bad_token_data_is_refused(data, reference, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        list(make_pair_batches(data, reference, num_pairs=2, batch_size=2, seed=0, **kwargs).batches)


# ------------------------------------------------------------------------------------ DataLoaders
def test_dataloader_of_input_ids_dicts_is_streamed_in_order() -> None:
    data = ids(12, 5)
    rows = [{"input_ids": r, "attention_mask": torch.ones_like(r)} for r in data]
    loader = torch.utils.data.DataLoader(rows, batch_size=4)
    x, y = _collect(make_pair_batches(loader, num_pairs=6, batch_size=4, seed=0, vocab_size=VOCAB))
    assert torch.equal(x, torch.cat([data[0:2], data[4:6], data[8:10]]))
    assert torch.equal(y, torch.cat([data[2:4], data[6:8], data[10:12]]))


def test_padded_dataloader_batches_are_refused() -> None:
    data = ids(4, 5)
    mask = torch.ones_like(data)
    mask[1, -2:] = 0
    loader = torch.utils.data.DataLoader(
        [{"input_ids": d, "attention_mask": m} for d, m in zip(data, mask, strict=True)], batch_size=4
    )
    with pytest.raises(InvalidInputError, match="padded"):
        list(make_pair_batches(loader, num_pairs=2, batch_size=4, seed=0).batches)
