"""Finetune the most plastic components with ``transformers.Trainer``: measure → select → train → evaluate → save.

:func:`finetune` is the training step a script, a notebook or an experiment calls with its own model, data and
``TrainingArguments``; :func:`run_finetune` is the whole pipeline behind ``hf-plasticity finetune`` (load a
model and a data set by name, measure, select, train, evaluate, write the adapter, the report and the
metrics). Both run unchanged under ``accelerate launch`` (the measurement shards itself; Trainer does DDP).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..errors import InvalidInputError
from ..io import atomic_write_text
from ..tuner.config import RULES, PlasticityConfig

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
        default="top_k=1",
        metadata={"help": "Selection rule: top_k=K, budget=FRACTION, threshold=SCORE or components=mha,ffn_fc1."},
    )
    mode: Literal["full", "lora"] = field(
        default="full", metadata={"help": "full: train the selected weights; lora: LoRA in them."}
    )
    keep_original: bool = field(
        default=False, metadata={"help": "Mode full: train a copy beside the frozen original (default: in place)."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (mode lora)."})
    num_pairs: int = field(default=512, metadata={"help": "Pairs measured to rank the components."})
    protocol: Literal["shared", "in_situ"] = field(default="shared", metadata={"help": "Measurement protocol."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of --data held out for evaluation."})
    watch_every: int = field(
        default=0, metadata={"help": "Re-measure plasticity on held-out pairs every N steps (0: never)."}
    )
    watch_pairs: int = field(default=64, metadata={"help": "Held-out pairs re-measured by --watch_every."})


@dataclass
class FinetuneResult:
    """What a finetuning run produced: the trained PEFT model, its metrics and the files written."""

    model: Any
    trainer: Trainer
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    report: PlasticityReport | None = None
    files: dict[str, Path] = field(default_factory=dict)


def parse_rule(text: str) -> dict[str, Any]:
    """``"top_k=1"`` → ``{"top_k": 1}``; the rule names are ``PlasticityConfig``'s (``tuner.config.RULES``)."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or name not in RULES or not value:
        raise InvalidInputError(f"rule {text!r} not understood; write one of {[f'{r}=...' for r in RULES]}")
    try:
        if name == "top_k":
            return {name: int(value)}
        if name in ("budget", "threshold"):
            return {name: float(value)}
    except ValueError:
        raise InvalidInputError(f"rule {text!r}: {value!r} is not a number") from None
    return {name: [c.strip() for c in value.split(",") if c.strip()]}


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


def finetune(
    model: nn.Module,
    train_dataset: Any,
    eval_dataset: Any,
    config: PlasticityConfig | None,
    training_args: TrainingArguments,
    *,
    image_processor: Any = None,
    compute_metrics: Any = None,
    callbacks: list[TrainerCallback] | None = None,
    save: bool = True,
) -> FinetuneResult:
    """Train ``model``'s plasticity-selected modules with ``Trainer``, evaluate, save the adapter.

    Args:
        model: a supported transformers model, or a ``PeftModel`` already carrying the adapter (then
            ``config`` must be None).
        train_dataset, eval_dataset: ``datasets.Dataset`` with images (decoded with ``image_processor``) or
            ``pixel_values``, and ``label``/``labels``; ``eval_dataset`` may be None.
        config: which modules to train; None trains the paper's choice (attention, ``top_k=1``).
        training_args: how to train (``resume_from_checkpoint`` is honoured).
        compute_metrics: default: accuracy with the bundled offline ``evaluate`` metric.
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
    channels = int(getattr(getattr(peft_model, "config", None), "num_channels", 3))
    train = pixel_dataset(train_dataset, image_processor, channels)
    evaluation = None if eval_dataset is None else pixel_dataset(eval_dataset, image_processor, channels)
    callbacks = list(callbacks or [])
    watchers = [c for c in callbacks if isinstance(c, PlasticityCallback)]
    trainer = Trainer(
        model=peft_model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        compute_metrics=compute_metrics or accuracy_metrics(),
        callbacks=[c for c in callbacks if c not in watchers],
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
        out = Path(training_args.output_dir)
        trainer.save_model(str(out / "adapter"))  # the main process writes; PEFT saves only the adapter
        if trainer.is_world_process_zero():
            metrics = {"train": result.train_metrics, "eval": result.eval_metrics}
            result.files["metrics"] = atomic_write_text(out / "metrics.json", json.dumps(_jsonable(metrics), indent=2))
        result.files["adapter"] = out / "adapter"
    return result


def run_finetune(args: FinetuneArguments, training_args: TrainingArguments, progress: bool = True) -> FinetuneResult:
    """``hf-plasticity finetune``: load, measure, select, train, evaluate, and write everything to ``output_dir``.

    Writes ``report.json`` and ``plasticity.png`` (the measurement that chose the modules), ``adapter/``,
    ``metrics.json`` and, with ``watch_every``, ``plasticity_series.json``/``.png``.
    """
    from transformers.trainer_utils import set_seed

    from ..data.loaders import load_named_dataset
    from ..measure.estimator import measure_plasticity
    from ..models import BUNDLED, BUNDLED_MODEL_ID, load_image_processor, load_model
    from .callbacks import PlasticityCallback

    if not 0 < args.eval_fraction < 1:
        raise InvalidInputError(f"eval_fraction={args.eval_fraction} must be between 0 and 1 (e.g. 0.2)")
    rule = parse_rule(args.rule)
    data = load_named_dataset(args.data, split=args.split)
    reference, reference_name = finetune_reference(args.reference, args.model)
    if "label" not in data.column_names:
        raise InvalidInputError(f"the data set {args.data!r} has no 'label' column to finetune on")
    names = list(getattr(data.features["label"], "names", None) or sorted(set(data["label"])))
    splits = data.train_test_split(test_size=args.eval_fraction, seed=training_args.seed)
    set_seed(training_args.seed)
    model = load_model(
        args.model,
        num_labels=len(names),
        id2label=dict(enumerate(map(str, names))),
        label2id={str(n): i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    new_head(model)
    processor = load_image_processor(args.model)
    is_main = training_args.process_index == 0
    out = Path(training_args.output_dir)
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
    files: dict[str, Path] = {}
    if is_main:
        files["report"] = report.save(out / "report.json")
        report.plot(out / "plasticity.png")
        files["figure"] = out / "plasticity.png"
    config = PlasticityConfig.from_report(
        report, **rule, mode=args.mode, keep_original=args.keep_original, r=args.lora_r, lora_alpha=args.lora_r
    )
    callbacks: list[Any] = []
    if args.watch_every:
        held_out = pixel_dataset(splits["test"], processor, int(getattr(model.config, "num_channels", 3)))
        n = min(args.watch_pairs, len(held_out) // 2)
        pixels = held_out[: 2 * n]["pixel_values"].float()
        callbacks.append(PlasticityCallback((pixels[:n], pixels[n:]), every=args.watch_every, seed=training_args.seed))
    result = finetune(
        model, splits["train"], splits["test"], config, training_args, image_processor=processor, callbacks=callbacks
    )
    result.report = report
    result.files.update(files)
    if args.watch_every and is_main:
        result.files["series"] = out / "plasticity_series.json"
    return result


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
                torch_nn.init.zeros_(module.bias)


def _available_pairs(n: int, reference: Any) -> int:
    return min(n, len(reference)) if reference is not None else n // 2


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer | torch.Tensor):
        return obj.item()
    return obj
