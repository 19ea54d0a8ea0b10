"""What each finetuning method trains, resolved to a run key so identical selections share their runs.

A method is a name the results list (``mha``, ``theory``, ``shared``, ...). Several methods can select the
same modules (on the bundled ViT, ``theory`` trains exactly what ``mha`` trains); they resolve to the same
run key, are trained once, and are listed under every name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..components import COMPONENTS
from ..errors import InvalidInputError
from ..models import BUNDLED, load_model
from ..report.report import PlasticityReport
from ..tuner import PlasticityConfig, select_modules
from .pareto import PARETO_METHODS

LORA_RANK = 16
LORA_TARGETS = ("q_proj", "v_proj")

BASELINES = ("linear", "full", "lora")
SELECTIONS = ("theory", "shared", "in_situ", "shared_measured", "in_situ_measured", "budget")
"""The package's selections: its defaults (``shared``/``in_situ`` = ``from_report`` with ``signal='auto'``), and
the raw measured rankings (``signal='measured'``), kept as the evidence for that default."""
METHODS: tuple[str, ...] = ("linear", *COMPONENTS, "full", "lora", *SELECTIONS)
ALL_METHODS: tuple[str, ...] = (*METHODS, *(m for m in PARETO_METHODS if m not in METHODS))
"""Every method name, the Pareto experiment's included (:mod:`hf_plasticity.reproduce.pareto`)."""

DESCRIPTIONS: dict[str, str] = {
    "linear": "linear probing: the new head only",
    **{c: f"{c} in every layer (+ head): PlasticityConfig(components=['{c}'])" for c in COMPONENTS},
    "full": "full finetuning: every parameter",
    "lora": f"PEFT LoRA r={LORA_RANK}, alpha={LORA_RANK} on {'/'.join(LORA_TARGETS)} (+ head via modules_to_save)",
    "theory": "PlasticityConfig(): the paper's theoretical ranking, top_k=1",
    "shared": "PlasticityConfig.from_report(shared-protocol report, top_k=1) (signal='auto', the default)",
    "in_situ": "PlasticityConfig.from_report(in-situ report, top_k=1) (signal='auto', the default)",
    "shared_measured": "PlasticityConfig.from_report(shared-protocol report, top_k=1, signal='measured')",
    "in_situ_measured": "PlasticityConfig.from_report(in-situ report, top_k=1, signal='measured')",
    "budget": "PlasticityConfig(budget=LoRA's trainable share): mode full, theoretical ranking",
}


@dataclass
class ResolvedMethod:
    """A method turned into what a run trains; ``run_key`` identifies the training, whatever the name."""

    name: str
    kind: str  # "linear" | "full" | "lora" | "plasticity" | "peft" | "modules" (selected_modules trained whole)
    run_key: str
    plasticity: dict[str, Any] = field(default_factory=dict)  # PlasticityConfig kwargs, or a PEFT spec (JSON-ready)
    selected_modules: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_key": self.run_key,
            "description": DESCRIPTIONS.get(self.name) or PARETO_METHODS[self.name].description,
            "config": {k: v for k, v in self.plasticity.items() if k != "scores"},
            "score_source": (self.plasticity.get("scores") or {}).get("report", {}).get("protocol", "theory")
            if self.kind == "plasticity"
            else None,
            "selected_modules": self.selected_modules,
        }


def lora_config() -> Any:
    """PEFT's own LoRA, the parameter-efficient baseline the budget rule must beat."""
    from peft import LoraConfig

    return LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_RANK,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        modules_to_save=["classifier"],
    )


