"""Token pairs for text models: ``input_ids`` checked against the vocabulary, and fixed windows cut from text.

A pair of text inputs is two token sequences of the same length L, so the rates compare (L x d) matrices of
the same shape. From raw text, every row is tokenized (with the tokenizer's own special tokens, as
transformers' language-modelling examples do), the token streams are joined end to end and cut into windows
of exactly L tokens; the incomplete tail is dropped. Nothing is padded, so a window's attention mask is all
ones and no padding token ever enters a rate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EmptyDataError, InvalidInputError, NotEnoughPairsError

DEFAULT_SEQ_LEN = 128
"""Tokens per window when the caller does not say (capped by the model's ``max_position_embeddings``)."""

TEXT_COLUMNS = ("text", "content", "sentence", "document", "review")
"""Column names taken for text when the caller names none and a data set has several string columns."""

_TOKENIZE_ROWS = 1_000  # rows tokenized per call: bounds the memory of one call on a large corpus


def is_token_tensor(t: Any) -> bool:
    """Whether a tensor has the shape of ``input_ids``, (N, L), rather than pixels (N, C, H, W)."""
    return isinstance(t, torch.Tensor | np.ndarray) and t.ndim == 2


def check_token_ids(ids: Any, role: str, vocab_size: int | None = None) -> torch.Tensor:
    """``ids`` as an int64 (N, L) tensor, refusing what the embedding would fail on or silently misread.

    A float tensor is refused rather than cast (a cast would hide ids that are not whole numbers, or pixel
    data of the wrong shape); ids must lie in ``0 .. vocab_size - 1`` (an embedding lookup past its table
    fails on a GPU with an unreadable device-side assert).
    """
    if isinstance(ids, np.ndarray):
        ids = torch.from_numpy(ids)
    if not isinstance(ids, torch.Tensor):
        raise InvalidInputError(f"the {role} input_ids are a {type(ids).__name__}; pass a tensor of shape (N, L)")
    if ids.ndim != 2:
        raise InvalidInputError(
            f"the {role} input_ids must have shape (N, L) (N sequences of L tokens); got {tuple(ids.shape)}"
        )
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        hint = "ids.long()" if ids.is_floating_point() and bool((ids == ids.round()).all()) else "the tokenizer's ids"
        raise InvalidInputError(
            f"the {role} input_ids are {ids.dtype}, not integers: token ids index the vocabulary; pass {hint} "
            "(an integer tensor, e.g. tokenizer(texts, return_tensors='pt')['input_ids'])"
        )
    if ids.shape[1] == 0:
        raise InvalidInputError(f"the {role} input_ids hold sequences of 0 tokens; pass at least one token each")
    ids = ids.long()
    if ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or (vocab_size is not None and high >= vocab_size):
            bad = low if low < 0 else high
            limit = f"0..{vocab_size - 1}" if vocab_size is not None else "0 or more"
            raise InvalidInputError(
                f"the {role} input_ids hold the token id {bad}, outside the model's vocabulary ({limit}); "
                "tokenize with the model's own tokenizer (the ids of another tokenizer mean other words)"
            )
    return ids


def check_same_length(x_len: int, y_len: int) -> None:
    """A pair's two sequences must have one length: the rate compares two (L x d) matrices."""
    if x_len != y_len:
        raise InvalidInputError(
            f"the reference sequences have {x_len} tokens but the downstream ones have {y_len}: a pair's two "
            "inputs must have the same length; cut both to one length L (with text data sets, seq_len= does it)"
        )


def check_max_length(length: int, max_length: int | None, role: str) -> None:
    """Refuse windows longer than the model's position table, before a forward fails on an index."""
    if max_length is not None and length > max_length:
        raise InvalidInputError(
            f"the {role} sequences have {length} tokens but the model takes at most {max_length} "
            f"(max_position_embeddings); pass seq_len <= {max_length} or shorter input_ids"
        )


def find_text_column(dataset: Any, role: str, text_column: str | None = None) -> str | None:
    """The column holding raw text, or None when the data set holds none (e.g. images or ``input_ids``)."""
    import datasets

    strings = [
        name
        for name, feature in dataset.features.items()
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    ]
    if text_column is not None:
        if text_column not in dataset.column_names:
            raise InvalidInputError(
                f"the {role} data set has no column {text_column!r} (columns: {dataset.column_names}); "
                "pass text_column= one of them"
            )
        return text_column
    if len(strings) == 1:
        return strings[0]
    for name in TEXT_COLUMNS:
        if name in strings:
            return name
    if strings:
        raise InvalidInputError(
            f"the {role} data set has several text columns ({strings}); pass text_column= (CLI: --text-column) "
            "to say which one to tokenize"
        )
    return None


def token_windows(
    texts: Sequence[str] | Any,
    tokenizer: Any,
    seq_len: int,
    *,
    role: str = "downstream",
    text_column: str | None = None,
) -> torch.Tensor:
    """Tokenize ``texts`` (strings, or a ``datasets.Dataset`` with a text column) into (N, seq_len) windows.

    Rows are tokenized with the tokenizer's special tokens, joined end to end and cut into consecutive
    windows of ``seq_len`` tokens; the tail shorter than ``seq_len`` is dropped. Raises
    :class:`~hf_plasticity.errors.NotEnoughPairsError` when the text does not fill one window.
    """
    if tokenizer is None:
        raise InvalidInputError(missing_tokenizer_message(role))
    if isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer) or seq_len < 1:
        raise InvalidInputError(f"seq_len must be a positive int (tokens per window); got {seq_len!r}")
    rows = _text_rows(texts, role, text_column)
    if not rows:
        raise EmptyDataError(f"the {role} text is empty: it holds no rows")
    pieces: list[np.ndarray] = []
    for start in range(0, len(rows), _TOKENIZE_ROWS):
        chunk = [str(r) for r in rows[start : start + _TOKENIZE_ROWS]]
        encoded = tokenizer(chunk, add_special_tokens=True)["input_ids"]
        pieces.extend(np.asarray(ids, dtype=np.int64) for ids in encoded if len(ids))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    count = len(stream) // seq_len
    if count == 0:
        raise NotEnoughPairsError(
            f"the {role} text makes {len(stream)} tokens, fewer than one window of seq_len={seq_len}; pass more "
            f"text or a smaller seq_len (at most {len(stream)})"
            if len(stream)
            else f"the {role} text makes no tokens at all (empty strings?); pass real text"
        )
    return torch.from_numpy(stream[: count * seq_len].reshape(count, seq_len).copy())


