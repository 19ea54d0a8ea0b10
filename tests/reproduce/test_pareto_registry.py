"""A Pareto method is one record: adding one in the registry alone puts it in the run's plan and its tables."""

from __future__ import annotations

import pytest

from hf_plasticity.reproduce.methods import base_model, resolve_methods
from hf_plasticity.reproduce.pareto import (
    ADAMW_LORA_REST,
    PARETO_METHODS,
    RATE_PLANS,
    ParetoMethod,
    budget_shares,
    is_pareto_method,
)
from hf_plasticity.reproduce.pareto_output import analyse_pareto
from hf_plasticity.reproduce.runner import ExperimentSpec

NEW = ParetoMethod(
    "b1_lora_all_twin",
    "B1",
    "lora_all",
    "PEFT LoRA on every linear, rank matched to B1 (a second record of the same recipe)",
    rates=(ADAMW_LORA_REST,),
    run_order=21,
)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> ParetoMethod:
    monkeypatch.setitem(PARETO_METHODS, NEW.name, NEW)
    return NEW


def test_a_new_record_joins_the_committed_run_at_its_order_and_grid(registered: ParetoMethod) -> None:
    spec = ExperimentSpec.pareto_full()
    assert spec.methods[-2:] == (registered.name, "linear")  # after every earlier run_order; the reference last
    plans = [p for p in spec.optimizers if registered.name in (p.methods or ())]
    assert len(plans) == 1
    (plan,) = plans
    assert (plan.name, plan.lrs, plan.select_on, plan.grid_only) == ("adamw", (3e-3, 1e-2, 3e-2), "digits", False)
    assert plan.methods is not None and plan.methods[-1] == registered.name
    # the grid's other members are unchanged, in their order
    old = [m for m in plan.methods if m != registered.name]
    assert old == ["b1_plora_flat", "b1_plora_shared", "lora", "b2_plora_flat", "b1_eva", "b1_kappa"]
    assert len(spec.optimizers) == len(RATE_PLANS)


def test_without_the_record_the_plan_does_not_name_it() -> None:
    spec = ExperimentSpec.pareto_full()
    assert NEW.name not in spec.methods
    assert all(NEW.name not in (p.methods or ()) for p in spec.optimizers)


def test_a_new_record_resolves_and_is_described(registered: ParetoMethod) -> None:
    assert is_pareto_method(registered.name)
    model = base_model(10, 0)
    shares = budget_shares(model, 0.042)
    resolved = resolve_methods((registered.name, "b1_lora_all"), 10, {}, 0.042, shares)
    twin, lora_all = resolved[registered.name], resolved["b1_lora_all"]
    assert twin.kind == "peft"
    assert twin.run_key == lora_all.run_key  # the same recipe trains once, whatever it is called
    assert twin.to_dict()["description"] == registered.description


def _run(method: str, seed: int, accuracy: float) -> dict[str, object]:
    return {
        "optimizer": "adamw",
        "task": "digits",
        "methods": [method],
        "run_key": f"key-{method}",
        "lr": 1e-2,
        "seed": seed,
        "test_accuracy": accuracy,
        "val_accuracy": accuracy,
        "s_per_step": 0.5,
        "trainable": 1000,
        "total": 100_000,
    }


def test_a_new_record_appears_in_its_budget_table_as_a_peer(registered: ParetoMethod) -> None:
    runs = [
        _run(name, seed, acc)
        for name, accs in (("linear", (0.5, 0.52)), ("b1_plora_in_situ", (0.7, 0.72)), (registered.name, (0.8, 0.81)))
        for seed, acc in zip((0, 42), accs, strict=True)
    ]
    analysis = analyse_pareto({"runs": runs})["budgets"]["adamw"]
    row = analysis["table"][registered.name]
    assert (row["budget"], row["family"], row["plasticity"]) == ("B1", "lora_all", False)
    assert row["mean"] == pytest.approx((0.8 + 0.81) / 2)
    b1 = analysis["per_budget"]["B1"]
    assert b1["methods"] == ["b1_plora_in_situ", registered.name]
    assert (b1["best_plasticity"], b1["best_peer"]) == ("b1_plora_in_situ", registered.name)