def base_model(num_labels: int, seed: int, source: str | None = None) -> nn.Module:
    """The source model (default: the bundled ViT) with a fresh ``num_labels`` head, initialised from ``seed``."""
    from transformers import logging as hf_logging

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the expected "newly initialised head" notice, once per run
    hf_logging.disable_progress_bar()
    try:
        return load_model(source or BUNDLED, num_labels=num_labels, ignore_mismatched_sizes=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def build_trainable(
    method: ResolvedMethod, num_labels: int, seed: int, task: Any = None, steps: int = 0, source: str | None = None
) -> nn.Module:
    """The model a run trains: source weights, fresh head, and only the method's parameters trainable.

    ``task`` (its train split) is read only by methods initialised from data (EVA), ``steps`` only by methods
    with a schedule of their own (AdaLoRA); ``source`` is the pretrained model (default: the bundled ViT).
    """
    model = base_model(num_labels, seed, source)
    if method.kind == "full":
        return model
    if method.kind in ("linear", "modules"):
        trained = ("classifier", *(method.selected_modules if method.kind == "modules" else ()))
        for name, p in model.named_parameters():
            p.requires_grad_(any(name.startswith(prefix + ".") for prefix in trained))
        return model
    from peft import get_peft_model

    if method.kind == "lora":
        return get_peft_model(model, lora_config())
    if method.kind == "peft":
        from .pareto import build_peft

        return build_peft(model, method.plasticity, task, steps)
    config = PlasticityConfig(**method.plasticity)
    peft_model = get_peft_model(model, config)
    chosen = list(peft_model.peft_config["default"].selected_modules or [])
    if sorted(chosen) != sorted(method.selected_modules):
        raise InvalidInputError(
            f"method {method.name!r} selected {chosen}, not the resolved {method.selected_modules}"
        )
    return peft_model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; for a PEFT model, total is the base model's plus its adapters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def lora_share(num_labels: int) -> float:
    """LoRA's trainable parameters (head included) as a fraction of the base model's: the budget to match."""
    base = base_model(num_labels, 0)
    total = sum(p.numel() for p in base.parameters())
    trainable, _ = count_parameters(build_trainable(ResolvedMethod("lora", "lora", "lora"), num_labels, 0))
    return trainable / total


def resolve_methods(
    names: list[str] | tuple[str, ...],
    num_labels: int,
    reports: dict[str, PlasticityReport],
    budget: float,
    shares: dict[str, float] | None = None,
) -> dict[str, ResolvedMethod]:
    """Resolve every method on a model of this task's shape, with this task's measured reports."""
    from .pareto import is_pareto_method, resolve_pareto

    model = base_model(num_labels, 0)
    out: dict[str, ResolvedMethod] = {}
    for name in names:
        if name in BASELINES:
            out[name] = ResolvedMethod(name, name, name)
            continue
        if is_pareto_method(name):
            if shares is None:
                raise InvalidInputError(
                    f"method {name!r} belongs to the Pareto experiment (hf-plasticity reproduce --pareto)"
                )
            kind, spec, modules = resolve_pareto(name, model, reports, shares)
            if kind == "plasticity":
                config = PlasticityConfig(**spec)
                key = _run_key(modules, sorted(set(select_modules(model, config).components.values())))
            else:
                from .pareto import peft_run_key

                key = peft_run_key(spec)
            out[name] = ResolvedMethod(name, kind, key, spec, modules)
            continue
        kwargs = _plasticity_kwargs(name, reports, budget)
        config = PlasticityConfig(**kwargs)
        selection = select_modules(model, config)
        stored = {**kwargs, "scores": config.resolved_scores()}  # normalised scores: plain JSON, picklable
        key = _run_key(selection.modules, sorted(set(selection.components.values())))
        out[name] = ResolvedMethod(name, "plasticity", key, stored, list(selection.modules))
    return out


def _plasticity_kwargs(name: str, reports: dict[str, PlasticityReport], budget: float) -> dict[str, Any]:
    if name in COMPONENTS:
        return {"components": [name]}
    if name == "theory":
        return {}
    protocol = name.removesuffix("_measured")
    if protocol in ("shared", "in_situ"):
        if protocol not in reports:
            raise InvalidInputError(f"method {name!r} needs a {protocol} report; measure it first")
        return {"scores": reports[protocol], "top_k": 1, **({"signal": "measured"} if name != protocol else {})}
    if name == "budget":
        return {"budget": budget}
    raise InvalidInputError(f"unknown method {name!r}; choose from {list(METHODS)}")


def _run_key(modules: list[str], comps: list[str]) -> str:
    """Same modules = same training: one key, whatever rule chose them (``full:``: the modules' own weights)."""
    digest = hashlib.sha256(json.dumps(sorted(modules)).encode()).hexdigest()[:10]
    return f"full:{'+'.join(comps)}:{len(modules)}:{digest}"
