"""The Pareto experiment's PEFT peers: each is built and trained as its own method defines it.

AdaLoRA (Zhang et al., 2023) keeps a final budget of ``target_r`` ranks per adapted matrix on average, pruned
from ``init_r`` by sensitivity; PEFT applies the pruning when the training loop calls ``update_and_allocate``
after each optimizer step. These tests check the matched budget and that the run's loop really prunes.
"""

from __future__ import annotations

from typing import Any

import pytest

from hf_plasticity.models import load_image_processor
from hf_plasticity.reproduce.finetune import RunJob, TrainProtocol, run_job
from hf_plasticity.reproduce.methods import base_model, build_trainable, resolve_methods
from hf_plasticity.reproduce.pareto import budget_shares
from hf_plasticity.reproduce.tasks import prepare_task


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    model = base_model(10, 0)
    shares = budget_shares(model, 0.042)
    return resolve_methods(("b1_lora_all", "b1_adalora"), 10, {}, 0.042, shares)


def test_adalora_final_budget_is_the_matched_lora_rank(resolved) -> None:
    lora, ada = resolved["b1_lora_all"].plasticity, resolved["b1_adalora"].plasticity
    assert ada["method"] == "adalora"
    assert ada["target_r"] == lora["r"]
    assert ada["init_r"] >= 1.5 * ada["target_r"] and ada["init_r"] > ada["target_r"]
    assert ada["target_modules"] == lora["target_modules"]


def test_adalora_ranks_are_pruned_to_the_budget_during_the_run(resolved, tmp_path, monkeypatch) -> None:
    method = resolved["b1_adalora"]
    task = prepare_task("digits", load_image_processor("bundled"), {"train": 64, "val": 16, "test": 16})
    protocol = TrainProtocol(steps=10, batch_size=16, eval_batch_size=16)
    job = RunJob("digits", method, "adamw", 0, 1e-3, protocol, str(tmp_path / "run.json"))
    captured: dict[str, Any] = {}

    import hf_plasticity.reproduce.finetune as finetune

    real = finetune.build_trainable

    def keep(*args: Any, **kwargs: Any) -> Any:
        captured["model"] = real(*args, **kwargs)
        return captured["model"]

    monkeypatch.setattr(finetune, "build_trainable", keep)
    run_job(job, task)
    pattern = captured["model"].peft_config["default"].rank_pattern
    assert pattern, "update_and_allocate never ran: AdaLoRA kept its initial ranks"
    kept = sum(sum(mask) for mask in pattern.values())
    assert kept == method.plasticity["target_r"] * len(method.plasticity["target_modules"])


def test_adalora_without_steps_says_so(resolved) -> None:
    from hf_plasticity.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="number of steps"):
        build_trainable(resolved["b1_adalora"], 10, 0)
