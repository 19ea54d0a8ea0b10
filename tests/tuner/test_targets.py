"""``find_plasticity_target_modules`` / ``find_plasticity_trainable_modules``, checked against their definition.

The definition (docs/selection.md): every block linear scores its (layer, component)'s measured mean; the
``top_p`` rule keeps ``max(1, floor(N * top_p))`` of the ``N`` scored (KappaTune's), ``num_modules`` keeps
that many, most plastic first, ties in model order; ``budget`` is ``plasticity_lora_config``'s allocation.
A block scores the mean over its components of ``P_c(layer) / mean over layers of P_c``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from hf_plasticity import (
    InvalidInputError,
    PlasticityReport,
    find_gradient_target_modules,
    find_plasticity_target_modules,
    find_plasticity_trainable_modules,
    measure_plasticity,
    plasticity_lora_config,
)
from tests.conftest import TINY, TINY_MODELS, pixels


@pytest.fixture(scope="module")
def report() -> PlasticityReport:
    return measure_plasticity(TINY_MODELS["vit"](), pixels(16, seed=7), progress=False)


def linear_scores(report: PlasticityReport, model: nn.Module) -> dict[str, float]:
    """Every linear under ``vit.layers.i`` with its component's measured mean for layer i, in model order."""
    column = {c: i for i, c in enumerate(report.components)}
    owner = {"attention": "mha", "fc1": "ffn_fc1", "fc2": "ffn_fc2"}
    out = {}
    for name, module in model.named_modules():
        m = re.fullmatch(r"vit\.layers\.(\d+)\.(?:attention\.\w+|mlp\.(fc1|fc2))", name)
        if m and isinstance(module, nn.Linear):
            comp = owner[m.group(2) or "attention"]
            out[name] = float(report.mean[int(m.group(1)), column[comp]])
    return out


def by_definition(scores: dict[str, float], count: int) -> list[str]:
    order = list(scores)
    return sorted(scores, key=lambda p: (-scores[p], order.index(p)))[:count]


@pytest.mark.parametrize("top_p", [0.01, 0.1, 0.25, 0.5, 0.99, 1.0])
def test_top_p_keeps_max_1_floor_n_p_of_the_most_plastic_linears(report, top_p: float) -> None:
    model = TINY_MODELS["vit"]()
    scores = linear_scores(report, model)
    assert len(scores) == 12  # 2 layers x (q, k, v, o, fc1, fc2)
    found = find_plasticity_target_modules(model, report, top_p=top_p)
    assert set(found) == {"target_modules"}
    count = max(1, math.floor(len(scores) * top_p))
    assert found["target_modules"] == by_definition(scores, count)
    values = [scores[p] for p in found["target_modules"]]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("num_modules", [1, 5, 12, 40])
def test_num_modules_keeps_that_many_at_most_all(report, num_modules: int) -> None:
    model = TINY_MODELS["vit"]()
    scores = linear_scores(report, model)
    found = find_plasticity_target_modules(model, report, num_modules=num_modules)
    assert found["target_modules"] == by_definition(scores, min(num_modules, len(scores)))


def test_budget_gives_plasticity_lora_configs_ranks_and_fits(report) -> None:
    model = TINY_MODELS["vit"]()
    found = find_plasticity_target_modules(model, report, budget=0.2)
    reference = plasticity_lora_config(report, budget=0.2, model=TINY_MODELS["vit"]())
    assert found["rank_pattern"] == reference.rank_pattern
    assert sorted(found["target_modules"]) == sorted(reference.target_modules)
    peft_model = get_peft_model(TINY_MODELS["vit"](), LoraConfig(**found))
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) <= 0.2 * total
    for path, rank in found["rank_pattern"].items():
        assert peft_model.get_submodule(f"base_model.model.{path}").lora_A["default"].out_features == rank


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"top_p": 0.2, "num_modules": 2}, {"top_p": 0.0}, {"top_p": 1.5}, {"num_modules": 0}, {"budget": 2.0}],
)
def test_bad_rules_raise_naming_the_options(report, kwargs) -> None:
    with pytest.raises(InvalidInputError, match=r"top_p|num_modules|budget"):
        find_plasticity_target_modules(TINY_MODELS["vit"](), report, **kwargs)


def test_trainable_blocks_follow_the_relative_block_score(report) -> None:
    model = TINY_MODELS["vit"]()
    guarded = {(c, layer) for c, layer, *_ in report.exceeding_bounds()}
    ratios: dict[int, list[float]] = {0: [], 1: []}
    for ci, comp in enumerate(report.components):
        kept = [layer for layer in range(2) if (comp, layer) not in guarded]
        mean = sum(float(report.mean[layer, ci]) for layer in kept) / len(kept) if kept else 0.0
        for layer in kept:
            ratios[layer].append(float(report.mean[layer, ci]) / mean)
    block = {f"vit.layers.{layer}": sum(v) / len(v) for layer, v in ratios.items()}
    found = find_plasticity_trainable_modules(model, report, num_modules=1, blocks=True)
    assert found["modules"] == by_definition(block, 1)
    assert found["heads"] == ["classifier"]
    chosen = found["modules"][0]
    trained = [n for n, _ in model.named_parameters() if re.fullmatch(found["pattern"], n)]
    expected = [n for n, _ in model.named_parameters() if n.startswith((chosen + ".", "classifier."))]
    assert trained == expected


