"""The Pareto experiment: plasticity against PEFT's own selectors at matched trainable-parameter budgets.

Budgets (shares of the bundled ViT's parameters, head included): ``B1`` = PEFT LoRA r=16 on (q, v) (4.2%),
``B2`` = 12% (two whole modules), ``B3`` = one component type in every layer (attention: 33%), and full
finetuning. At each budget the peers are PEFT's: LoRA on (q, v) and on every linear (rank set to match), EVA
(data-driven ranks), KappaTune's targets with LoRA, and LN tuning at its own budget; the plasticity options
are ``plasticity_lora_config`` and ``PlasticityConfig(budget=...)``, per (layer, component), under both
measurement protocols.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InvalidInputError
from ..report.report import PlasticityReport

B2_SHARE = 0.12
BUDGETS = ("head", "LN", "B1", "B2", "B3", "B4", "full")
PLASTICITY_FAMILIES = ("plora", "budget", "default")
"""The package's own options; every other family is a peer, and the best of them per budget is "the best peer"."""


@dataclass(frozen=True)
class Rates:
    """A learning-rate grid of the committed run: methods sharing one are asked it together."""

    optimizer: str
    lrs: tuple[float, ...]
    select_on: str | None = None  # choose the rate on this task alone (a method the leaders dominate)
    grid_only: bool = False  # the grid alone: the evidence for pruning the method


LORA_RATES = (3e-3, 1e-2, 3e-2)  # a LoRA-type method's best rate is about 10x a whole module's
WHOLE_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
ADAMW_LORA_LEAD = Rates("adamw", LORA_RATES)
ADAMW_WHOLE_LEAD = Rates("adamw", WHOLE_RATES)
ADAMW_LORA_REST = Rates("adamw", LORA_RATES, select_on="digits")
ADAMW_WHOLE_REST = Rates("adamw", WHOLE_RATES, select_on="digits")
ADAMW_WIDE = Rates("adamw", (*LORA_RATES, 0.1), select_on="digits")  # AdaLoRA, LN tuning chose 3e-2, the top
SGD_LORA_LEAD = Rates("sgd", (0.03, 0.1, 0.3))
SGD_MAIN = Rates("sgd", (0.003, 0.01, 0.03, 0.1, 0.3))  # the main run's grid: its cached runs are reused
ADAMW_WHOLE_GRID = Rates("adamw", WHOLE_RATES, select_on="digits", grid_only=True)
RATE_PLANS = (
    ADAMW_LORA_LEAD,
    ADAMW_WHOLE_LEAD,
    ADAMW_LORA_REST,
    ADAMW_WHOLE_REST,
    ADAMW_WIDE,
    SGD_LORA_LEAD,
    SGD_MAIN,
    ADAMW_WHOLE_GRID,
)
"""In order of the question's weight, so a run cut short has answered the first ones."""


@dataclass(frozen=True)
class ParetoMethod:
    """Everything the experiment knows of one method: a new peer is one more record in :data:`PARETO_METHODS`.

    ``run_order`` places the method in the committed run (leaders first); ``rates`` are the grids it runs.
    A method with an empty ``description`` is the main run's method of that name, trained as that run trains it
    (so its cached runs are shared), and described there.
    """

    name: str
    budget: str
    family: str
    description: str = ""
    protocol: str | None = None  # which measured report a plasticity option reads
    exponent: float = 1.0  # plasticity LoRA: ranks ∝ score ** exponent
    top_k: int | None = None
    rates: tuple[Rates, ...] = ()
    run_order: int = 0

    @property
    def plasticity(self) -> bool:
        return self.family in PLASTICITY_FAMILIES


