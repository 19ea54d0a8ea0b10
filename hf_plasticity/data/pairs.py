"""Turn what users have (tensors, DataLoaders, ``datasets.Dataset`` + image processor or tokenizer) into pairs.

The paper pairs an image x of the pretraining distribution (the *reference*) with an image y of the
downstream data; without a reference, pairs are disjoint draws from the downstream data. Text models pair
two token sequences of one length L the same way (``input_ids`` tensors, or windows cut from text by
:mod:`hf_plasticity.data.text`). Indexable sources are sampled with a seeded generator, so a measurement is
reproducible; DataLoaders are streamed in the order they yield. A batch is a pair of pixel tensors
(B, C, H, W) or of int64 ``input_ids`` (B, L); the estimator builds the model's inputs from either.

Pixels and token ids go through the one seeded pair plan and the one per-process sharding, so that shards of
either kind merge exactly; cutting text into windows, which only feeds that plan, is in :mod:`.text`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..compat import dataset_fingerprint
from ..errors import EmptyDataError, InvalidInputError, NotEnoughPairsError
from .text import (
    check_max_length,
    check_same_length,
    check_token_ids,
    find_text_column,
    is_token_tensor,
    missing_tokenizer_message,
    token_windows,
)

DEFAULT_MAX_PAIRS = 12_800
"""Pairs measured when the caller does not say: the paper's 200 batches of 64."""


