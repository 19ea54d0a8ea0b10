"""Axolotl's ``unfrozen_parameters``: the most plastic modules as the regexes Axolotl unfreezes (as Spectrum's
Axolotl plugin writes its highest-SNR modules).

Axolotl freezes every parameter, then unfreezes those whose name a pattern matches from its start (``re.match``,
dots taken literally). A pattern here is ``^<module path>.``: it matches exactly that module's own parameters
(``.weight``, ``.bias``), never a sibling's (``layers.1.`` is not a prefix of ``layers.10.``). The modules are the
selection the ``budget`` rule of :class:`PlasticityConfig` makes from the report (most plastic first, filled
within ``budget`` of the model's parameters), so Axolotl trains what ``hf-plasticity finetune`` would. A causal
LM's head is its pretrained vocabulary, not a new head: it is left to the user (Spectrum always adds
``^lm_head.weight$`` and ``^model.embed_tokens.weight$``; append them to train those too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from ..errors import InvalidInputError
from ..report.report import PlasticityReport
from .config import PlasticityConfig
from .selection import select_modules

DEFAULT_UNFROZEN_BUDGET = 0.25
"""Share of the parameters the Axolotl list unfreezes by default (Spectrum's scans commonly take 25-50%)."""


def axolotl_unfrozen_parameters(
    report: PlasticityReport | str | os.PathLike[str], model: nn.Module, budget: float = DEFAULT_UNFROZEN_BUDGET
) -> list[str]:
    """The ``unfrozen_parameters`` patterns of the most plastic modules within ``budget`` of ``model``'s
    parameters, most plastic first."""
    if isinstance(report, str | os.PathLike):
        report = PlasticityReport.load(report)
    if not isinstance(report, PlasticityReport):
        raise InvalidInputError(f"report must be a PlasticityReport or a saved report's path, not {type(report)}")
    selection = select_modules(model, PlasticityConfig(scores=report, budget=budget, modules_to_save=[]))
    return [f"^{path}." for path in selection.modules]


def write_axolotl_unfrozen_parameters(path: str | os.PathLike[str], patterns: list[str], source: str) -> Path:
    """Write the patterns as an Axolotl config fragment (YAML: JSON-quoted strings, so any regex stays literal)."""
    target = Path(path)
    lines = [
        f"# hf-plasticity: the most plastic modules of {source}; paste into an Axolotl config",
        "unfrozen_parameters:",
        *(f"  - {json.dumps(p)}" for p in patterns),
    ]
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(target)  # never a half-written file
    return target