_ADALORA = (
    "PEFT AdaLoRA on every linear: final budget target_r = B1's matched rank, init_r = 1.5 x target_r, ranks "
    "pruned by sensitivity over steps 10%-80% (update_and_allocate after every optimizer step)"
)
_M = ParetoMethod
PARETO_METHODS: dict[str, ParetoMethod] = {
    m.name: m
    for m in (
        _M(
            "b1_plora_in_situ",
            "B1",
            "plora",
            "plasticity_lora_config(in-situ report, budget=B1): ranks ∝ per-module score",
            protocol="in_situ",
            rates=(ADAMW_LORA_LEAD, SGD_LORA_LEAD),
            run_order=1,
        ),
        _M(
            "b1_plora_flat",
            "B1",
            "plora",
            "plasticity_lora_config(in-situ report, budget=B1, exponent=0.5): ranks ∝ sqrt(score)",
            protocol="in_situ",
            exponent=0.5,
            rates=(ADAMW_LORA_REST,),
            run_order=9,
        ),
        _M(
            "b1_plora_shared",
            "B1",
            "plora",
            "plasticity_lora_config(shared report, budget=B1)",
            protocol="shared",
            rates=(ADAMW_LORA_REST,),
            run_order=10,
        ),
        _M("lora", "B1", "lora_qv", rates=(ADAMW_LORA_REST, SGD_MAIN), run_order=11),
        _M(
            "b1_lora_all",
            "B1",
            "lora_all",
            "PEFT LoRA on every linear of every block, rank matched to B1",
            rates=(ADAMW_LORA_LEAD, SGD_LORA_LEAD),
            run_order=2,
        ),
        _M("b1_adalora", "B1", "adalora", _ADALORA, rates=(ADAMW_WIDE,), run_order=17),
        _M(
            "b1_eva",
            "B1",
            "eva",
            "PEFT LoRA with EVA init (EvaConfig(rho=2), ranks redistributed from activations) on every linear, B1",
            rates=(ADAMW_LORA_REST,),
            run_order=13,
        ),
        _M(
            "b1_kappa",
            "B1",
            "kappa",
            "KappaTune targets (peft.helpers.find_kappa_target_modules, top_p=0.25) + LoRA, rank matched to B1",
            rates=(ADAMW_LORA_REST,),
            run_order=14,
        ),
        _M(
            "b2_plora_in_situ",
            "B2",
            "plora",
            "plasticity_lora_config(in-situ report, budget=B2)",
            protocol="in_situ",
            rates=(ADAMW_LORA_LEAD, SGD_LORA_LEAD),
            run_order=3,
        ),
        _M(
            "b2_plora_flat",
            "B2",
            "plora",
            "plasticity_lora_config(in-situ report, budget=B2, exponent=0.5)",
            protocol="in_situ",
            exponent=0.5,
            rates=(ADAMW_LORA_REST,),
            run_order=12,
        ),
        _M(
            "b2_budget_in_situ",
            "B2",
            "budget",
            "PlasticityConfig(scores=in-situ report, budget=B2): whole modules, per (layer, component)",
            protocol="in_situ",
            rates=(ADAMW_WHOLE_LEAD,),
            run_order=5,
        ),
        _M(
            "b2_budget_shared",
            "B2",
            "budget",
            "PlasticityConfig(scores=shared report, budget=B2)",
            protocol="shared",
            rates=(ADAMW_WHOLE_GRID,),
            run_order=20,
        ),
        _M("b2_lora_qv", "B2", "lora_qv", "PEFT LoRA on q, v, rank matched to B2"),
        _M(
            "b2_lora_all",
            "B2",
            "lora_all",
            "PEFT LoRA on every linear, rank matched to B2",
            rates=(ADAMW_LORA_LEAD, SGD_LORA_LEAD),
            run_order=4,
        ),
        _M(
            "b2_adalora",
            "B2",
            "adalora",
            "PEFT AdaLoRA on every linear, final budget matched to B2 (as b1_adalora)",
            rates=(ADAMW_WIDE,),
            run_order=18,
        ),
        _M("mha", "B3", "default", rates=(ADAMW_WHOLE_LEAD, SGD_MAIN), run_order=6),
        _M(
            "b3_budget_in_situ",
            "B3",
            "budget",
            "PlasticityConfig(scores=in-situ report, budget=B3)",
            protocol="in_situ",
            rates=(ADAMW_WHOLE_REST,),
            run_order=15,
        ),
        _M("b3_lora_all", "B3", "lora_all", "PEFT LoRA on every linear, rank matched to B3"),
        _M(
            "b4_top2",
            "B4",
            "default",
            "PlasticityConfig(top_k=2): the two least smooth component types in every layer (attention, fc1)",
            top_k=2,
            rates=(ADAMW_WHOLE_LEAD,),
            run_order=7,
        ),
        _M(
            "b4_budget_in_situ",
            "B4",
            "budget",
            "PlasticityConfig(scores=in-situ report, budget=B4): whole modules, per (layer, component)",
            protocol="in_situ",
            rates=(ADAMW_WHOLE_REST,),
            run_order=16,
        ),
        _M("full", "full", "full", rates=(ADAMW_WHOLE_LEAD, SGD_MAIN), run_order=8),
        _M(
            "ln_tuning",
            "LN",
            "ln_tuning",
            "PEFT LNTuningConfig on every LayerNorm (+ head)",
            rates=(ADAMW_WIDE,),
            run_order=19,
        ),
        _M("linear", "head", "linear", rates=(SGD_MAIN,), run_order=0),
    )
}
"""The order of the results' tables; ``b2_lora_qv`` and ``b3_lora_all`` are defined but not in the committed run."""


