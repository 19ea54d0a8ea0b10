"""Plasticity-guided targets in the shape of PEFT's ``find_kappa_target_modules``: plain dicts for PEFT's configs.

``find_plasticity_target_modules`` answers "which linears get LoRA" (and, given a budget, at which ranks);
``find_plasticity_trainable_modules`` answers "which modules (or whole blocks) to train at full rank". Both
rank by the measured per-(layer, component) plasticity through the package's one ranking rule, and count a
fraction the way KappaTune does (``max(1, floor(N * top_p))``), so the two helpers are interchangeable in a
script that already uses PEFT's. ``find_gradient_target_modules`` ranks the same linears by gradient norm over
a few labelled batches: where the benchmark forces the choice (LoRA on a quarter of the linears) that signal
chose better than plasticity, so a user with labels at hand gets it in the same shape.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..components import rank_components, resolve_components
from ..errors import InvalidInputError
from ..report.report import PlasticityReport
from .config import SIGNALS
from .scores import normalise_scores
from .selection import base_modules, candidate_scores


def _report(report: PlasticityReport | str | os.PathLike[str]) -> PlasticityReport:
    if isinstance(report, str | os.PathLike):
        return PlasticityReport.load(report)
    if not isinstance(report, PlasticityReport):
        raise InvalidInputError(
            f"report must be a PlasticityReport or the path of a saved one, not {type(report).__name__}; measure "
            "with hf_plasticity.measure_plasticity"
        )
    return report


def count_of(total: int, top_p: float | None, num_modules: int | None) -> int:
    """How many of ``total`` ranked candidates a rule keeps: ``num_modules`` (at most all), else KappaTune's
    ``max(1, floor(total * top_p))``."""
    if (top_p is None) == (num_modules is None):
        raise InvalidInputError("pass exactly one of top_p= (a fraction, e.g. 0.25) and num_modules= (a count)")
    if num_modules is not None:
        if isinstance(num_modules, bool) or not isinstance(num_modules, int) or num_modules < 1:
            raise InvalidInputError(f"num_modules={num_modules!r} must be a positive integer")
        return min(num_modules, total)
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise InvalidInputError(f"top_p={top_p!r} must be a fraction with 0 < top_p <= 1 (e.g. 0.25)")
    return max(1, math.floor(total * top_p))


def block_linears(model: nn.Module) -> dict[str, str]:
    """Every ``nn.Linear`` inside the transformer blocks, in model order, mapped to its component's module path."""
    resolved = resolve_components(model)
    out: dict[str, str] = {}
    for _, _, path in resolved.iter_modules():
        for sub_path in resolved.modules_of(path):
            module = model.get_submodule(sub_path)
            mine = base_modules(module)
            for name, sub in module.named_modules():
                if isinstance(sub, nn.Linear) and any(sub is m for m in mine):
                    out[f"{sub_path}.{name}" if name else sub_path] = path
    return out


def plasticity_linear_scores(
    model: nn.Module, report: PlasticityReport | str | os.PathLike[str], signal: str = "auto"
) -> dict[str, float]:
    """Each block linear's score: the measured plasticity of its (layer, component), in model order.

    A component of several linears (attention's q, k, v and output projection) gives each of them its score.
    Linears whose cell is unmeasured, or set aside by the ``auto`` guard, are left out.
    """
    if signal not in SIGNALS:
        raise InvalidInputError(f"signal={signal!r}; choose one of {list(SIGNALS)}")
    resolved = resolve_components(model)
    normalised, _ = normalise_scores(_report(report), signal, per_layer=True)
    candidates = {path: comp for _, comp, path in resolved.iter_modules()}
    scores = candidate_scores(normalised, resolved, candidates)
    return {lin: scores[comp] for lin, comp in block_linears(model).items() if comp in scores}


