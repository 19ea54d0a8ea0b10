"""Where a card's facts come from: a PEFT model, a config, a report, a saved folder, a metrics file.

Also the names a card may publish: a card is read on other machines, so a local path (the base model's
folder, a data folder, a report file) never appears in it; the Hub id stands in when one is known.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InvalidInputError, ModelCardError
from ...report.report import PlasticityReport
from .common import HUB_DATASETS, REPORT_NAME, num

if TYPE_CHECKING:
    from ...tuner.config import PlasticityConfig

# Trainer evaluation keys that describe the run, not the model's quality.
_NOT_METRICS = {"epoch", "runtime", "samples_per_second", "steps_per_second", "total_flos"}


# ---------------------------------------------------------------------------------------- configs and reports
def report_of(
    config: PlasticityConfig | None, model: Any = None, adapter_name: str = "default"
) -> PlasticityReport | None:
    """The measured report behind a config (None for one built from a mapping or read from disk).

    The only place the card code reads it: the tuner model keeps the report each adapter was selected from
    (``plasticity_reports``); a config not yet made into an adapter still holds its own. Everything a card says
    about *why* comes from the plain scores the config saves (``config.resolved_scores()``).
    """
    from ...tuner.model import report_of as kept_by_model

    report = kept_by_model(model, adapter_name) if model is not None else None
    if report is None and model is not None and lora_config_of(model, adapter_name) is not None:
        report = vars(getattr(model, "base_model", None) or model).get("plasticity_reports", {}).get(adapter_name)
    if report is None and config is not None and isinstance(config.scores, PlasticityReport):
        report = config.scores
    return report


def keep_report(model: Any, report: PlasticityReport, adapter_name: str = "default") -> None:
    """Give a PEFT model's adapter its measured report (the counterpart of :func:`report_of`).

    Kept by the tuner model (``PlasticityModel`` or PEFT's ``LoraModel``) in ``plasticity_reports``.
    """
    from ...tuner.model import PlasticityModel

    tuner = model if isinstance(model, PlasticityModel) else getattr(model, "base_model", None)
    tuner.__dict__.setdefault("plasticity_reports", {})[adapter_name] = report


def is_plasticity_config(obj: Any) -> bool:
    from ...tuner.config import PlasticityConfig

    return isinstance(obj, PlasticityConfig)


def plasticity_config_of(model: Any, adapter_name: str = "default") -> PlasticityConfig | None:
    """The model's ``PlasticityConfig`` for ``adapter_name`` (None when it is not a plasticity adapter)."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping):
        return None
    config = configs.get(adapter_name)
    return config if is_plasticity_config(config) else None


def lora_config_of(model: Any, adapter_name: str = "default") -> Any | None:
    """The model's plain PEFT ``LoraConfig`` for ``adapter_name`` (None for any other adapter, AdaLoRA's included).

    What :func:`hf_plasticity.plasticity_lora_config` makes, or any LoRA config: both are cards of a LoRA adapter.
    """
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping):
        return None
    from peft import LoraConfig

    config = configs.get(adapter_name)
    return config if isinstance(config, LoraConfig) and config.peft_type == "LORA" else None


def card_adapter_name(model: Any) -> str | None:
    """The adapter whose card this package writes: a plasticity adapter, or the active LoRA adapter once a report
    was attached to it (:func:`hf_plasticity.attach_report`); None leaves the model to PEFT's own card."""
    name = plasticity_adapter_name(model)
    if plasticity_config_of(model, name) is not None:
        return name
    active = getattr(model, "active_adapter", None)
    if isinstance(active, str) and lora_config_of(model, active) is not None and report_of(None, model, active):
        return active
    return None


def plasticity_adapter_name(model: Any) -> str:
    """The active adapter when it is a plasticity one, else the first plasticity adapter, else ``"default"``."""
    configs = getattr(model, "peft_config", {}) or {}
    active = getattr(model, "active_adapter", None)
    if isinstance(active, str) and is_plasticity_config(configs.get(active)):
        return active
    return next((n for n, c in configs.items() if is_plasticity_config(c)), "default")


def read_folder_or_report(path: Path) -> tuple[PlasticityReport | None, PlasticityConfig | None]:
    """A report JSON, or a saved adapter folder's config and (when saved beside it) its report."""
    if path.is_file():
        return PlasticityReport.load(path), None
    if not (path / "adapter_config.json").is_file():
        raise ModelCardError(
            f"{str(path)!r} is neither a report JSON nor a saved adapter folder (no adapter_config.json)"
        )
    from ...tuner.config import PlasticityConfig

    raw = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    if raw.get("peft_type") != "PLASTICITY":
        raise ModelCardError(
            f"{str(path)!r} holds a {raw.get('peft_type')} adapter, not a plasticity adapter; for a LoRA adapter "
            "pass the PEFT model itself with its report: build_model_card(model, report=report)"
        )
    config = PlasticityConfig.from_pretrained(str(path))
    report = PlasticityReport.load(path / REPORT_NAME) if (path / REPORT_NAME).is_file() else None
    return report, config