def missing_tokenizer_message(role: str) -> str:
    return (
        f"the {role} data is raw text but no tokenizer was given and the model folder has none; pass "
        "tokenizer=AutoTokenizer.from_pretrained(NAME_OR_PATH) (CLI: --tokenizer NAME_OR_PATH), or save the "
        "tokenizer beside the model (tokenizer.save_pretrained(model_folder))"
    )


def read_text_file(path: str | os.PathLike[str]) -> list[str]:
    """A plain text file as rows: its paragraphs (blocks separated by blank lines), whitespace kept inside."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path} is not UTF-8 text ({exc}); pass a UTF-8 text file") from exc
    paragraphs = [p.strip() for p in content.replace("\r\n", "\n").split("\n\n")]
    rows = [p for p in paragraphs if p]
    if not rows:
        raise EmptyDataError(f"the text file {path} is empty")
    return rows


def _text_rows(texts: Any, role: str, text_column: str | None) -> list[Any]:
    if isinstance(texts, str):
        return [texts]
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(texts, datasets.Dataset):
        column = find_text_column(texts, role, text_column)
        if column is None:
            raise InvalidInputError(
                f"the {role} data set has no text column (columns: {texts.column_names}); pass text_column="
            )
        return list(texts[column])
    if isinstance(texts, Sequence) and all(isinstance(t, str) for t in texts):
        return list(texts)
    raise InvalidInputError(
        f"cannot read {role} text from a {type(texts).__name__}; pass strings or a datasets.Dataset with a text column"
    )


def build_word_tokenizer(texts: Sequence[str], vocab_size: int = 1_000) -> Any:
    """A small word-level tokenizer trained on ``texts``, offline, as a ``PreTrainedTokenizerFast``.

    For models built from a random config (tests, demos, benchmarks) that have no tokenizer of their own and
    must not download one: lower-cased words split on whitespace and punctuation, ``<s>`` before every row,
    with ``<pad>``, ``<unk>``, ``<s>`` and ``</s>`` as ids 0..3. ``save_pretrained`` it beside the model so
    ``AutoTokenizer.from_pretrained(model_folder)`` finds it.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
