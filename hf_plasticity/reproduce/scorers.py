"""Selection signals of the forced-choice benchmark, one signature each: ``score(context) -> {unit: score}``.

A unit is a block linear (``unit="linear"``) or a transformer block (``unit="block"``); a higher score is
chosen first, ties in model order (the package's one ranking rule). The peers' rules are written from their
authors' definitions (Spectrum's weight SNR, KappaTune's condition number, gradient norms as in GPS/SPT,
Surgical fine-tuning's relative gradient norm); the controls (inverted, shuffled) reassign plasticity's own
scores, so they select the same number of modules of each shape as plasticity does, at the identical
parameter count. A new signal is one entry of :data:`SCORERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..components import rank_components, resolve_components
from ..errors import InvalidInputError
from ..report.report import PlasticityReport
from ..tuner.targets import (
    block_linears,
    block_plasticity,
    gradient_linear_scores,
    gradient_norms,
    plasticity_linear_scores,
)

Unit = Literal["linear", "block"]


@dataclass
class ScoreContext:
    """What a signal may look at: the source with the task's fresh head, the task's reports and a few batches."""

    model: nn.Module
    unit: Unit
    reports: dict[str, PlasticityReport] = field(default_factory=dict)  # protocol -> report
    batches: list[dict[str, torch.Tensor]] = field(default_factory=list)  # labelled training batches
    seed: int = 0  # the selection seed of the random control

    def units(self) -> list[str]:
        """The candidates, in model order."""
        if self.unit == "linear":
            return list(block_linears(self.model))
        resolved = resolve_components(self.model)
        return [resolved.layer_path(i) for i in range(resolved.num_layers)]

    def members(self) -> dict[str, list[str]]:
        """Each unit's block linears (a linear is its own only member)."""
        linears = list(block_linears(self.model))
        if self.unit == "linear":
            return {lin: [lin] for lin in linears}
        return {u: [lin for lin in linears if lin.startswith(u + ".")] for u in self.units()}


Scorer = Callable[[ScoreContext], dict[str, float]]


def select(scores: dict[str, float], count: int) -> list[str]:
    """The ``count`` best-scored units (the one ranking rule: ties keep the mapping's order, the model's)."""
    return rank_components(scores)[:count]


# ------------------------------------------------------------------------------------------- plasticity
def _plasticity(protocol: str) -> Scorer:
    def score(ctx: ScoreContext) -> dict[str, float]:
        if protocol not in ctx.reports:
            raise InvalidInputError(f"the plasticity_{protocol} signal needs a {protocol} report; measure it first")
        report = ctx.reports[protocol]
        if ctx.unit == "linear":
            return plasticity_linear_scores(ctx.model, report)
        return block_plasticity(ctx.model, report)

    return score


def _weight(ctx: ScoreContext, linear: str) -> torch.Tensor:
    module = ctx.model.get_submodule(linear)
    if not isinstance(module, nn.Linear):
        raise InvalidInputError(f"{linear} is a {type(module).__name__}, not an nn.Linear")
    return module.weight


def _shape(ctx: ScoreContext, unit: str) -> tuple[Any, ...]:
    return tuple(tuple(_weight(ctx, m).shape) for m in ctx.members()[unit])


def inverted(ctx: ScoreContext) -> dict[str, float]:
    """In-situ plasticity's scores handed back in reverse order within each group of equal shape: the least
    plastic modules get the top scores, and every shape keeps the count plasticity gives it."""
    scores = _plasticity("in_situ")(ctx)
    out: dict[str, float] = {}
    for group in _shape_groups(ctx, scores):
        ranked = rank_components({u: scores[u] for u in group})
        for unit, mirror in zip(ranked, reversed(ranked), strict=True):
            out[unit] = scores[mirror]
    return {u: out[u] for u in scores}


def shuffled(ctx: ScoreContext) -> dict[str, float]:
    """In-situ plasticity's scores in a seeded random order within each group of equal shape (``ctx.seed``)."""
    scores = _plasticity("in_situ")(ctx)
    rng = np.random.default_rng(ctx.seed)
    out: dict[str, float] = {}
    for group in _shape_groups(ctx, scores):
        values = [scores[u] for u in group]
        for unit, k in zip(group, rng.permutation(len(group)), strict=True):
            out[unit] = values[int(k)]
    return {u: out[u] for u in scores}


def _shape_groups(ctx: ScoreContext, scores: dict[str, float]) -> list[list[str]]:
    groups: dict[tuple[Any, ...], list[str]] = {}
    for unit in scores:
        groups.setdefault(_shape(ctx, unit), []).append(unit)
    return list(groups.values())


# ------------------------------------------------------------------------------------------- positions
def first(ctx: ScoreContext) -> dict[str, float]:
    """The shallowest units first (Surgical fine-tuning's choice for input-level shifts)."""
    units = ctx.units()
    return {u: float(len(units) - i) for i, u in enumerate(units)}


def last(ctx: ScoreContext) -> dict[str, float]:
    """The deepest units first (Surgical fine-tuning's choice for label-level shifts)."""
    return {u: float(i) for i, u in enumerate(ctx.units())}