def find_plasticity_target_modules(
    model: nn.Module,
    report: PlasticityReport | str | os.PathLike[str],
    *,
    top_p: float | None = None,
    num_modules: int | None = None,
    budget: float | None = None,
    signal: str = "auto",
) -> dict[str, Any]:
    """LoRA targets from measured plasticity, as a dict that goes straight into ``peft.LoraConfig(**...)``.

    - ``top_p`` / ``num_modules``: the most plastic block linears (``max(1, floor(N * top_p))`` of the ``N``
      scored, or ``num_modules``), most plastic first; returns ``{"target_modules": [...]}``, ranks left to ``r``.
    - ``budget`` (a share of the model's parameters, head included): ranks proportional to each module's
      plasticity, filling the budget (the allocation of :func:`plasticity_lora_config`); returns
      ``target_modules``, ``r``, ``lora_alpha``, ``rank_pattern``, ``alpha_pattern`` and ``modules_to_save``.

    Example: ``LoraConfig(**find_plasticity_target_modules(model, "report.json", top_p=0.25), r=8)``.
    """
    given = [name for name, v in (("top_p", top_p), ("num_modules", num_modules), ("budget", budget)) if v is not None]
    if len(given) != 1:
        raise InvalidInputError(f"pass exactly one of top_p=, num_modules= and budget= (got {given or 'none'})")
    if budget is not None:
        from .lora_config import allocate_ranks, lora_kwargs_of

        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 1:
            raise InvalidInputError(f"budget={budget!r} must be a fraction with 0 < budget <= 1 (e.g. 0.04)")
        if signal not in SIGNALS:
            raise InvalidInputError(f"signal={signal!r}; choose one of {list(SIGNALS)}")
        return lora_kwargs_of(allocate_ranks(_report(report), model, budget=budget, signal=signal))
    scores = plasticity_linear_scores(model, report, signal)
    if not scores:
        raise InvalidInputError("the report scores no linear of this model; measure this model (or its shape) again")
    ranked = rank_components(scores)
    return {"target_modules": ranked[: count_of(len(ranked), top_p, num_modules)]}