def committed_run() -> tuple[tuple[str, ...], tuple[tuple[Rates, tuple[str, ...]], ...]]:
    """The committed run's methods (in ``run_order``; the head-only reference, which every gain is relative to,
    closes the list) and each grid of :data:`RATE_PLANS` with the methods that run it."""
    ranked = sorted((m for m in PARETO_METHODS.values() if m.rates), key=lambda m: m.run_order)
    names = tuple(m.name for m in ranked)
    methods = (*(n for n in names if n != "linear"), "linear")
    return methods, tuple((plan, tuple(m.name for m in ranked if plan in m.rates)) for plan in RATE_PLANS)


def is_pareto_method(name: str) -> bool:
    return name in PARETO_METHODS and bool(PARETO_METHODS[name].description)


def budget_shares(model: nn.Module, lora_share: float) -> dict[str, float]:
    """B1 (LoRA r=16 on q, v, measured by the caller), B2, B3 (attention in every layer + head), B4 (attention
    and the first MLP linear + head: the budget between one component type and full finetuning)."""
    from ..components import resolve_components
    from ..tuner.selection import base_parameter_count

    resolved = resolve_components(model)
    total = base_parameter_count(model)
    head = sum(base_parameter_count(model.get_submodule(h)) for h in resolved.head_paths())
    mha = sum(base_parameter_count(model.get_submodule(p)) for p in resolved.paths["mha"])
    fc1 = sum(base_parameter_count(model.get_submodule(p)) for p in resolved.paths["ffn_fc1"])
    return {"B1": lora_share, "B2": B2_SHARE, "B3": (mha + head) / total, "B4": (mha + fc1 + head) / total}


def resolve_pareto(
    name: str, model: nn.Module, reports: dict[str, PlasticityReport], shares: dict[str, float]
) -> tuple[str, dict[str, Any], list[str]]:
    """``(kind, spec, trained modules)`` of a Pareto method on this task's model (``kind``: plasticity or peft)."""
    from ..components import resolve_components
    from ..tuner import PlasticityConfig, allocate_ranks, select_modules
    from ..tuner.selection import base_parameter_count

    info = PARETO_METHODS[name]
    family = info.family
    share = shares.get(info.budget, math.nan)
    resolved = resolve_components(model)
    heads = resolved.head_paths()
    total = base_parameter_count(model)
    allowance = share * total - sum(base_parameter_count(model.get_submodule(h)) for h in heads)
    linears = {
        path: (module.in_features, module.out_features)
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear) and path.startswith(resolved.layer_path(0).rsplit(".", 1)[0] + ".")
    }
    if family == "budget":
        kwargs: dict[str, Any] = {"scores": reports[str(info.protocol)], "budget": share}
        config = PlasticityConfig(**kwargs)
        modules = select_modules(model, config).modules
        return "plasticity", {"budget": share, "scores": config.resolved_scores()}, modules
    if family == "default":  # the theoretical ranking's top_k component types, in every layer
        config = PlasticityConfig(top_k=info.top_k)
        return "plasticity", {"top_k": info.top_k}, select_modules(model, config).modules
    if family == "plora":
        plan = allocate_ranks(reports[str(info.protocol)], model, budget=share, exponent=info.exponent)
        ranks = {p: r for p, r in plan["ranks"].items() if r > 0}
        top = max(ranks.values())
        spec = {
            "method": "lora",
            "target_modules": list(ranks),
            "r": top,
            "lora_alpha": top,
            "rank_pattern": ranks,
            "alpha_pattern": dict(ranks),
            "modules_to_save": plan["modules_to_save"],
        }
        return "peft", spec, list(ranks)
    if family == "lora_qv":
        targets = [p for p in linears if p.rsplit(".", 1)[-1] in ("q_proj", "v_proj")]
        return "peft", _matched_lora(targets, linears, allowance, heads), targets
    if family in ("lora_all", "eva", "adalora"):
        targets = list(linears)
        spec = _matched_lora(targets, linears, allowance, heads)
        if family == "eva":
            spec = {**spec, "method": "eva"}
        if family == "adalora":  # AdaLoRA's budget is its final average rank; it starts half as wide again
            target_r = spec["r"]
            init_r = max(target_r + 1, math.ceil(1.5 * target_r))
            spec = {**spec, "method": "adalora", "target_r": target_r, "init_r": init_r, "lora_alpha": init_r}
            del spec["r"]
        return "peft", spec, targets
    if family == "kappa":
        from peft.helpers import find_kappa_target_modules

        found = find_kappa_target_modules(model, top_p=0.25, show_progress=False)["target_modules"]
        targets = [p for p in linears if p in set(found or []) or any(p.endswith("." + f) for f in found or [])]
        if not targets:
            raise InvalidInputError(f"KappaTune selected {found}, none of which is a block linear")
        return "peft", _matched_lora(targets, linears, allowance, heads), targets
    if family == "ln_tuning":
        norms = [p for _, comp, p in resolved.iter_modules(("attn_norm", "ffn_norm"))]
        return "peft", {"method": "ln_tuning", "target_modules": norms, "modules_to_save": heads}, norms
    raise InvalidInputError(f"unknown Pareto method {name!r}; choose from {sorted(PARETO_METHODS)}")


