"""Plasticity-guided LoRA: PEFT's own ``LoraConfig`` with targets and ranks allocated from measured plasticity.

The adapter this makes is plain LoRA: it saves, loads and merges with ``peft`` alone, in a process that never
imports ``hf_plasticity``. The measurement decides only where the rank goes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..components import ResolvedComponents, rank_components, resolve_components
from ..errors import InvalidInputError
from ..report.report import PlasticityReport
from .config import SIGNALS
from .scores import normalise_scores
from .selection import base_modules, base_parameter_count, candidate_scores

DEFAULT_LORA_BUDGET = 0.04
"""LoRA r=16 on (q, v) of the bundled ViT trains 4.1% of it (head included): the budget PEFT users pick most."""


@dataclass(frozen=True)
class RankUnit:
    """One thing that can receive trainable parameters: a linear (per rank step) or a LayerNorm (whole)."""

    path: str
    score: float
    step: int  # parameters one rank adds (in + out features), or the LayerNorm's parameter count
    cap: int  # the largest useful rank (min(in, out)); 1 for a LayerNorm
    linear: bool


def plasticity_lora_config(
    report: PlasticityReport | str | os.PathLike[str],
    *,
    budget: float = DEFAULT_LORA_BUDGET,
    model: nn.Module | None = None,
    signal: str = "auto",
    exponent: float = 1.0,
    modules_to_save: list[str] | None = None,
    lora_dropout: float = 0.0,
    **lora_kwargs: Any,
) -> Any:
    """A ``peft.LoraConfig`` whose ranks follow the measured plasticity of each (layer, component).

    Every module of a layer gets an allocation ``c * score ** exponent`` (its own measured rate, under the
    ``signal`` guard: with ``"auto"`` the LayerNorm cells whose rate exceeds their theoretical bound are left
    out; ``exponent`` < 1 flattens the allocation towards uniform ranks). A linear's rank is the floor of its
    allocation (at most ``min(in, out)``; a rank of 0 leaves it untouched), a LayerNorm whose allocation
    reaches 1 is trained whole (``modules_to_save``), and ``c`` is the largest that keeps the trainable
    parameters, head included, within ``budget`` of the model's. The share then falls short of the budget by
    less than one rank step of one module. ``lora_alpha`` equals each rank (scaling 1, as PEFT's LoRA with
    ``lora_alpha=r``), so a module's update scale does not depend on its rank.

    ``model`` is the model the config is for (its parameters are counted; a report records its module paths but
    not their shapes, so it is required). Extra keyword arguments go to ``LoraConfig``.
    """
    from peft import LoraConfig

    if isinstance(report, str | os.PathLike):
        report = PlasticityReport.load(report)
    if not isinstance(report, PlasticityReport):
        raise InvalidInputError(
            f"report must be a PlasticityReport or the path of a saved one, not {type(report).__name__}; measure "
            "with hf_plasticity.measure_plasticity"
        )
    if model is None:
        raise InvalidInputError(
            "plasticity_lora_config needs model=<the model the adapter is for>: the report records module paths, "
            "not their shapes, and the budget is a share of the model's parameters"
        )
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 1:
        raise InvalidInputError(f"budget={budget!r} must be a fraction with 0 < budget <= 1 (e.g. 0.04)")
    if signal not in SIGNALS:
        raise InvalidInputError(f"signal={signal!r}; choose one of {list(SIGNALS)}")
    plan = allocate_ranks(
        report, model, budget=budget, signal=signal, exponent=exponent, modules_to_save=modules_to_save
    )
    return LoraConfig(**lora_kwargs_of(plan), lora_dropout=lora_dropout, **lora_kwargs)


def lora_kwargs_of(plan: dict[str, Any]) -> dict[str, Any]:
    """``LoraConfig`` keyword arguments of an :func:`allocate_ranks` plan (``lora_alpha`` = rank: scaling 1)."""
    ranks = {p: r for p, r in plan["ranks"].items() if r > 0}
    top = max(ranks.values())
    return {
        "r": top,
        "lora_alpha": top,
        "target_modules": list(ranks),
        "rank_pattern": dict(ranks),
        "alpha_pattern": dict(ranks),
        "modules_to_save": plan["modules_to_save"],
    }


def allocate_ranks(
    report: PlasticityReport,
    model: nn.Module,
    *,
    budget: float,
    signal: str = "auto",
    exponent: float = 1.0,
    modules_to_save: list[str] | None = None,
) -> dict[str, Any]:
    """The allocation behind :func:`plasticity_lora_config`: ranks, trained LayerNorms, and the counts.

    Returns ``ranks`` (linear path -> rank, most plastic first, zeros included), ``modules_to_save`` (head(s),
    then the LayerNorms trained whole), ``trainable`` (parameters it trains), ``total`` (the model's),
    ``allowance`` (``budget * total``) and ``step`` (the largest single rank step, the tolerance).
    """
    if isinstance(exponent, bool) or not isinstance(exponent, int | float) or not 0 < exponent < math.inf:
        raise InvalidInputError(
            f"exponent={exponent!r} must be a positive number: 1 (ranks proportional to the score), 0.5 (flatter)"
        )
    resolved = resolve_components(model)
    normalised, _ = normalise_scores(report, signal, per_layer=True)
    candidates = {path: comp for _, comp, path in resolved.iter_modules()}
    scores = candidate_scores(normalised, resolved, candidates)
    heads = resolved.head_paths() if modules_to_save is None else list(modules_to_save)
    total = base_parameter_count(model)
    head_cost = sum(base_parameter_count(model.get_submodule(h)) for h in heads)
    allowance = budget * total - head_cost
    units = _units(model, {p: s**exponent for p, s in scores.items() if s > 0})
    if not units:
        raise InvalidInputError("the report scores no module of this model above zero; measure this model again")
    scale = _largest_scale(units, allowance)
    alloc = {u.path: _rank(scale, u) for u in units}
    ranks = {u.path: alloc[u.path] for u in units if u.linear}
    norms = [u.path for u in units if not u.linear and alloc[u.path] >= 1]
    if not any(ranks.values()):
        smallest = min(u.step for u in units if u.linear)
        raise InvalidInputError(
            f"budget={budget} leaves {max(int(allowance), 0)} parameters after the head(s) {heads} "
            f"({head_cost}); the smallest rank-1 LoRA here needs {smallest}: raise the budget"
        )
    trainable = head_cost + sum(u.step * alloc[u.path] for u in units)
    return {
        "ranks": ranks,
        "modules_to_save": [*heads, *norms],
        "trainable": trainable,
        "total": total,
        "allowance": budget * total,
        "step": max(u.step for u in units),
        "scale": scale,
    }


def _units(model: nn.Module, scores: dict[str, float]) -> list[RankUnit]:
    """The linears inside each scored module (each with its module's score), or the module itself (a norm).

    Ordered by score through the one ranking rule, so equal allocations keep the model's order.
    """
    units = []
    for name_of_component in rank_components(scores):  # "a+b": the modules of one component share its score
        for path in ResolvedComponents.modules_of(name_of_component):
            units += _module_units(model, path, scores[name_of_component])
    return units


def _module_units(model: nn.Module, path: str, score: float) -> list[RankUnit]:
    module = model.get_submodule(path)
    linears = [
        (name, sub)
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Linear) and any(sub is m for m in base_modules(module))
    ]
    if not linears:
        return [RankUnit(path, score, base_parameter_count(module), 1, linear=False)]
    return [
        RankUnit(
            f"{path}.{name}" if name else path,
            score,
            lin.in_features + lin.out_features,
            min(lin.in_features, lin.out_features),
            True,
        )
        for name, lin in linears
    ]


def _largest_scale(units: list[RankUnit], allowance: float) -> float:
    """The largest ``c`` whose allocation fits ``allowance``: the cost only steps up at ``c = k / score``."""

    def cost(c: float) -> int:
        return sum(u.step * _rank(c, u) for u in units)

    breakpoints = sorted({k / u.score for u in units for k in range(1, u.cap + 1)})
    fits = [c for c in breakpoints if cost(c) <= allowance]
    return fits[-1] if fits else 0.0


def _rank(scale: float, unit: RankUnit) -> int:
    """``floor(scale * score)`` capped; the tolerance absorbs ``(k / s) * s`` landing a hair below ``k``."""
    return min(math.floor(scale * unit.score * (1 + 1e-12)), unit.cap)
