"""What every part of a card shares: file names, the paper, the metadata keys we own, number formatting."""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import ModelCardError

BEGIN = "<!-- hf_plasticity:begin"
END = "<!-- hf_plasticity:end -->"
CARD_NAME = "README.md"
REPORT_NAME = "plasticity_report.json"
FIGURE_NAME = "plasticity.png"
PAPER = "arXiv:2602.06883"
CITATION = """@inproceedings{odonnat2026plasticity,
  title     = {Vision Transformer Finetuning Benefits from Non-Smooth Components},
  author    = {Odonnat, Ambroise and Chapel, Laetitia and Tavenard, Romain and Redko, Ievgen},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2026},
  note      = {arXiv:2602.06883}
}"""
# Keys of the metadata this package owns: replaced on every write; every other key is the user's and kept.
OWNED_KEYS = ("library_name", "base_model", "pipeline_tag", "plasticity")
# Data set names of hf_plasticity's own loaders that have a Hub id (the ``datasets`` metadata wants Hub ids).
HUB_DATASETS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "mnist5k": "ylecun/mnist",
}
TOP_MODULES = 10
"""Modules listed in the metadata's ``top_modules``: the YAML stays a few KB at any depth (the full
per-layer table is in ``plasticity_report.json`` and the card's body)."""


def template_path(name: str) -> Path:
    """Path of a bundled Jinja template (``adapter_card.md.j2``, ``lora_card.md.j2``, ``base_model_card.md.j2``).

    The templates are package data (``hf_plasticity/integrations/templates``) so that a wheel or an editable
    install renders the same cards as a source checkout; ``model_cards/README.md`` documents them.
    """
    path = Path(str(resources.files("hf_plasticity.integrations") / "templates" / name))
    if not path.is_file():
        raise ModelCardError(f"no card template {name!r} in {path.parent}; reinstall hf-plasticity")
    return path


def num(x: Any) -> float | None:
    """A plain float with 6 significant digits (YAML-stable), or None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None


def finite_or_low(x: Any) -> float:
    """``x`` for sorting, with unknown scores last."""
    return x if isinstance(x, int | float) and math.isfinite(x) else -math.inf


def fmt(x: Any) -> str:
    return "—" if x is None else f"{x:.4g}"


def slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "data"


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def version() -> str:
    from ...version import __version__

    return __version__