def read_metrics(metrics: Mapping[str, float] | str | os.PathLike[str] | None) -> dict[str, float]:
    """Evaluation results as ``{name: value}``, Trainer prefixes and run statistics dropped.

    Reads a flat mapping (the Trainer's ``eval_results.json``) or ``finetune``'s ``metrics.json``
    (``{"train": ..., "eval": ...}``), whose evaluation part is taken.
    """
    if metrics is None:
        return {}
    if isinstance(metrics, str | os.PathLike):
        try:
            metrics = json.loads(Path(metrics).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"cannot read metrics from {str(metrics)!r}: {exc}") from exc
    if not isinstance(metrics, Mapping):
        raise InvalidInputError("metrics must be a mapping name -> number, e.g. {'accuracy': 0.93}")
    if metrics and set(metrics) <= {"train", "eval"} and all(isinstance(v, Mapping) for v in metrics.values()):
        # ``finetune``'s metrics.json keeps the training run's statistics beside the evaluation: a card
        # reports the evaluation only
        if not metrics.get("eval"):
            raise InvalidInputError(
                "these metrics hold no evaluation results (the run had no evaluation split): finetune with "
                "an evaluation split, or pass --metrics a JSON of {name: value}"
            )
        metrics = metrics["eval"]
    out = {}
    for key, value in metrics.items():
        name = str(key).removeprefix("eval_").removeprefix("test_")
        if name in _NOT_METRICS:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidInputError(f"metric {key!r} = {value!r} is not a finite number")
        out[name] = num(value)
    return out


# ---------------------------------------------------------------------------------------- public names
def is_local_path(name: str) -> bool:
    """Whether ``name`` names something on this machine (a path), as opposed to a Hub id or a data set name."""
    if os.path.isabs(name) or name.startswith((".", "~")) or re.match(r"^[A-Za-z]:[\\/]", name) or "\\" in name:
        return True
    return ("/" in name or os.sep in name) and Path(name).exists()


def hub_id(name: str | None) -> str | None:
    """``name`` when it can be a Hub repo id, else None (a local path is no ``base_model`` for the Hub)."""
    if not name or is_local_path(name):
        return None
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) else None


def public_name(name: str | None, what: str = "data set") -> str | None:
    """A name fit to publish: itself, or for a local path "a local <what> (<folder name>)"."""
    if not name:
        return name
    if not is_local_path(name):
        return name
    stem = _leaf(name)
    return f"a local {what} ({stem})" if stem else f"a local {what}"


def _leaf(path: str) -> str:
    """The last part of a path, POSIX or Windows alike (only that part of a local path may be published)."""
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def public_score_source(source: str | None) -> str | None:
    """``config.score_source`` without a report file's local path (``report /x/r.json`` → ``report r.json``)."""
    if source and source.startswith("report ") and is_local_path(source[len("report ") :]):
        return "report " + _leaf(source[len("report ") :])
    return source


def base_model_of(config: Any, model: Any, report: PlasticityReport | None) -> tuple[str | None, bool]:
    """The base model's Hub id, if any is known, and whether it was (also) loaded from a local checkpoint.

    Candidates, first Hub id wins: the adapter's ``base_model_name_or_path``, the model config's ``name_or_path``,
    the report's ``model_id`` (which names the bundled model by its id wherever it is installed).
    """
    candidates = []
    if config is not None:
        candidates.append(getattr(config, "base_model_name_or_path", None))
    if model is not None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        candidates.append(getattr(getattr(base, "config", None), "name_or_path", None))
    if report is not None:
        candidates.append(report.model.get("model_id"))
    candidates = [c for c in candidates if isinstance(c, str) and c]
    found = next((c for c in map(hub_id, candidates) if c), None)
    return found, any(is_local_path(c) for c in candidates)


def hub_datasets(report: PlasticityReport | None, config: Any) -> list[str]:
    """Hub ids of the data the measurement used, for the ``datasets`` metadata (local and unknown ones left out)."""
    names = []
    if report is not None:
        names = [report.data_name, report.reference_name]
    elif config is not None:
        prov = config.resolved_scores().get("report") or {}
        names = [prov.get("data"), prov.get("reference")]
    out = []
    for name in names:
        if not name:
            continue
        key = next((k for k in HUB_DATASETS if name.startswith(k)), None)
        if key:
            out.append(HUB_DATASETS[key])
        elif hub_id(name) and name not in ("digits",):
            out.append(name)
    return list(dict.fromkeys(out))
