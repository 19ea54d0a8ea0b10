"""Finetune the most plastic components with ``transformers.Trainer``: measure → select → train → evaluate → save.

:func:`finetune` is the training step a script, a notebook or an experiment calls with its own model, data and
``TrainingArguments``; :func:`run_finetune` is the whole pipeline behind ``hf-plasticity finetune`` (load a
model and a data set by name, measure, select, train, evaluate, write the adapter, the report and the
metrics). Both run unchanged under ``accelerate launch`` (the measurement shards itself; Trainer does DDP).

Three tasks: image classification (images or ``pixel_values`` with labels), ``SEQ_CLS`` (a text column with
labels, each row truncated to ``seq_len`` tokens and padded per batch) and ``CAUSAL_LM`` (text cut into
windows of ``seq_len`` tokens, each its own target).

The three tasks go through one measure-select-train-save pipeline and one ``FinetuneArguments``, so that a
flag means the same for every task; only the data preparation differs per task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..errors import InvalidInputError
from ..io import atomic_write_text, jsonable
from ..tuner.config import PlasticityConfig
from ..tuner.rules import DEFAULT_RULE, DEFAULT_VALUE, cli_help, parse_rule

if TYPE_CHECKING:
    import datasets
    from torch import nn
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from ..report.report import PlasticityReport


@dataclass
class FinetuneArguments:
    """What ``hf-plasticity finetune`` measures and selects; ``TrainingArguments`` say how it trains."""

    model: str = field(default="bundled", metadata={"help": "Hub id, local checkpoint folder, or 'bundled'."})
    data: str = field(
        default="digits", metadata={"help": "Downstream data: a bundled name, a local folder or a Hub id."}
    )
    reference: str | None = field(
        default="auto",
        metadata={
            "help": "Pretraining-like data for the pairs' x: a data set name, 'none' (pairs drawn within --data), "
            "or 'auto' (default): the bundled model's pretraining data (Fashion-MNIST, as in `hf-plasticity demo`) "
            "for --model bundled, else none."
        },
    )
    split: str | None = field(default=None, metadata={"help": "Split of --data for Hub or saved data sets."})
    rule: str = field(
        default=f"{DEFAULT_RULE}={DEFAULT_VALUE}",
        metadata={"help": cli_help()},
    )
    keep_original: bool = field(
        default=False, metadata={"help": "Train a copy beside the frozen original (default: in place)."}
    )
    num_pairs: int = field(default=512, metadata={"help": "Pairs measured to rank the components."})
    protocol: Literal["shared", "in_situ"] = field(default="shared", metadata={"help": "Measurement protocol."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of --data held out for evaluation."})
    watch_every: int = field(
        default=0, metadata={"help": "Re-measure plasticity on held-out pairs every N steps (0: never)."}
    )
    watch_pairs: int = field(default=64, metadata={"help": "Held-out pairs re-measured by --watch-every."})
    task: Literal["IMAGE_CLS", "SEQ_CLS", "CAUSAL_LM"] | None = field(
        default=None,
        metadata={
            "help": "What to train: IMAGE_CLS, SEQ_CLS (text with labels) or CAUSAL_LM (text). Default: images -> "
            "IMAGE_CLS; text -> CAUSAL_LM for a model saved as a causal LM, else SEQ_CLS."
        },
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Text: tokenizer (Hub id or folder); default: the model folder's own."}
    )
    seq_len: int = field(default=128, metadata={"help": "Text: tokens per window (CAUSAL_LM, pairs) or per row."})
    text_column: str | None = field(default=None, metadata={"help": "Text: the data's text column, if several."})


@dataclass
class FinetuneResult:
    """What a finetuning run produced: the trained PEFT model, its metrics and the files written."""

    model: Any
    trainer: Trainer
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    report: PlasticityReport | None = None
    files: dict[str, Path] = field(default_factory=dict)


def accuracy_metrics() -> Any:
    """``compute_metrics`` for Trainer: accuracy through ``evaluate``, with the metric loaded offline by path."""
    from .metrics import load_metric

    metric = load_metric("accuracy")

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        return metric.compute(predictions=np.argmax(logits, axis=-1), references=labels)

    return compute


def pixel_dataset(dataset: datasets.Dataset, image_processor: Any, num_channels: int = 3) -> datasets.Dataset:
    """An image/label data set as ``pixel_values``/``labels`` tensors (what the model's forward takes)."""
    from ..data.pairs import _find_image_column, _to_pil

    if "pixel_values" in dataset.column_names:
        out = dataset.rename_column("label", "labels") if "label" in dataset.column_names else dataset
        return out.with_format("torch")
    if image_processor is None:
        raise InvalidInputError("the data set holds images but no image processor was given to turn them into pixels")
    column = _find_image_column(dataset, "training")
    mode = "RGB" if num_channels == 3 else "L" if num_channels == 1 else None

    def encode(rows: dict[str, list[Any]]) -> dict[str, Any]:
        images = [_to_pil(im, mode) for im in rows[column]]
        return {"pixel_values": image_processor(images=images, return_tensors="np")["pixel_values"]}

    label = "label" if "label" in dataset.column_names else "labels"
    out = dataset.map(encode, batched=True, batch_size=256, remove_columns=[column], desc="encoding images")
    if label == "label":
        out = out.rename_column("label", "labels")
    return out.with_format("torch", columns=["pixel_values", "labels"])


TEXT_TASKS = ("SEQ_CLS", "CAUSAL_LM")
"""The text task types (PEFT's names) that :func:`finetune` trains."""


def text_dataset(
    dataset: datasets.Dataset,
    tokenizer: Any,
    task: str,
    seq_len: int = 128,
    text_column: str | None = None,
) -> datasets.Dataset:
    """A text data set as the model's training inputs.

    ``CAUSAL_LM``: the rows cut into windows of ``seq_len`` tokens (as the measurement cuts them), each window its
    own labels (the model shifts them). ``SEQ_CLS``: each row tokenized and truncated to ``seq_len`` tokens,
    with its ``label``; batches are padded by the collator.
    """
    import datasets as hf_datasets

    from ..data.text import find_text_column, token_windows

    if task not in TEXT_TASKS:
        raise InvalidInputError(f"task {task!r} is not a text task; choose one of {list(TEXT_TASKS)}")
    if "input_ids" in dataset.column_names and text_column is None:
        out = dataset.rename_column("label", "labels") if "label" in dataset.column_names else dataset
        return out.with_format("torch")
    column = find_text_column(dataset, "training", text_column)
    if column is None:
        raise InvalidInputError(f"the data set has no text column to train on (columns: {dataset.column_names})")
    if task == "CAUSAL_LM":
        windows = token_windows(dataset, tokenizer, seq_len, role="training", text_column=column).tolist()
        return hf_datasets.Dataset.from_dict({"input_ids": windows, "labels": windows}).with_format("torch")
    if "label" not in dataset.column_names and "labels" not in dataset.column_names:
        raise InvalidInputError("SEQ_CLS needs a 'label' column beside the text; for text alone use CAUSAL_LM")

    def encode(rows: dict[str, list[Any]]) -> dict[str, Any]:
        return tokenizer(rows[column], truncation=True, max_length=seq_len)

    keep = {"label", "labels"}
    out = dataset.map(
        encode, batched=True, remove_columns=[c for c in dataset.column_names if c not in keep], desc="tokenizing"
    )
    return out.rename_column("label", "labels") if "label" in out.column_names else out


def finetune(
    model: nn.Module,
    train_dataset: Any,
    eval_dataset: Any,
    config: PlasticityConfig | None,
    training_args: TrainingArguments,
    *,
    image_processor: Any = None,
    tokenizer: Any = None,
    seq_len: int = 128,
    text_column: str | None = None,
    compute_metrics: Any = None,
    callbacks: list[TrainerCallback] | None = None,
    save: bool = True,
) -> FinetuneResult:
    """Train ``model``'s plasticity-selected modules with ``Trainer``, evaluate, save the adapter.

    Args:
        model: a supported transformers model, or a ``PeftModel`` already carrying the adapter (then
            ``config`` must be None).
        train_dataset, eval_dataset: ``datasets.Dataset`` with images (decoded with ``image_processor``) or
            ``pixel_values``, and ``label``/``labels``; or, for text tasks (``config.task_type`` ``SEQ_CLS``
            or ``CAUSAL_LM``), a text column (tokenized with ``tokenizer``, see :func:`text_dataset`) or
            ``input_ids``; ``eval_dataset`` may be None.
        config: which modules to train; None trains the paper's choice (attention, ``top_k=1``).
        training_args: how to train (``resume_from_checkpoint`` is honoured).
        tokenizer: text tasks: tokenizes the data, pads classification batches, and is saved with the adapter.
        seq_len, text_column: text tasks: tokens per window (``CAUSAL_LM``) or per row (``SEQ_CLS``), and the
            text column when there are several.
        compute_metrics: default: accuracy with the bundled offline ``evaluate`` metric (none for
            ``CAUSAL_LM``, whose evaluation reports the loss).
        callbacks: extra Trainer callbacks; a :class:`PlasticityCallback` among them is put first, so the
            ``report_to`` integrations see what it logs.
        save: write the adapter to ``<output_dir>/adapter`` and the metrics to ``<output_dir>/metrics.json``
            (main process only).
    """
    from peft import PeftModel, get_peft_model
    from transformers import Trainer

    from .callbacks import PlasticityCallback

    if isinstance(model, PeftModel):
        if config is not None:
            raise InvalidInputError("the model is already a PeftModel; pass config=None to train its adapter")
        peft_model = model
    else:
        peft_model = get_peft_model(model, config if config is not None else PlasticityConfig())
    task = getattr(peft_model.peft_config[peft_model.active_adapter], "task_type", None)
    task = str(getattr(task, "value", task)) if task is not None else None
    extra: dict[str, Any] = {}
    if task in TEXT_TASKS:
        if tokenizer is None:
            raise InvalidInputError(
                f"a {task} model trains on text: pass tokenizer=AutoTokenizer.from_pretrained(NAME_OR_PATH)"
            )
        _ensure_pad_token(tokenizer, peft_model)
        train = text_dataset(train_dataset, tokenizer, task=task, seq_len=seq_len, text_column=text_column)
        evaluation = (
            None
            if eval_dataset is None
            else text_dataset(eval_dataset, tokenizer, task=task, seq_len=seq_len, text_column=text_column)
        )
        extra["processing_class"] = tokenizer  # saved beside the adapter
        if task == "SEQ_CLS":
            from transformers import DataCollatorWithPadding

            extra["data_collator"] = DataCollatorWithPadding(tokenizer)
        metrics = compute_metrics or (accuracy_metrics() if task == "SEQ_CLS" else None)
    else:
        channels = int(getattr(getattr(peft_model, "config", None), "num_channels", 3))
        train = pixel_dataset(train_dataset, image_processor, channels)
        evaluation = None if eval_dataset is None else pixel_dataset(eval_dataset, image_processor, channels)
        metrics = compute_metrics or accuracy_metrics()
    callbacks = list(callbacks or [])
    watchers = [c for c in callbacks if isinstance(c, PlasticityCallback)]
    trainer = Trainer(
        model=peft_model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        compute_metrics=metrics,
        callbacks=[c for c in callbacks if c not in watchers],
        **extra,
    )
    for watcher in watchers:  # before the reporting integrations, which log what on_log has added so far
        trainer.callback_handler.callbacks.insert(0, watcher)
    train_output = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    eval_metrics = trainer.evaluate() if evaluation is not None else {}
    result = FinetuneResult(
        model=peft_model,
        trainer=trainer,
        train_metrics=dict(train_output.metrics),
        eval_metrics=dict(eval_metrics),
    )
    if save:
        out = Path(str(training_args.output_dir))
        trainer.save_model(str(out / "adapter"))  # the main process writes; PEFT saves only the adapter
        if trainer.is_world_process_zero():
            metrics = {"train": result.train_metrics, "eval": result.eval_metrics}
            result.files["metrics"] = atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2))
        result.files["adapter"] = out / "adapter"
    return result


