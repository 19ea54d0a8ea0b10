"""Plasticity-guided LoRA: ranks from per-module plasticity, checked against the rule's definition.

The rule (README, *Parameter budgets*): every scored module gets ``c * score ** exponent``; a linear's rank is
its floor (capped at ``min(in, out)``), ``c`` the largest that keeps the trainable parameters
(head included) within ``budget``; the ``auto`` guard leaves out LayerNorm cells measured above their bound.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from hf_plasticity import InvalidInputError, PlasticityReport, measure_plasticity, plasticity_lora_config
from tests.conftest import TINY_MODELS, pixels, scale_embedding


def tiny_vit(scale: float = 1.0) -> nn.Module:
    return scale_embedding(TINY_MODELS["vit"](), scale)


@pytest.fixture(scope="module")
def report() -> PlasticityReport:
    """Embedding tokens of small spread: some LayerNorm cells exceed their bound (the bundled model's case)."""
    return measure_plasticity(tiny_vit(0.2), pixels(16, seed=7), progress=False)


def cell_scores(report: PlasticityReport, model: nn.Module, guard: bool) -> dict[str, float]:
    """Module path -> its own measured mean, from the report's per-layer table (the definition's input)."""
    from hf_plasticity import resolve_components

    resolved = resolve_components(model)
    excluded = {(c, layer) for c, layer, *_ in report.exceeding_bounds()} if guard else set()
    out = {}
    for ci, comp in enumerate(report.components):
        for layer in range(report.num_layers):
            value = float(report.mean[layer, ci])
            if (comp, layer) not in excluded and math.isfinite(value) and value > 0:
                out[resolved.paths[comp][layer]] = value
    return out


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


BUDGETS = [pytest.param(b, id=f"budget-{b}") for b in (0.05, 0.1, 0.3)]
EXPONENTS = [pytest.param(e, id=f"exponent-{e}") for e in (1.0, 0.5)]


@pytest.mark.parametrize("budget", BUDGETS)
def test_trainable_share_is_within_one_rank_step_of_the_budget(report, budget: float) -> None:
    model = tiny_vit(0.2)
    total = sum(p.numel() for p in model.parameters())
    config = plasticity_lora_config(report, budget=budget, model=model)
    peft_model = get_peft_model(tiny_vit(0.2), config)
    step = max(m.in_features + m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    count = trainable(peft_model)
    assert count <= budget * total
    assert budget * total - count < step


@pytest.mark.parametrize("exponent", EXPONENTS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_ranks_are_the_floor_of_one_scale_times_each_modules_score(report, budget: float, exponent: float) -> None:
    model = tiny_vit(0.2)
    scores = {p: s**exponent for p, s in cell_scores(report, model, guard=True).items()}
    config = plasticity_lora_config(report, budget=budget, model=model, exponent=exponent)
    ranks = {}
    for module_path, score in scores.items():
        for name, sub in model.get_submodule(module_path).named_modules():
            if isinstance(sub, nn.Linear):
                path = f"{module_path}.{name}" if name else module_path
                ranks[path] = (config.rank_pattern.get(path, 0), score, min(sub.in_features, sub.out_features))
    uncapped = {p: (r, s) for p, (r, s, cap) in ranks.items() if r < cap}
    # r = floor(c * s) for one c: c lies in [r / s, (r + 1) / s) for every module at once
    low = max(r / s for r, s in uncapped.values())
    high = min((r + 1) / s for r, s in uncapped.values())
    assert low < high
    assert set(config.target_modules) == {p for p, (r, _, _) in ranks.items() if r > 0}
    assert config.alpha_pattern == config.rank_pattern  # scaling 1 in every module


def test_guard_leaves_scale_dominated_layernorm_cells_unranked(report) -> None:
    excluded = report.exceeding_bounds()
    assert excluded  # the fixture's premise
    model = tiny_vit(0.2)
    config = plasticity_lora_config(report, budget=0.6, model=model)
    from hf_plasticity import resolve_components

    paths = resolve_components(model).paths
    dropped = {paths[c][layer] for c, layer, *_ in excluded}
    assert not dropped & set(config.modules_to_save)
    measured = plasticity_lora_config(report, budget=0.6, model=model, signal="measured")
    assert dropped & set(measured.modules_to_save)  # without the guard they rank and, cheap, are trained


def test_deterministic(report) -> None:
    first = plasticity_lora_config(report, budget=0.1, model=tiny_vit(0.2)).to_dict()
    second = plasticity_lora_config(report, budget=0.1, model=tiny_vit(0.2)).to_dict()
    assert first == second


def test_budget_too_small_for_any_rank_says_so(report) -> None:
    with pytest.raises(InvalidInputError, match="raise the budget"):
        plasticity_lora_config(report, budget=0.001, model=tiny_vit(0.2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"budget": 0}, "0 < budget <= 1", id="zero-budget"),
        pytest.param({"budget": 2.0}, "0 < budget <= 1", id="budget-above-one"),
        pytest.param({"signal": "loud"}, "signal", id="unknown-signal"),
        pytest.param({"model": None}, "needs model=", id="no-model"),
        pytest.param({"exponent": 0}, "exponent=0 must be a positive number", id="zero-exponent"),
        pytest.param({"exponent": float("nan")}, "must be a positive number", id="nan-exponent"),
    ],
)
def test_bad_arguments(report, kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        plasticity_lora_config(report, **{"model": tiny_vit(0.2), **kwargs})


def test_adapter_loads_with_plain_peft_in_a_fresh_process(report, tmp_path: Path) -> None:
    """The adapter is plain LoRA: a process that never imports hf_plasticity loads it and computes the same."""
    config = plasticity_lora_config(report, budget=0.2, model=tiny_vit(0.2))
    assert isinstance(config, LoraConfig)
    peft_model = get_peft_model(tiny_vit(0.2), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained-looking adapter: B = 0 would make any loader look right
    x = pixels(2, seed=3)
    with torch.no_grad():
        expected = peft_model(pixel_values=x).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from peft import PeftModel
        from transformers import ViTConfig, ViTForImageClassification
        torch.manual_seed(0)
        base = ViTForImageClassification(ViTConfig(**{json.dumps(_tiny_config())})).eval()
        emb = base.vit.embeddings
        with torch.no_grad():
            for p in (emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias, emb.cls_token):
                p.mul_(0.2)
            emb.position_embeddings.mul_(0.2)
        model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}).eval()
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            got = model(pixel_values=io["x"]).logits
        assert not any(m.startswith("hf_plasticity") for m in sys.modules), "hf_plasticity was imported"
        print(float((got - io["expected"]).abs().max()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5


def _tiny_config() -> dict:
    from tests.conftest import TINY

    return dict(TINY)
