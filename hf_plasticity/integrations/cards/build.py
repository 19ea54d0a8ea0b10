"""Build a model card (``huggingface_hub.ModelCard``) from a report, a config, a PEFT model or a saved folder."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ModelCardError
from ...report.report import PlasticityReport
from . import body
from .common import CITATION, FIGURE_NAME, slug, template_path
from .metadata import lora_metadata, module_paths, plasticity_metadata
from .sources import (
    base_model_of,
    hub_datasets,
    hub_id,
    is_plasticity_config,
    lora_config_of,
    plasticity_config_of,
    public_name,
    read_folder_or_report,
    read_metrics,
    report_of,
)

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from ...tuner.config import PlasticityConfig

BASE_PLACEHOLDER = "path/to/the-base-model"
"""What the loading snippet names when the base model was a local checkpoint (a card never names a local path)."""


def build_model_card(
    source: PlasticityReport | PlasticityConfig | Any | str | os.PathLike[str] | None = None,
    *,
    report: PlasticityReport | str | os.PathLike[str] | None = None,
    config: PlasticityConfig | None = None,
    metrics: Mapping[str, float] | str | os.PathLike[str] | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    pipeline_tag: str | None = None,
    figure: str | None = FIGURE_NAME,
    license: str | None = None,
    summary: str | None = None,
    training_text: str | None = None,
    adapter_name: str = "default",
    metrics_dataset: str | None = None,
) -> ModelCard:
    """A ``ModelCard`` for a plasticity adapter (or, from a report alone, for the measured model).

    ``source`` is a report, a config, a PEFT model, or a path (a report JSON, or a saved adapter folder
    whose ``adapter_config.json`` and ``plasticity_report.json`` are read). ``metrics`` (a mapping, or a
    JSON file such as the Trainer's ``eval_results.json``) become the ``model-index`` results. The card
    names the base model by its Hub id, never by a local path; ``base_model`` overrides what is found.

    A PEFT model with a plain LoRA adapter (from :func:`hf_plasticity.plasticity_lora_config`) gets a LoRA
    card: ``report`` is then required (the report its ranks were allocated from, or its path; or one given
    to the model by :func:`attach_report`), since a ``LoraConfig`` keeps no trace of the measurement. The
    card records the report's measurement, the ranks the model's LoRA layers hold and the trainable share
    of the base model, and loads with ``peft`` alone. Any other ``LoraConfig`` is a LoRA card too: with a
    report, the card shows the measurement beside the ranks *as configured* (``selection.rule:
    configured``); a config has ``plasticity_lora_config``'s shape when every target has its own rank in
    ``rank_pattern`` and alpha equal to it.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model = None
    lora = None
    if isinstance(source, PlasticityReport):
        report = report or source
    elif source is not None and is_plasticity_config(source):
        config = source
    elif isinstance(source, str | os.PathLike):
        found_report, found_config = read_folder_or_report(Path(source))
        report, config = report or found_report, config or found_config
    elif source is not None:
        model = source
        config = config or plasticity_config_of(model, adapter_name)
        lora = lora_config_of(model, adapter_name) if config is None else None
        if config is None and lora is None:
            raise ModelCardError(
                f"{type(source).__name__} carries no PlasticityConfig adapter named {adapter_name!r}; pass a "
                "plasticity PEFT model, a PEFT LoRA model with report=, a PlasticityConfig or a PlasticityReport"
            )
    if isinstance(report, str | os.PathLike):
        report = PlasticityReport.load(report)
    if lora is not None:
        report = report or report_of(None, model, adapter_name)
        if report is None:
            raise ModelCardError(
                f"the model's {adapter_name!r} adapter is a LoRA adapter, whose config keeps no trace of the "
                "measurement: pass report=<the PlasticityReport its ranks were allocated from, or its path> "
                "(build_model_card(model, report=report)), or attach it first with hf_plasticity.attach_report"
            )
        block = lora_metadata(report, lora, model, adapter_name)
    else:
        block = plasticity_metadata(report, config, model, adapter_name)
        report = report or report_of(config, model, adapter_name)
    values = read_metrics(metrics)
    auto_class, task = _task(model, config or lora, report)
    pipeline_tag = pipeline_tag or task

    is_adapter = config is not None or lora is not None
    local = False
    if base_model is not None:
        local = hub_id(base_model) is None
        base_model = hub_id(base_model)
    elif is_adapter:  # a base model's own card has no base_model unless one is given
        base_model, local = base_model_of(config or lora, model, report)
    datasets = datasets if datasets is not None else hub_datasets(report, config)
    name = model_name or (Path(repo_id).name if repo_id else None) or _default_name(base_model, is_adapter)
    dataset_name = (
        metrics_dataset
        or public_name(report.data_name if report is not None else None)
        or (datasets[0] if datasets else "unknown")
    )
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=datasets[0] if datasets else slug(dataset_name),
            dataset_name=dataset_name,
            metric_type=key,
            metric_value=value,
        )
        for key, value in values.items()
    ]
    tags = ["plasticity", "hf-plasticity"] + (["vision"] if "image" in pipeline_tag else [])
    if lora is not None:
        tags += ["plasticity-lora", "lora"]
    data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        base_model=base_model,
        datasets=datasets or None,
        tags=tags,
        pipeline_tag=pipeline_tag,
        license=license,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
        plasticity=block,
    )
    if is_adapter and data.base_model:
        data.tags.append(f"base_model:adapter:{data.base_model}")
    paths = module_paths(report, model) if report is not None else {}
    common = {
        "model_name": name,
        "pairs_text": body.pairs_text(block),
        "ranking_table": body.ranking(block),
        "has_bounds": report is not None and report.bounds is not None,
        "figure": figure if report is not None else None,
        "metrics_table": body.metrics_table(values, dataset_name),
        "base_model_ref": base_model or BASE_PLACEHOLDER,
        "base_is_local": base_model is None,
        "base_kwargs": body.base_kwargs(model),
        "auto_class": auto_class,
        "repo_ref": repo_id or f"path/to/{name}",
        "citation": CITATION,
    }
    if lora is not None and report is not None:
        card = ModelCard.from_template(
            data,
            template_path=str(template_path("lora_card.md.j2")),
            **common,
            summary=summary or body.lora_summary(block, base_model, local),
            choice_text=body.lora_choice_text(block, report),
            num_targets=len(block["selection"]["targets"]),
            targets_table=body.lora_targets_table(block),
            layer_table=body.lora_per_layer(block, report, paths),
            training_text=training_text if training_text is not None else body.lora_training_text(block),
        )
        card.text = _tidy(card.text)
        return card
    kwargs = {
        **common,
        "summary": summary or body.summary(block, base_model, local, is_adapter),
        "choice_text": body.choice_text(block, report),
        "layer_table": body.per_layer(block, report, config, paths),
        "has_ci": report is not None,
        "score_source": block.get("score_source") or "the paper's theoretical ranking",
        "training_text": training_text if training_text is not None else body.training_text(block),
        "trained_modules": list(config.selected_modules or []) if config is not None else [],
    }
    template = "adapter_card.md.j2" if is_adapter else "base_model_card.md.j2"
    card = ModelCard.from_template(data, template_path=str(template_path(template)), **kwargs)
    card.text = _tidy(card.text)
    return card


