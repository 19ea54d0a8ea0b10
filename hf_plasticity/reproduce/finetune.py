"""One finetuning run: transformers' ``Trainer`` with the paper's recipe, scored with ``evaluate``.

Each run writes its result to a JSON file named by everything that determines it (protocol, optimizer,
task, what is trained, seed, learning rate), so a re-run of the experiment -- e.g. after the estimator
changes and the measured rankings move -- retrains only the selections it has not trained before.
"""

from __future__ import annotations

import gc
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write_text
from .methods import ResolvedMethod, build_trainable, count_parameters
from .tasks import Task

OPTIMIZERS: dict[str, dict[str, Any]] = {
    # the paper's optimizer: SGD with momentum 0.9, no weight decay
    "sgd": {"optim": "sgd", "optim_args": "momentum=0.9", "weight_decay": 0.0},
    # the paper's Adam ablation, as AdamW with transformers' defaults
    "adamw": {"optim": "adamw_torch", "optim_args": None, "weight_decay": 0.0},
}


@dataclass(frozen=True)
class TrainProtocol:
    """What every run shares: the paper's recipe scaled to a CPU (few steps, small batches)."""

    steps: int = 120
    batch_size: int = 32
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    scheduler: str = "cosine"
    eval_batch_size: int = 250


@dataclass
class RunJob:
    """One (task, trained modules, optimizer, seed, learning rate) run and where its result is cached."""

    task: str
    method: ResolvedMethod
    optimizer: str
    seed: int
    lr: float
    protocol: TrainProtocol
    cache: str
    source: str | None = None  # the pretrained model (None: the bundled ViT)
    forgetting: bool = False  # also score the source task with the source's own head put back (``.forgetting``)

    def describe(self) -> str:
        return f"{self.task} {self.optimizer} {self.method.name} seed={self.seed} lr={self.lr:g}"


def cached_result(job: RunJob) -> dict[str, Any] | None:
    """The stored result of this run, or None if it was never completed."""
    path = Path(job.cache)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache entry is retrained, never trusted


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al., 2017): over equal-width bins of the top softmax probability, the sample-weighted mean
    of |accuracy - mean confidence|; the paper's calibration claim is read on this."""
    z = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # bin b: (b/bins, (b+1)/bins]
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() / len(labels) * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def _rank_allocation_callback() -> Any:
    """AdaLoRA prunes its ranks between the optimizer step and ``zero_grad``, where Trainer calls
    ``on_optimizer_step`` (transformers has no AdaLoRA hook of its own)."""
    from transformers import TrainerCallback

    class RankAllocation(TrainerCallback):
        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            model.base_model.update_and_allocate(state.global_step)

    return RankAllocation()


def run_job(job: RunJob, task: Task) -> dict[str, Any]:
    """Train, evaluate on the validation and test splits, cache and return the result."""
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers import logging as hf_logging

    from ..integrations.metrics import load_metric

    hf_logging.set_verbosity_error()
    # Trainer ends with a full gc.collect(); over torch's and transformers' long-lived objects that takes
    # about a second per run. Freezing what exists now (after collecting the last run's garbage, cheap
    # once the heap is frozen) leaves it only this run's objects to walk.
    gc.collect()
    gc.freeze()
    model = build_trainable(job.method, task.num_labels, job.seed, task, steps=job.protocol.steps, source=job.source)
    trainable, total = count_parameters(model)
    metric = load_metric("accuracy")

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits, labels = prediction
        scores = metric.compute(predictions=np.argmax(logits, axis=-1), references=labels)
        return {**scores, "ece": expected_calibration_error(logits, labels)}

    p = job.protocol
    with tempfile.TemporaryDirectory(prefix="hf-plasticity-run-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=p.steps,
            per_device_train_batch_size=p.batch_size,
            per_device_eval_batch_size=p.eval_batch_size,
            learning_rate=job.lr,
            lr_scheduler_type=p.scheduler,
            warmup_steps=p.warmup_ratio,
            max_grad_norm=p.max_grad_norm,
            seed=job.seed,
            data_seed=job.seed,
            label_names=["labels"],
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            **OPTIMIZERS[job.optimizer],
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=task.split("train"),
            compute_metrics=compute_metrics,
        )
        trainer.remove_callback(PrinterCallback)  # results go to the cache file, not to the console
        if hasattr(getattr(model, "base_model", None), "update_and_allocate"):
            trainer.add_callback(_rank_allocation_callback())
        train_out = trainer.train()
        scores = trainer.evaluate(eval_dataset={"val": task.split("val"), "test": task.split("test")})
    extra: dict[str, Any] = {}
    if job.forgetting:
        from .forgetting import source_task_accuracy

        extra["source_accuracy"] = source_task_accuracy(model, job.source)
    runtime = float(train_out.metrics["train_runtime"])
    result = {
        "task": job.task,
        "optimizer": job.optimizer,
        "run_key": job.method.run_key,
        "method": job.method.name,
        "selected_modules": job.method.selected_modules,
        "seed": job.seed,
        "lr": job.lr,
        "protocol": asdict(p),
        "val_accuracy": float(scores["eval_val_accuracy"]),
        "test_accuracy": float(scores["eval_test_accuracy"]),
        "test_ece": float(scores["eval_test_ece"]),
        **extra,
        "train_loss": float(train_out.training_loss),
        "trainable": trainable,
        "total": total,
        "train_seconds": runtime,
        "s_per_step": runtime / p.steps,
        "threads": torch.get_num_threads(),
        **({"source": job.source} if job.source else {}),
    }
    atomic_write_text(job.cache, json.dumps(result, indent=1))
    return result