def _matched_lora(
    targets: list[str], linears: dict[str, tuple[int, int]], allowance: float, heads: list[str]
) -> dict[str, Any]:
    """Uniform-rank LoRA on ``targets`` whose parameter count is closest to ``allowance`` (ties: the smaller)."""
    per_rank = sum(sum(linears[t]) for t in targets)
    cap = min(min(linears[t]) for t in targets)
    r = max(1, min(cap, round(allowance / per_rank)))
    return {"method": "lora", "target_modules": targets, "r": r, "lora_alpha": r, "modules_to_save": list(heads)}


def peft_run_key(spec: dict[str, Any]) -> str:
    """Same PEFT config = same training: one key, whatever the method is called."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return f"peft-{spec['method']}:{len(spec['target_modules'])}:{digest}"


def build_peft(model: nn.Module, spec: dict[str, Any], task: Any = None, steps: int = 0) -> nn.Module:
    """The PEFT model a ``peft`` spec describes; EVA is initialised from the task's train split.

    AdaLoRA's rank schedule spans the run's ``steps``: ranks stay whole for the first 10%, are pruned to the
    budget until 80%, then stay fixed (the training loop calls ``update_and_allocate``; see ``finetune``).
    """
    from peft import AdaLoraConfig, EvaConfig, LNTuningConfig, LoraConfig, get_peft_model

    fields = {k: v for k, v in spec.items() if k != "method"}
    if spec["method"] == "ln_tuning":
        return get_peft_model(model, LNTuningConfig(**fields))
    if spec["method"] == "lora":
        return get_peft_model(model, LoraConfig(lora_dropout=0.0, **fields))
    if spec["method"] == "adalora":
        if steps < 1:
            raise InvalidInputError(f"AdaLoRA's rank schedule needs the run's number of steps (steps={steps})")
        adalora = AdaLoraConfig(
            lora_dropout=0.0, total_step=steps, tinit=steps // 10, tfinal=steps // 5, deltaT=1, **fields
        )
        return get_peft_model(model, adalora)
    if spec["method"] == "eva":
        import torch
        from peft import initialize_lora_eva_weights
        from torch.utils.data import DataLoader

        config = LoraConfig(lora_dropout=0.0, init_lora_weights="eva", eva_config=EvaConfig(rho=2.0), **fields)
        peft_model = get_peft_model(model, config, low_cpu_mem_usage=True)
        loader = DataLoader(task.split("train"), batch_size=32, shuffle=False)
        with torch.no_grad():
            initialize_lora_eva_weights(
                peft_model,
                loader,
                prepare_model_inputs_fn=None,
                prepare_layer_inputs_fn=_tokens,
                show_progress_bar=False,
            )
        return peft_model
    raise InvalidInputError(f"unknown PEFT method {spec['method']!r} in a Pareto spec")


def _tokens(layer_input: Any, model_input: Any, layer_name: str) -> Any:
    """EVA's SVD input for a vision layer: every token of every image (no padding to mask out)."""
    x = layer_input[0] if isinstance(layer_input, tuple | list) else layer_input
    return x.reshape(-1, x.shape[-1])


def is_plasticity(name: str) -> bool:
    """The package's own options (the default ``PlasticityConfig()`` included), against PEFT's peers."""
    return PARETO_METHODS[name].plasticity