def run_finetune(args: FinetuneArguments, training_args: TrainingArguments, progress: bool = True) -> FinetuneResult:
    """``hf-plasticity finetune``: load, measure, select, train, evaluate, and write everything to ``output_dir``.

    Writes ``report.json`` and ``plasticity.png`` (the measurement that chose the modules), ``adapter/``,
    ``metrics.json`` and, with ``watch_every``, ``plasticity_series.json``/``.png``. Text data (a text file,
    or a data set with a text column) trains a causal LM or a sequence classifier (``args.task``).
    """
    from transformers.trainer_utils import set_seed

    from ..data.loaders import load_named_dataset
    from ..data.pairs import needs_tokenizer

    if not 0 < args.eval_fraction < 1:
        raise InvalidInputError(f"eval_fraction={args.eval_fraction} must be between 0 and 1 (e.g. 0.2)")
    rule = parse_rule(args.rule)
    data = load_named_dataset(args.data, split=args.split)
    reference, reference_name = finetune_reference(args.reference, args.model)
    is_text = needs_tokenizer(data, args.text_column) or "input_ids" in data.column_names
    task = _task(args, data, is_text)
    set_seed(training_args.seed)
    if task in TEXT_TASKS:
        return _run_text(args, training_args, task, rule, data, (reference, reference_name), progress)
    return _run_images(args, training_args, rule, data, (reference, reference_name), progress)