@dataclass
class PairBatches:
    """An iterator of ``(x, y)`` batches (pixels or ``input_ids``) plus what a report needs to say about it.

    ``plan`` fingerprints the pair plan (seed, data identities, number of pairs): two measurements with
    the same plan draw the same pair ``i``. As batches are yielded, ``batch_ids`` and ``batch_ranges``
    record which global batches, and which ``[start, stop)`` pair indices, this process measured.
    """

    batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    num_pairs: int | None
    data_name: str
    reference_name: str | None
    plan: str = ""
    batch_ids: list[int] = field(default_factory=list)
    batch_ranges: list[tuple[int, int]] = field(default_factory=list)

    def _shard(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Only the batches ``b % world_size == rank``, recording each one's global index and pair range."""
        start = 0
        for index, (x, y) in enumerate(batches):
            stop = start + len(x)
            if index % world_size == rank:
                self.batch_ids.append(index)
                self.batch_ranges.append((start, stop))
                yield x, y
            start = stop


class _Indexable:
    """A source whose items can be fetched by index: a pixel or ``input_ids`` tensor, or a ``datasets.Dataset``."""

    def __init__(self, obj: Any, processor: Any, num_channels: int, role: str) -> None:
        self.obj = obj
        self.processor = processor
        self.num_channels = num_channels
        self.role = role
        self.image_column: str | None = None
        if is_hf_dataset(obj):
            self.image_column = _find_image_column(obj, role)
            if self.image_column != "pixel_values" and processor is None:
                raise InvalidInputError(
                    f"the {role} data set has images in column {self.image_column!r} but no image processor "
                    "was given and the model ships none (no preprocessor_config.json); on the command line "
                    "pass --image-processor NAME_OR_PATH (a Hub id or a folder with preprocessor_config.json), "
                    "in Python image_processor=AutoImageProcessor.from_pretrained(NAME_OR_PATH)"
                )

    def __len__(self) -> int:
        return len(self.obj)

    def fetch(self, index: torch.Tensor) -> torch.Tensor:
        if isinstance(self.obj, torch.Tensor):
            return self.obj[index]
        try:
            rows = self.obj[index.tolist()]
        except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for a corrupt or truncated image
            raise self._unreadable(index.tolist(), exc) from exc
        column = rows[self.image_column]
        if self.image_column == "pixel_values":
            return torch.as_tensor(np.asarray(column), dtype=torch.float32)
        mode = "RGB" if self.num_channels == 3 else "L" if self.num_channels == 1 else None
        images = [_to_pil(im, mode) for im in column]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def _unreadable(self, rows: list[int], exc: BaseException) -> InvalidInputError:
        """Name the image file that failed to decode, so the user can delete or replace it."""
        import datasets
        from PIL import Image

        column = self.image_column
        feature = self.obj.features.get(column) if column else None
        if isinstance(feature, datasets.Image):
            raw = self.obj.cast_column(column, datasets.Image(decode=False))
            for row in rows:
                item = raw[row][column] or {}
                try:
                    if item.get("bytes"):
                        Image.open(io.BytesIO(item["bytes"])).load()
                    elif item.get("path"):
                        Image.open(item["path"]).load()
                except (OSError, ValueError, SyntaxError) as inner:
                    where = item.get("path") or f"row {row}"
                    return InvalidInputError(
                        f"the {self.role} data holds an image that cannot be decoded: {where} ({inner}); "
                        "delete or replace that file (or filter the row out of the data set) and run again"
                    )
        return InvalidInputError(
            f"the {self.role} data holds an image that cannot be decoded (one of rows {rows[0]}..{rows[-1]}: "
            f"{exc}); find and remove it, e.g. with dataset.filter(...), and run again"
        )


def check_arguments(*, num_pairs: Any, batch_size: Any, seed: Any) -> None:
    """Reject argument types early: a float or None slips through Python until torch fails obscurely."""
    for name, value, allow_none in (("num_pairs", num_pairs, True), ("batch_size", batch_size, False)):
        if value is None and allow_none:
            continue
        if not _is_int(value):
            raise InvalidInputError(
                f"{name} must be an int{' or None' if allow_none else ''}; got {type(value).__name__} {value!r}"
                + (f" (pass {name}={int(value)})" if isinstance(value, float) and value.is_integer() else "")
            )
        if value < 1:
            raise InvalidInputError(f"{name} must be a positive int; got {value!r}")
    if not _is_int(seed):
        raise InvalidInputError(
            f"seed must be an int (it seeds the choice of pairs, so results are reproducible); got "
            f"{type(seed).__name__} {seed!r}; pass e.g. seed=0"
        )


def check_source(obj: Any, role: str, argument: str) -> None:
    """Catch data passed in a form we cannot measure, with the call that turns it into one we can."""
    if isinstance(obj, str | os.PathLike):
        raise InvalidInputError(
            f"{argument}={str(obj)!r} is a name, not data; load it first: {argument}="
            f"hf_plasticity.data.loaders.load_named_dataset({str(obj)!r}) (a bundled name, a local folder or a "
            "Hub id)"
        )
    if isinstance(obj, Mapping) or (hasattr(obj, "keys") and not is_hf_dataset(obj)):
        keys = list(obj.keys())
        if "input_ids" in keys:
            hint = f"{argument}={argument}['input_ids'] (shape (N, L))"
        elif "pixel_values" in keys:
            hint = f"{argument}={argument}['pixel_values'] (shape (N, C, H, W))"
        else:
            hint = "the pixel tensor (N, C, H, W) or input_ids (N, L) itself"
        raise InvalidInputError(
            f"the {role} data is a dict (keys: {keys}); pass {hint}, a datasets.Dataset, "
            "or a DataLoader yielding such dicts"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def make_pair_batches(
    data: Any,
    reference: Any = None,
    *,
    num_pairs: int | None,
    batch_size: int,
    seed: int,
    image_processor: Any = None,
    num_channels: int = 3,
    data_name: str | None = None,
    reference_name: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    tokenizer: Any = None,
    seq_len: int | None = None,
    text_column: str | None = None,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> PairBatches:
    """Plan the pairs and return the batches that realise them (nothing is loaded yet).

    The plan is the same on every process; ``rank``/``world_size`` keep this process's batches (every
    ``world_size``-th one, from ``rank``). Indexable sources load only those; DataLoaders are read whole,
    as only reading them tells where their batches fall.

    Text (a ``datasets.Dataset`` with a text column, or a list of strings) is cut into windows of
    ``seq_len`` tokens with ``tokenizer`` first (every process cuts the same windows), then sampled like
    any tensor. ``vocab_size`` and ``max_length`` (the model's) bound the ids and the sequence length.
    """
    check_arguments(num_pairs=num_pairs, batch_size=batch_size, seed=seed)
    check_source(data, "downstream", "data")
    if reference is not None:
        check_source(reference, "reference", "reference")
    names = (
        data_name or describe(data),
        None if reference is None else reference_name or describe(reference),
    )
    limits = {"vocab_size": vocab_size, "max_length": max_length}
    if _is_stream(data) or (reference is not None and _is_stream(reference)):
        out = PairBatches([], num_pairs, *names, plan=plan_fingerprint(data, reference, seed, num_pairs))
        out.batches = out._shard(_stream_pairs(data, reference, num_pairs, **limits), rank, world_size)
        return out

    text = {"tokenizer": tokenizer, "seq_len": seq_len, "text_column": text_column, "max_length": max_length}
    data = _tokenized(data, "downstream", **text)
    reference = None if reference is None else _tokenized(reference, "reference", **text)
    src = _as_indexable(data, image_processor, num_channels, "downstream", **limits)
    ref = None if reference is None else _as_indexable(reference, image_processor, num_channels, "reference", **limits)
    if ref is not None:
        _check_same_kind(ref.obj, src.obj)
    if ref is None:
        available, why = len(src) // 2, f"{len(src)} downstream examples make {len(src) // 2} disjoint pairs"
    else:
        available = min(len(src), len(ref))
        why = f"{len(ref)} reference and {len(src)} downstream examples make {available} pairs"
    if available == 0:
        raise NotEnoughPairsError(
            f"the downstream data holds {len(src)} example; pairs drawn within the data need at least 2 "
            "examples: pass more data, or a reference data set supplying the other image of each pair"
        )
    if num_pairs is None:
        num_pairs = min(available, DEFAULT_MAX_PAIRS)
    if num_pairs < 1 or num_pairs > available:
        raise NotEnoughPairsError(f"asked for {num_pairs} pairs but {why}; pass num_pairs <= {available} or more data")
    gen = torch.Generator().manual_seed(seed)
    if ref is None:
        perm = torch.randperm(len(src), generator=gen)
        x_idx, y_idx, x_src = perm[:num_pairs], perm[num_pairs : 2 * num_pairs], src
    else:
        x_idx = torch.randperm(len(ref), generator=gen)[:num_pairs]
        y_idx = torch.randperm(len(src), generator=gen)[:num_pairs]
        x_src = ref

    out = PairBatches([], num_pairs, *names, plan=plan_fingerprint(data, reference, seed, num_pairs))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index, start in enumerate(range(0, num_pairs, batch_size)):
            if index % world_size != rank:
                continue  # another process's batch: not loaded here
            stop = min(start + batch_size, num_pairs)
            out.batch_ids.append(index)
            out.batch_ranges.append((start, stop))
            yield x_src.fetch(x_idx[start:stop]), src.fetch(y_idx[start:stop])

    out.batches = batches()
    return out


def plan_fingerprint(data: Any, reference: Any, seed: int, num_pairs: int | None) -> str:
    """A short hash naming a pair plan: the seed, the identities of both data sources, the number of pairs.

    Reports with equal fingerprints index the same pairs, so their pair ranges can be compared for overlap.
    """
    blob = json.dumps(
        {"seed": seed, "pairs": num_pairs, "data": data_identity(data), "reference": data_identity(reference)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_identity(obj: Any) -> str | None:
    """What identifies a data source's content: a ``datasets`` fingerprint, or a hash of (a sample of) a tensor.

    A tensor is hashed whole up to 64 MiB, else through its shape and 256 evenly spaced examples. A DataLoader
    is named by its type and length (its content is not read twice for this).
    """
    if obj is None:
        return None
    if is_hf_dataset(obj):
        return f"datasets:{dataset_fingerprint(obj)}:{len(obj)}"
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.numel() * t.element_size() > 64 << 20:
            t = t[torch.linspace(0, len(t) - 1, 256).long()].contiguous()
        digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
        return f"tensor:{tuple(obj.shape)}:{obj.dtype}:{digest}"
    size = getattr(getattr(obj, "dataset", None), "__len__", None)
    return f"stream:{describe(obj)}:{size() if callable(size) else '?'}"


def _stream_pairs(
    data: Any,
    reference: Any,
    num_pairs: int | None,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs from DataLoaders in their own order: zipped with the reference, else each batch halved."""
    limit = DEFAULT_MAX_PAIRS if num_pairs is None else num_pairs
    produced = 0

    def inputs(role: str) -> Any:
        return lambda batch: _inputs_of(batch, role, vocab_size, max_length)

    if reference is None:
        stream: Iterator[tuple[torch.Tensor, torch.Tensor]] = (
            (b[: len(b) // 2], b[len(b) // 2 : 2 * (len(b) // 2)]) for b in map(inputs("downstream"), data)
        )
    else:
        stream = zip(
            map(inputs("reference"), _batched(reference)), map(inputs("downstream"), _batched(data)), strict=False
        )
    for x, y in stream:
        _check_same_kind(x, y)
        n = min(len(x), len(y), limit - produced)
        if n <= 0:
            continue
        produced += n
        yield x[:n], y[:n]
        if produced >= limit:
            return
    if produced == 0:
        raise EmptyDataError("the data yielded no pairs: the DataLoader is empty or its batches have one example")
    if num_pairs is not None and produced < num_pairs:
        raise NotEnoughPairsError(
            f"asked for {num_pairs} pairs but the DataLoader(s) yielded only {produced}; "
            f"pass num_pairs <= {produced} or more data"
        )


def _as_indexable(
    obj: Any,
    processor: Any,
    num_channels: int,
    role: str,
    vocab_size: int | None = None,
    max_length: int | None = None,
) -> _Indexable:
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        if is_token_tensor(obj):
            obj = check_token_ids(obj, role, vocab_size)
            check_max_length(obj.shape[1], max_length, role)
        elif obj.ndim != 4:
            raise InvalidInputError(
                f"{role} data must be pixel values of shape (N, channels, height, width) or input_ids of shape "
                f"(N, L), got {tuple(obj.shape)}"
            )
        else:
            obj = obj.float() if not obj.is_floating_point() else obj
    elif not is_hf_dataset(obj):
        raise InvalidInputError(
            f"cannot read {role} data of type {type(obj).__name__}: pass a pixel tensor (N, C, H, W), input_ids "
            "(N, L), a torch DataLoader, or a datasets.Dataset with an image column (plus an image processor) or "
            "a text column (plus a tokenizer)"
        )
    if len(obj) == 0:
        raise EmptyDataError(f"the {role} data is empty: it holds no examples")
    return _Indexable(obj, processor, num_channels, role)


def _batched(obj: Any) -> Iterable[Any]:
    """A stream of batches from a DataLoader, or a whole tensor as a single batch."""
    if isinstance(obj, torch.Tensor | np.ndarray):
        return [obj]
    return obj


def _inputs_of(batch: Any, role: str, vocab_size: int | None, max_length: int | None) -> torch.Tensor:
    """A DataLoader batch's model input: ``input_ids`` (B, L), checked, or pixels (B, C, H, W) as float."""
    if isinstance(batch, dict) or hasattr(batch, "keys"):
        if "input_ids" in batch:
            mask = batch.get("attention_mask")
            if mask is not None and not bool(torch.as_tensor(mask).bool().all()):
                raise InvalidInputError(
                    f"a {role} DataLoader batch is padded (its attention_mask has zeros): padding tokens would "
                    "enter the rates; yield unpadded windows of one length L (hf_plasticity.data.text."
                    "token_windows cuts them from text)"
                )
            batch = batch["input_ids"]
        elif "pixel_values" in batch:
            batch = batch["pixel_values"]
        else:
            raise InvalidInputError(
                f"DataLoader batches are dicts without 'pixel_values' or 'input_ids' (keys: {list(batch)})"
            )
    elif isinstance(batch, list | tuple):
        batch = batch[0]
    batch = torch.as_tensor(batch)
    if is_token_tensor(batch):
        ids = check_token_ids(batch, role, vocab_size)
        check_max_length(ids.shape[1], max_length, role)
        return ids
    if batch.ndim != 4:
        raise InvalidInputError(
            f"batches must be pixels of shape (N, channels, height, width) or input_ids of shape (N, L), got "
            f"{tuple(batch.shape)}"
        )
    return batch if batch.is_floating_point() else batch.float()


def _check_same_kind(x: Any, y: Any) -> None:
    """Both inputs of a pair are images, or both are token sequences of one length."""
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        return
    if is_token_tensor(x) != is_token_tensor(y):
        kinds = ["input_ids" if is_token_tensor(t) else "pixels" for t in (x, y)]
        raise InvalidInputError(
            f"the reference data holds {kinds[0]} but the downstream data holds {kinds[1]}: both inputs of a pair "
            "go through the same model, so pass the same kind of data for both"
        )
    if is_token_tensor(x):
        check_same_length(x.shape[1], y.shape[1])


def _tokenized(
    obj: Any, role: str, tokenizer: Any, seq_len: int | None, text_column: str | None, max_length: int | None
) -> Any:
    """Text (a list of strings, or a data set with a text or ``input_ids`` column) as windows of ``seq_len``
    token ids; anything else unchanged."""
    from .text import DEFAULT_SEQ_LEN

    length = DEFAULT_SEQ_LEN if seq_len is None else seq_len
    if needs_tokenizer(obj, text_column) or (is_hf_dataset(obj) and "input_ids" in obj.column_names):
        check_max_length(length, max_length, role)  # before tokenizing a corpus for windows the model cannot take
    if isinstance(obj, list | tuple) and obj and all(isinstance(t, str) for t in obj):
        if tokenizer is None:
            raise InvalidInputError(missing_tokenizer_message(role))
        return token_windows(list(obj), tokenizer, length, role=role)
    if not is_hf_dataset(obj) or _has_image_column(obj):
        return obj
    if text_column is None and "input_ids" in obj.column_names:
        rows = obj["input_ids"]
        if seq_len is None and len({len(r) for r in rows}) == 1:
            return torch.as_tensor(np.asarray(rows))  # already windows of one length: kept as they are
        stream = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if len(rows) else np.zeros(0)
        count = len(stream) // length
        if count == 0:
            raise NotEnoughPairsError(
                f"the {role} input_ids hold {len(stream)} tokens, fewer than one window of seq_len={length}; "
                "pass more data or a smaller seq_len"
            )
        return torch.from_numpy(stream[: count * length].reshape(count, length).astype(np.int64))
    column = find_text_column(obj, role, text_column)
    if column is None:
        return obj
    if tokenizer is None:
        raise InvalidInputError(missing_tokenizer_message(role))
    return token_windows(obj, tokenizer, length, role=role, text_column=column)


def needs_tokenizer(obj: Any, text_column: str | None = None) -> bool:
    """Whether ``obj`` is raw text (strings, or a data set whose model input is a text column)."""
    if isinstance(obj, list | tuple):
        return bool(obj) and all(isinstance(t, str) for t in obj)
    if not is_hf_dataset(obj) or _has_image_column(obj):
        return False
    if text_column is None and "input_ids" in obj.column_names:
        return False
    try:
        return find_text_column(obj, "the", text_column) is not None
    except InvalidInputError:
        return True  # several text columns: text all the same (which one is asked when the windows are cut)


def holds_images(obj: Any) -> bool:
    """Whether ``obj`` is image data: a pixel tensor (N, C, H, W) or a data set with an image column."""
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj.ndim == 4
    return is_hf_dataset(obj) and _has_image_column(obj)


def _has_image_column(ds: Any) -> bool:
    import datasets

    if "pixel_values" in ds.column_names:
        return True
    return any(isinstance(f, datasets.Image) for f in ds.features.values()) or any(
        name in ds.column_names for name in ("image", "img", "images")
    )


def _is_stream(obj: Any) -> bool:
    if isinstance(obj, list | tuple) and obj and all(isinstance(t, str) for t in obj):
        return False  # text: cut into windows, then sampled like a tensor
    return isinstance(obj, torch.utils.data.DataLoader) or (
        isinstance(obj, Iterable) and not isinstance(obj, torch.Tensor | np.ndarray) and not is_hf_dataset(obj)
    )


def is_hf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a ``datasets.Dataset``, without importing ``datasets`` (a second) when it is not."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(obj, datasets.Dataset)


def _find_image_column(ds: Any, role: str) -> str:
    import datasets

    if "pixel_values" in ds.column_names:
        return "pixel_values"
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            return name
    for name in ("image", "img", "images"):
        if name in ds.column_names:
            return name
    raise InvalidInputError(
        f"the {role} data set has no image column (columns: {ds.column_names}); cast one with "
        "dataset.cast_column(name, datasets.Image()) or add a 'pixel_values' column (for a text model: a text "
        "column plus tokenizer=, or an 'input_ids' column)"
    )


def _to_pil(image: Any, mode: str | None) -> Any:
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    return image.convert(mode) if mode and image.mode != mode else image


def describe(obj: Any) -> str:
    """A short human name for a data source, recorded in reports."""
    info = getattr(obj, "info", None)
    for attr in ("dataset_name", "builder_name"):
        name = getattr(info, attr, None)
        if name:
            return str(name)
    if isinstance(obj, torch.Tensor | np.ndarray):
        return f"tensor{tuple(obj.shape)}"
    if isinstance(obj, list | tuple) and obj and all(isinstance(t, str) for t in obj):
        return f"text({len(obj)} rows)"
    return type(obj).__name__
