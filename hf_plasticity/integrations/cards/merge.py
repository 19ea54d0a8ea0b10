"""Writing cards without clobbering: merge into an existing README, save beside an adapter, attach a report."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ModelCardError
from ...io import atomic_write_text
from ...report.report import PlasticityReport
from .build import build_model_card
from .common import BEGIN, CARD_NAME, END, FIGURE_NAME, OWNED_KEYS, REPORT_NAME, as_list
from .sources import (
    card_adapter_name,
    keep_report,
    lora_config_of,
    plasticity_adapter_name,
    plasticity_config_of,
    report_of,
)

if TYPE_CHECKING:
    from huggingface_hub import ModelCard


def merge_model_card(card: ModelCard, existing: str | None) -> ModelCard:
    """Our card merged into an existing README: our metadata keys and section replaced, the rest kept.

    Tags and data sets are united (existing first); ``model-index`` is ours when we have results, else
    the existing one. An untouched generic template (PEFT's or transformers', full of "[More Information
    Needed]") is dropped rather than kept below ours.
    """
    from huggingface_hub import ModelCard

    if not existing or not existing.strip():
        return card
    try:
        old = ModelCard(existing, ignore_metadata_errors=True)
    except Exception as exc:  # a README with YAML the Hub cannot parse: say so instead of overwriting it
        raise ModelCardError(
            f"the existing README cannot be parsed ({type(exc).__name__}: {exc}); fix or move it, then write again"
        ) from exc
    meta = old.data.to_dict()
    ours = card.data.to_dict()
    for key in OWNED_KEYS:
        if ours.get(key) is not None:
            meta[key] = ours[key]
    for key in ("tags", "datasets"):
        merged = list(dict.fromkeys([*(as_list(meta.get(key))), *(as_list(ours.get(key)))]))
        if merged:
            meta[key] = merged
    if ours.get("model-index"):
        meta["model-index"] = ours["model-index"]
    if ours.get("license") and not meta.get("license"):
        meta["license"] = ours["license"]
    rest = _strip_section(old.text)
    if rest.count("[More Information Needed]") >= 5:
        rest = ""
    ours_section = _section(card.text)
    body = ours_section if not rest.strip() else f"{ours_section}\n\n{rest.strip()}\n"
    return ModelCard(_compose(meta, body))


def write_model_card(card: ModelCard, path: str | os.PathLike[str]) -> Path:
    """Write ``card`` to ``path`` (a README or its folder), merged into what is there, atomically."""
    target = Path(path)
    if target.is_dir() or not target.suffix:
        target = target / CARD_NAME
    existing = target.read_text(encoding="utf-8") if target.is_file() else None
    merged = merge_model_card(card, existing)
    return atomic_write_text(target, str(merged))


def save_card_files(
    model: Any,
    folder: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    metrics: Mapping[str, float] | str | os.PathLike[str] | None = None,
    adapter_name: str | None = None,
    report: PlasticityReport | str | os.PathLike[str] | None = None,
) -> Path:
    """Write the card, the report (``plasticity_report.json``) and the figure of a PEFT model into ``folder``.

    For a plasticity adapter, or a LoRA adapter (e.g. from :func:`hf_plasticity.plasticity_lora_config`) with its
    ``report`` given here or attached by :func:`attach_report`. Writes no adapter weights: ``save_pretrained``
    does (and, for these models, calls this).
    """
    folder = Path(folder)
    name = adapter_name or card_adapter_name(model) or plasticity_adapter_name(model)
    if isinstance(report, str | os.PathLike):
        report = PlasticityReport.load(report)
    report = report or report_of(plasticity_config_of(model, name), model, name)
    card = build_model_card(model, report=report, metrics=metrics, repo_id=repo_id, adapter_name=name)
    if report is not None:  # the card is built first: a model it cannot describe leaves the folder as it was
        report.save(folder / REPORT_NAME)
        report.plot(folder / FIGURE_NAME)
    return write_model_card(card, folder)


def attach_report(
    model: Any, report: PlasticityReport | str | os.PathLike[str], adapter_name: str = "default"
) -> None:
    """Attach the measured report to a plasticity or LoRA PEFT model, so its card shows the measurement.

    A plasticity config built from a report keeps it already; this is for one built from a mapping or a saved
    adapter, or for a report measured later. A LoRA adapter (``plasticity_lora_config``'s, or any ``LoraConfig``)
    keeps no report: attaching one is the explicit opt-in that makes its ``save_pretrained`` and
    ``push_to_hub`` write and upload this package's card, report and figure instead of PEFT's generic card
    (other LoRA models keep PEFT's behaviour).
    """
    if plasticity_config_of(model, adapter_name) is None and lora_config_of(model, adapter_name) is None:
        raise ModelCardError(f"the model has no plasticity or LoRA adapter named {adapter_name!r}")
    keep_report(model, report if isinstance(report, PlasticityReport) else PlasticityReport.load(report), adapter_name)


def _section(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        raise ModelCardError("the rendered card has no hf_plasticity section markers; the template is broken")
    return text[start : end + len(END)]


def _strip_section(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return text
    return (text[:start] + text[end + len(END) :]).strip("\n")


def _compose(meta: dict[str, Any], body: str) -> str:
    from huggingface_hub import ModelCardData

    data = ModelCardData(**meta, ignore_metadata_errors=True)
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"