def _run_images(
    args: FinetuneArguments,
    training_args: TrainingArguments,
    rule: dict[str, Any],
    data: datasets.Dataset,
    named_reference: tuple[Any, str | None],
    progress: bool,
) -> FinetuneResult:
    from ..measure.estimator import measure_plasticity
    from ..models import BUNDLED, BUNDLED_MODEL_ID, load_image_processor, load_model
    from .callbacks import PlasticityCallback

    reference, reference_name = named_reference
    names = _label_names(data, args.data)
    splits = data.train_test_split(test_size=args.eval_fraction, seed=training_args.seed)
    model = load_model(
        args.model,
        num_labels=len(names),
        id2label=dict(enumerate(map(str, names))),
        label2id={str(n): i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    new_head(model)
    processor = load_image_processor(args.model)
    report = measure_plasticity(
        model,
        splits["train"],
        reference,
        protocol=args.protocol,
        num_pairs=min(args.num_pairs, _available_pairs(len(splits["train"]), reference)),
        image_processor=processor,
        seed=training_args.seed,
        progress=progress,
        data_name=args.data,
        reference_name=reference_name,
    )
    if args.model == BUNDLED:
        report.model["model_id"] = BUNDLED_MODEL_ID
    files = _save_report(report, training_args)
    config = PlasticityConfig.from_report(report, **rule, keep_original=args.keep_original)
    callbacks: list[Any] = []
    if args.watch_every:
        held_out = pixel_dataset(splits["test"], processor, int(getattr(model.config, "num_channels", 3)))
        n = min(args.watch_pairs, len(held_out) // 2)
        pixels = held_out[: 2 * n]["pixel_values"].float()
        callbacks.append(PlasticityCallback((pixels[:n], pixels[n:]), every=args.watch_every, seed=training_args.seed))
    result = finetune(
        model, splits["train"], splits["test"], config, training_args, image_processor=processor, callbacks=callbacks
    )
    return _finish(result, report, files, args, training_args)


def _run_text(
    args: FinetuneArguments,
    training_args: TrainingArguments,
    task: str,
    rule: dict[str, Any],
    data: datasets.Dataset,
    named_reference: tuple[Any, str | None],
    progress: bool,
) -> FinetuneResult:
    """Text: windows of ``seq_len`` tokens for the pairs (x from the reference, or pairs within the train split),
    the rows for training."""
    from ..data.text import missing_tokenizer_message, token_windows
    from ..measure.estimator import measure_plasticity
    from ..models import load_model, load_tokenizer
    from .callbacks import PlasticityCallback

    reference, reference_name = named_reference
    tokenizer = load_tokenizer(args.tokenizer or args.model, required=args.tokenizer is not None)
    if tokenizer is None:
        raise InvalidInputError(missing_tokenizer_message("training"))
    if len(data) < 2:
        raise InvalidInputError(f"the data set {args.data!r} has {len(data)} row: it cannot be split for evaluation")
    splits = data.train_test_split(test_size=args.eval_fraction, seed=training_args.seed)
    if task == "SEQ_CLS":
        names = _label_names(data, args.data)
        model = load_model(
            args.model,
            task=task,
            num_labels=len(names),
            id2label=dict(enumerate(map(str, names))),
            label2id={str(n): i for i, n in enumerate(names)},
            ignore_mismatched_sizes=True,
        )
        new_head(model)
    else:
        model = load_model(args.model, task=task)
    _ensure_pad_token(tokenizer, model)

    def windows(ds: Any, role: str) -> Any:
        if ds is None:
            return None
        return token_windows(ds, tokenizer, args.seq_len, role=role, text_column=args.text_column)

    x_windows, y_windows = windows(reference, "reference"), windows(splits["train"], "downstream")
    available = min(len(x_windows), len(y_windows)) if x_windows is not None else len(y_windows) // 2
    report = measure_plasticity(
        model,
        y_windows,
        x_windows,
        protocol=args.protocol,
        num_pairs=min(args.num_pairs, available),
        seed=training_args.seed,
        progress=progress,
        data_name=args.data,
        reference_name=reference_name,
    )
    files = _save_report(report, training_args)
    config = PlasticityConfig.from_report(
        report,
        **rule,
        keep_original=args.keep_original,
        task_type=task,
    )
    callbacks: list[Any] = []
    if args.watch_every:
        held_out = windows(splits["test"], "held-out")
        n = min(args.watch_pairs, len(held_out) // 2)
        callbacks.append(
            PlasticityCallback((held_out[:n], held_out[n : 2 * n]), every=args.watch_every, seed=training_args.seed)
        )
    result = finetune(
        model,
        splits["train"],
        splits["test"],
        config,
        training_args,
        tokenizer=tokenizer,
        seq_len=args.seq_len,
        text_column=args.text_column,
        callbacks=callbacks,
    )
    return _finish(result, report, files, args, training_args)


def _task(args: FinetuneArguments, data: datasets.Dataset, is_text: bool) -> str:
    """The task to train: the one asked for (checked against the data), or the one the data and model imply."""
    if args.task is not None:
        if (args.task in TEXT_TASKS) != is_text:
            kind = "text" if is_text else "images"
            raise InvalidInputError(f"task {args.task} does not fit the data {args.data!r}, which holds {kind}")
        return args.task
    if not is_text:
        return "IMAGE_CLS"
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in _saved_architectures(args.model))
    if causal or ("label" not in data.column_names and "labels" not in data.column_names):
        return "CAUSAL_LM"
    return "SEQ_CLS"


def _saved_architectures(name: str) -> list[str]:
    """The class names a checkpoint's config records (``architectures``); empty when it cannot be read."""
    from transformers import AutoConfig

    from ..models import resolve_model_name

    try:
        config = AutoConfig.from_pretrained(resolve_model_name(name), local_files_only=True)
    except (OSError, ValueError, KeyError):
        return []
    return list(getattr(config, "architectures", None) or [])


def _label_names(data: datasets.Dataset, name: str) -> list[Any]:
    if "label" not in data.column_names:
        raise InvalidInputError(f"the data set {name!r} has no 'label' column to finetune on")
    return list(getattr(data.features["label"], "names", None) or sorted(set(data["label"])))


def _save_report(report: PlasticityReport, training_args: TrainingArguments) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if training_args.process_index == 0:
        out = Path(_output_dir(training_args))
        files["report"] = report.save(out / "report.json")
        report.plot(out / "plasticity.png")
        files["figure"] = out / "plasticity.png"
    return files


def _finish(
    result: FinetuneResult,
    report: PlasticityReport,
    files: dict[str, Path],
    args: FinetuneArguments,
    training_args: TrainingArguments,
) -> FinetuneResult:
    result.report = report
    result.files.update(files)
    if args.watch_every and training_args.process_index == 0:
        result.files["series"] = Path(_output_dir(training_args)) / "plasticity_series.json"
    return result


def _ensure_pad_token(tokenizer: Any, model: nn.Module) -> None:
    """Classification batches are padded: a tokenizer without a pad token pads with its end-of-text token (the
    usual choice for causal LMs), and the model is told which id that is (it finds each row's last token)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InvalidInputError("the tokenizer has neither a pad nor an end-of-text token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id


def finetune_reference(name: str | None, model: str) -> tuple[Any, str | None]:
    """The reference data (and its name) of a finetune's measurement: ``None`` pairs within the downstream data.

    ``"auto"`` gives the bundled model its pretraining data, so ``hf-plasticity finetune`` and the demo
    measure the same pairing; any other model has no known pretraining data, so its pairs stay within.
    """
    from ..data.loaders import load_named_dataset
    from ..models import BUNDLED, pretraining_reference

    if name is None or name.strip().lower() == "none":
        return None, None
    if name.strip().lower() == "auto":
        return pretraining_reference() if model == BUNDLED else (None, None)
    return load_named_dataset(name), name


def new_head(model: nn.Module) -> None:
    """Re-initialise the classification head(s): a new task gets a new head, as in the paper."""
    from ..components import resolve_components

    torch_nn = torch.nn
    for path in resolve_components(model).head_paths():
        for module in model.get_submodule(path).modules():
            if isinstance(module, torch_nn.Linear):
                torch_nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:  # decoders' score heads have none
                    torch_nn.init.zeros_(module.bias)


def _available_pairs(n: int, reference: Any) -> int:
    return min(n, len(reference)) if reference is not None else n // 2


def _output_dir(training_args: TrainingArguments) -> str:
    """transformers types ``output_dir`` as optional; the finetune entry points always set it."""
    if training_args.output_dir is None:
        raise InvalidInputError("TrainingArguments.output_dir is None: pass output_dir='my-finetune'")
    return str(training_args.output_dir)