def test_trainable_modules_top_p_counts_layer_component_cells(report) -> None:
    model = TINY_MODELS["vit"]()
    found = find_plasticity_trainable_modules(model, report, top_p=0.5)
    cells = 2 * len(report.components) - len(report.exceeding_bounds())
    assert len(found["modules"]) == max(1, math.floor(cells * 0.5))
    for module in found["modules"]:
        assert any(
            n.startswith(module + ".") and re.fullmatch(found["pattern"], n) for n, _ in model.named_parameters()
        )


def test_lora_targets_load_as_a_plain_peft_adapter_in_a_fresh_process(report, tmp_path: Path) -> None:
    """The dict goes into PEFT's LoraConfig; a process that never imports hf_plasticity loads the adapter."""
    found = find_plasticity_target_modules(TINY_MODELS["vit"](), report, top_p=0.25)
    (tmp_path / "lora.json").write_text(json.dumps(found))
    peft_model = get_peft_model(TINY_MODELS["vit"](), LoraConfig(**found, r=4, lora_alpha=4))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    x = pixels(2, seed=3)
    with torch.no_grad():
        expected = peft_model(pixel_values=x).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        from peft import LoraConfig, PeftModel
        from transformers import ViTConfig, ViTForImageClassification
        torch.manual_seed(0)
        config = LoraConfig(**json.load(open({str(tmp_path / "lora.json")!r})), r=4, lora_alpha=4)
        base = ViTForImageClassification(ViTConfig(**{json.dumps(dict(TINY))})).eval()
        model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}).eval()
        assert sorted(model.peft_config["default"].target_modules) == sorted(config.target_modules)
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


# --------------------------------------------------------------------------------------------- gradient norms
def labelled_batches(n: int = 2, size: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [
        {
            "pixel_values": pixels(size, seed=20 + i),
            "labels": torch.randint(0, TINY["num_labels"], (size,), generator=g),
        }
        for i in range(n)
    ]


def gradient_norms_by_definition(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean over batches of ||dL/dW||_F for every nn.Linear under vit.layers, L the model's own loss."""
    names = [n for n, m in model.named_modules() if n.startswith("vit.layers.") and isinstance(m, nn.Linear)]
    weights = [model.get_submodule(n).weight for n in names]
    sums = dict.fromkeys(names, 0.0)
    for batch in batches:
        grads = torch.autograd.grad(model(**batch).loss, weights)
        for n, grad in zip(names, grads, strict=True):
            sums[n] += float(grad.norm())
    return {n: v / len(batches) for n, v in sums.items()}


@pytest.mark.parametrize(("top_p", "num_modules"), [(0.25, None), (1.0, None), (None, 5)])
def test_gradient_targets_rank_linears_by_mean_gradient_norm(top_p, num_modules) -> None:
    model = TINY_MODELS["vit"]().eval()
    batches = labelled_batches()
    scores = gradient_norms_by_definition(model, batches)
    assert len(scores) == 12
    found = find_gradient_target_modules(model, batches, top_p=top_p, num_modules=num_modules)
    count = num_modules if num_modules is not None else max(1, math.floor(12 * top_p))
    assert found == {"target_modules": by_definition(scores, count)}
    peft_model = get_peft_model(model, LoraConfig(**found, r=2))
    assert sum("lora_A" in n for n, _ in peft_model.named_parameters()) == count


def test_gradient_targets_leave_flags_and_gradients_as_they_were() -> None:
    model = TINY_MODELS["vit"]().eval()
    frozen = "vit.layers.0.attention.q_proj.weight"
    params = dict(model.named_parameters())
    params[frozen].requires_grad_(False)
    marker = torch.full_like(params["classifier.weight"], 3.0)
    params["classifier.weight"].grad = marker
    find_gradient_target_modules(model, labelled_batches(1), num_modules=1)
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == [frozen]
    assert params["classifier.weight"].grad is marker
    assert all(p.grad is None for n, p in model.named_parameters() if n != "classifier.weight")


@pytest.mark.parametrize(
    ("batches", "match"),
    [
        ([], "batches is empty"),
        ([{"pixel_values": pixels(2)}], "no loss"),
        ([pixels(2)], "dict of the model's inputs"),
    ],
)
def test_gradient_targets_refuse_unlabelled_or_missing_batches(batches, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        find_gradient_target_modules(TINY_MODELS["vit"](), batches, top_p=0.25)


def test_gradient_norms_name_a_parameter_the_model_lacks() -> None:
    from hf_plasticity.tuner.targets import gradient_norms

    with pytest.raises(InvalidInputError, match="no parameters"):
        gradient_norms(TINY_MODELS["vit"](), labelled_batches(1), ["vit.layers.9.mlp.fc1.weight"])