def gradient_linear_scores(model: nn.Module, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each block linear's ``||dL/dW||_F`` averaged over ``batches``, L the loss the model returns for a batch.

    A batch is the keyword arguments of the model's forward, labels included (``{"pixel_values": ..., "labels":
    ...}``, ``{"input_ids": ..., "labels": ...}``); tensors are moved to the model's device. A linear the loss
    does not reach scores 0. See :func:`gradient_norms` for what the backward passes leave behind (nothing).
    """
    linears = list(block_linears(model))
    norms = gradient_norms(model, batches, [f"{lin}.weight" for lin in linears])
    return {lin: norms[f"{lin}.weight"] for lin in linears}


def gradient_norms(model: nn.Module, batches: Iterable[Mapping[str, Any]], names: list[str]) -> dict[str, float]:
    """``||dL/dp||_F`` of each named parameter, averaged over ``batches``: one backward pass per batch.

    Only the named parameters require gradients meanwhile (a parameter's gradient does not depend on which
    others require one), in the model's current train/eval mode; the model's ``requires_grad`` flags and
    ``.grad`` tensors are as they were afterwards.
    """
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise InvalidInputError(f"the model has no parameters {missing[:3]}; name them as named_parameters() does")
    params = list(named.values())
    saved = [(p.requires_grad, p.grad) for p in params]
    device = params[0].device if params else torch.device("cpu")
    sums = dict.fromkeys(names, 0.0)
    count = 0
    try:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        for n in names:
            named[n].requires_grad_(True)
        for batch in batches:
            _batch_loss(model, batch, device).backward()
            for n in names:
                grad = named[n].grad
                if grad is not None:
                    sums[n] += float(grad.norm())
                    named[n].grad = None
            count += 1
    finally:
        for p, (flag, grad) in zip(params, saved, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
    if count == 0:
        raise InvalidInputError(
            "batches is empty; pass a few labelled batches, e.g. [{'pixel_values': images, 'labels': labels}]"
        )
    return {n: total / count for n, total in sums.items()}


def _batch_loss(model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    if not isinstance(batch, Mapping):
        raise InvalidInputError(
            f"each batch must be a dict of the model's inputs with labels, not {type(batch).__name__}; e.g. "
            "{'pixel_values': images, 'labels': labels}"
        )
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    output = model(**inputs)
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if not isinstance(loss, torch.Tensor):
        raise InvalidInputError(
            f"the model returned no loss for a batch with keys {sorted(batch)}; include its labels ('labels': ...)"
        )
    return loss


def find_gradient_target_modules(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    top_p: float | None = None,
    num_modules: int | None = None,
) -> dict[str, Any]:
    """LoRA targets ranked by gradient norm (:func:`gradient_linear_scores`), as a dict for ``peft.LoraConfig``.

    Counting is :func:`find_plasticity_target_modules`'s: ``max(1, floor(N * top_p))`` of the ``N`` block
    linears, or ``num_modules``, largest gradient norm first; returns ``{"target_modules": [...]}``.

    Example: ``LoraConfig(**find_gradient_target_modules(model, batches, top_p=0.25), r=8)``.
    """
    scores = gradient_linear_scores(model, batches)
    ranked = rank_components(scores)
    return {"target_modules": ranked[: count_of(len(ranked), top_p, num_modules)]}


def find_plasticity_trainable_modules(
    model: nn.Module,
    report: PlasticityReport | str | os.PathLike[str],
    *,
    top_p: float | None = None,
    num_modules: int | None = None,
    blocks: bool = False,
    signal: str = "auto",
) -> dict[str, Any]:
    """Modules (or whole blocks) to train at full rank, most plastic first, and the parameters that trains.

    Units are the (layer, component) modules, or with ``blocks=True`` the transformer blocks, scored by
    :func:`block_plasticity`. Returns ``modules`` (paths), ``heads`` (the task head(s), always trained) and
    ``pattern``: a regular expression that full-matches exactly the parameter names to train, e.g.
    ``for n, p in model.named_parameters(): p.requires_grad_(re.fullmatch(pattern, n) is not None)``.
    """
    rep = _report(report)
    resolved = resolve_components(model)
    if blocks:
        scores = block_plasticity(model, rep, signal)
    else:
        normalised, _ = normalise_scores(rep, signal, per_layer=True)
        candidates = {path: comp for _, comp, path in resolved.iter_modules()}
        scores = candidate_scores(normalised, resolved, candidates)
    if not scores:
        raise InvalidInputError("the report scores no module of this model; measure this model (or its shape) again")
    ranked = rank_components(scores)
    chosen = ranked[: count_of(len(ranked), top_p, num_modules)]
    heads = resolved.head_paths()
    prefixes = [m for path in chosen for m in resolved.modules_of(path)] + heads
    pattern = "(?:" + "|".join(re.escape(p) for p in prefixes) + r")\..+"
    return {"modules": chosen, "heads": heads, "pattern": pattern}


def block_plasticity(
    model: nn.Module, report: PlasticityReport | str | os.PathLike[str], signal: str = "auto"
) -> dict[str, float]:
    """One score per transformer block: the mean over its components of ``P_c(layer) / mean over layers of P_c``.

    Why relative: component types differ in scale by an order of magnitude (attention's rates are ~20x the
    LayerNorms' in situ), so a plain sum would rank blocks by attention alone; dividing each type by its mean
    over layers makes every type count equally. Cells the ``auto`` guard sets aside are left out of the mean.
    """
    resolved = resolve_components(model)
    normalised, _ = normalise_scores(_report(report), signal, per_layer=True)
    candidates = {path: comp for _, comp, path in resolved.iter_modules()}
    scores = candidate_scores(normalised, resolved, candidates)
    by_type: dict[str, list[float]] = {}
    for path, value in scores.items():
        by_type.setdefault(candidates[path], []).append(value)
    mean = {c: sum(v) / len(v) for c, v in by_type.items()}
    cells: dict[int, list[float]] = {}
    for layer, comp, path in resolved.iter_modules():
        if path in scores and mean[comp] > 0:
            cells.setdefault(layer, []).append(scores[path] / mean[comp])
    return {resolved.layer_path(layer): sum(v) / len(v) for layer, v in sorted(cells.items())}


__all__ = [
    "block_linears",
    "block_plasticity",
    "count_of",
    "find_plasticity_target_modules",
    "find_plasticity_trainable_modules",
    "plasticity_linear_scores",
]