# ------------------------------------------------------------------------------------------- weights only
def _singular_values(weight: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(weight.detach().float().reshape(weight.shape[0], -1))


def kappa(ctx: ScoreContext) -> dict[str, float]:
    """KappaTune: minus the condition number s_1 / (s_k + 1e-8) (the lowest kappa is chosen first); a block
    scores minus the mean over its linears."""
    per = {}
    for lin in block_linears(ctx.model):
        s = _singular_values(_weight(ctx, lin))
        per[lin] = float(s[0] / (s[-1] + 1e-8))
    return {u: -float(np.mean([per[m] for m in ms])) for u, ms in ctx.members().items()}


def spectrum_snr(weight: torch.Tensor) -> float:
    """Spectrum's weight SNR as its reference code computes it: noise scale from the singular values' IQR,
    threshold ``sigma * (1 + sqrt(beta))``, ``(sum above / sum at or below) / s_1`` (noise 1 when none is below)."""
    s = _singular_values(weight)
    sigma = float(torch.quantile(s, 0.75) - torch.quantile(s, 0.25)) / 1.349
    n, m = weight.shape[0], weight[0].numel()
    beta = min(n, m) / max(n, m)
    threshold = sigma * (1 + beta**0.5)
    signal = float(s[s > threshold].sum())
    below = s[s <= threshold]
    noise = float(below.sum()) if below.numel() else 1.0
    return (signal / noise) / float(s[0])


def snr(ctx: ScoreContext) -> dict[str, float]:
    """Spectrum: the weight SNR (highest first); a block scores the mean over its linears."""
    per = {lin: spectrum_snr(_weight(ctx, lin)) for lin in block_linears(ctx.model)}
    return {u: float(np.mean([per[m] for m in ms])) for u, ms in ctx.members().items()}


# ------------------------------------------------------------------------------------------- gradients
def _need_batches(ctx: ScoreContext) -> None:
    if not ctx.batches:
        raise InvalidInputError("gradient signals need labelled training batches (ScoreContext.batches)")


def grad_norm(ctx: ScoreContext) -> dict[str, float]:
    """s_m = mean over batches of ||grad W_m||_F per linear (the package's gradient scores); a block scores the
    sum of s_m^2 over its linears."""
    _need_batches(ctx)
    per = gradient_linear_scores(ctx.model, ctx.batches)
    if ctx.unit == "linear":
        return per
    return {u: float(sum(per[m] ** 2 for m in ms)) for u, ms in ctx.members().items()}


def rgn(ctx: ScoreContext) -> dict[str, float]:
    """Surgical fine-tuning's relative gradient norm ||g|| / ||theta|| per tensor, averaged over batches (theta
    is fixed, so the mean of ||g|| over ||theta||); a block scores the mean over its tensors (weights and
    biases, LayerNorms included), a linear its weight's."""
    _need_batches(ctx)
    params = dict(ctx.model.named_parameters())
    names = list(params) if ctx.unit == "block" else [f"{lin}.weight" for lin in block_linears(ctx.model)]
    grads = gradient_norms(ctx.model, ctx.batches, names)
    # a zero tensor (a bias initialised to 0) gives inf or nan, as the ratio of tensors always has
    relative = {n: float(torch.tensor(grads[n]) / params[n].detach().norm()) for n in names}
    if ctx.unit == "linear":
        return {lin: relative[f"{lin}.weight"] for lin in block_linears(ctx.model)}
    return {u: float(np.mean([relative[n] for n in params if n.startswith(u + ".")])) for u in ctx.units()}


@dataclass(frozen=True)
class ScorerSpec:
    """A registered signal: its function, the units it ranks, and whether it needs data (and of which kind)."""

    score: Scorer
    units: tuple[Unit, ...]
    needs: str  # "report", "labels" or "weights"
    description: str


SCORERS: dict[str, ScorerSpec] = {
    "plasticity_in_situ": ScorerSpec(
        _plasticity("in_situ"), ("linear", "block"), "report", "measured plasticity, in-situ protocol"
    ),
    "plasticity_shared": ScorerSpec(
        _plasticity("shared"), ("linear", "block"), "report", "measured plasticity, shared-input protocol"
    ),
    "inverted": ScorerSpec(inverted, ("linear", "block"), "report", "in-situ scores reversed within equal shapes"),
    "shuffled": ScorerSpec(shuffled, ("linear", "block"), "report", "in-situ scores shuffled within equal shapes"),
    "first": ScorerSpec(first, ("block",), "weights", "the first blocks"),
    "last": ScorerSpec(last, ("block",), "weights", "the last blocks"),
    "kappa": ScorerSpec(kappa, ("linear", "block"), "weights", "KappaTune: lowest condition number"),
    "snr": ScorerSpec(snr, ("linear", "block"), "weights", "Spectrum: highest weight SNR"),
    "grad_norm": ScorerSpec(grad_norm, ("linear", "block"), "labels", "gradient norm over a few batches"),
    "rgn": ScorerSpec(rgn, ("linear", "block"), "labels", "Surgical fine-tuning: relative gradient norm"),
}


def score(name: str, ctx: ScoreContext) -> dict[str, float]:
    """The named signal's scores of ``ctx``'s units."""
    if name not in SCORERS:
        raise InvalidInputError(f"unknown signal {name!r}; choose from {list(SCORERS)}")
    spec = SCORERS[name]
    if ctx.unit not in spec.units:
        raise InvalidInputError(f"signal {name!r} ranks {spec.units}, not {ctx.unit!r} units")
    return spec.score(ctx)