DEFAULT_TASK = ("AutoModelForImageClassification", "image-classification")
"""What a card says when nothing tells the model's class (a config or report of an earlier version)."""


def _task(model: Any, config: Any, report: PlasticityReport | None) -> tuple[str, str]:
    """The auto class and pipeline task of the model the adapter was trained on (or the report measured).

    Asked of transformers' tables (:func:`hf_plasticity.models.task_of`) for the first class known: the PEFT
    model's base model, the class PEFT recorded in the adapter's config (``auto_mapping``), the class the
    report measured; a causal LM card so loads with ``AutoModelForCausalLM``, a BERT classifier's with
    ``AutoModelForSequenceClassification``.
    """
    from ...models import task_of

    base = model.get_base_model() if model is not None and hasattr(model, "get_base_model") else model
    candidates = [
        base,
        ((getattr(config, "auto_mapping", None) or {}).get("base_model_class")),
        (report.model.get("architecture") if report is not None else None),
    ]
    for candidate in candidates:
        found = task_of(candidate) if candidate is not None else None
        if found is not None:
            return found
    return DEFAULT_TASK


def _default_name(base_model: str | None, is_adapter: bool) -> str:
    stem = (base_model or "model").rstrip("/").split("/")[-1]
    return f"{stem}-plasticity" if is_adapter else stem


def _tidy(text: str) -> str:
    """Collapse the blank lines Jinja blocks leave behind (3+ newlines -> 2)."""
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
