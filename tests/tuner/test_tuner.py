"""The plasticity PEFT method: one matrix {in place, kept original} x {rules} x {architectures}, then behaviours and
errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn
from transformers import SwinConfig, SwinModel, Trainer, TrainingArguments

from hf_plasticity import (
    AdapterCombinationError,
    InPlaceAdapterError,
    InvalidInputError,
    PlasticityConfig,
    UnknownComponentError,
    UnsupportedModelError,
    load_adapter,
    measure_plasticity,
    resolve_components,
)
from tests.conftest import TINY_MODELS, pixels

SCORES = {"mha": 2.0, "ffn_fc1": 1.5, "ffn_fc2": 1.0, "ffn_norm": 0.5, "attn_norm": 0.1}
RULES = {
    "top_k": ({"top_k": 2}, {"mha", "ffn_fc1"}),
    "budget": ({"budget": 0.3}, None),
    "threshold": ({"scores": SCORES, "threshold": 1.2}, {"mha", "ffn_fc1"}),
    "explicit": ({"components": ["ffn_norm", "ffn_fc2"]}, {"ffn_norm", "ffn_fc2"}),
}


def first_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(pixel_values=x)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def train_step(model: nn.Module, x: torch.Tensor, lr: float = 0.05) -> None:
    """One Adam step: its normalised update moves every parameter whose gradient is not exactly zero."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    out = model(pixel_values=x)
    (out.logits if hasattr(out, "logits") else out.last_hidden_state).pow(2).mean().backward()
    opt.step()
    model.eval()


def owner(name: str) -> str:
    """The base-model module a PEFT parameter name belongs to."""
    name = name.removeprefix("base_model.model.")
    for marker in (".plasticity_modules.", ".modules_to_save."):
        if marker in name:
            return name.split(marker)[0]
    return name.rpartition(".")[0]  # a saved head weight: "classifier.weight" -> "classifier"


MODES = {  # in place (the default), and beside a kept original
    "full": {},
    "full+original": {"keep_original": True},
}


@pytest.mark.parametrize("arch", sorted(TINY_MODELS))
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_matrix(arch: str, rule: str, mode: str, tmp_path: Path) -> None:
    kwargs, expected_types = RULES[rule]
    base = TINY_MODELS[arch]()
    rc = resolve_components(base)
    heads = rc.head_paths()
    n_base = sum(p.numel() for p in base.parameters())
    n_heads = sum(p.numel() for h in heads for p in base.get_submodule(h).parameters())
    model = get_peft_model(base, PlasticityConfig(**MODES[mode], **kwargs))
    # parameters held: the base, PEFT's head copy, and a copy of the selection if kept
    n_selected = model.get_nb_trainable_parameters()[0] - n_heads
    copies = n_heads + (n_selected if mode == "full+original" else 0)
    assert sum(p.numel() for p in model.parameters()) == n_base + copies
    config = model.peft_config["default"]

    # trainable set: exactly the selected modules (through their adapter) and the head
    selected = set(config.selected_modules)
    types = {comp for layer, comp, path in rc.iter_modules() if path in selected}
    if expected_types is not None:
        assert types == expected_types
    else:  # budget: the most plastic modules that fit, head included
        trainable, _ = model.get_nb_trainable_parameters()
        assert 0 < trainable <= 0.3 * n_base
    assert config.modules_to_save == heads
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    owners = {owner(n) for n in trainable_names}
    for path in selected:
        assert any(o == path or o.startswith(path + ".") for o in owners), path
    for o in owners:
        assert o in heads or any(o == p or o.startswith(p + ".") for p in selected), o

    # only what is trainable moves
    x = pixels(6, seed=21)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(model, x)
    for n, p in model.named_parameters():
        moved = not torch.equal(before[n], p)
        if p.requires_grad:
            assert moved, n
        if not p.requires_grad:
            assert not moved, n

    # save only what was trained; restore exactly on a fresh base
    out = first_output(model, x)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert {owner(k) for k in saved} == owners
    assert sum(v.numel() for v in saved.values()) == model.get_nb_trainable_parameters()[0]
    loaded = PeftModel.from_pretrained(TINY_MODELS[arch](), tmp_path)
    assert torch.equal(first_output(loaded, x), out)

    # merge: a plain transformers model with the same outputs
    merged = loaded.merge_and_unload()
    assert type(merged) is type(base)
    assert not [n for n, _ in merged.named_modules() if "plasticity" in n]
    assert torch.equal(first_output(merged, x), out)


@pytest.mark.parametrize("layers", [None, [0, 2, 3, 4, 5, 6, 7]], ids=["all-layers", "seven-layers"])
def test_twenty_or_more_targets(layers: list[int] | None) -> None:
    """With 20+ targets PEFT shortens their names to suffixes: still exactly the selected modules adapt."""
    from transformers import ViTConfig, ViTForImageClassification

    from tests.conftest import TINY

    torch.manual_seed(0)
    base = ViTForImageClassification(ViTConfig(**{**TINY, "num_hidden_layers": 8}))
    model = get_peft_model(base, PlasticityConfig(top_k=3, layers=layers))
    selected = model.peft_config["default"].selected_modules
    expected_layers = set(range(8)) if layers is None else set(layers)
    assert len(selected) == 3 * len(expected_layers)
    adapted = {owner(n) for n, p in model.named_parameters() if p.requires_grad} - {"classifier"}
    assert {int(name.split(".")[2]) for name in adapted} == expected_layers
    assert all(any(a == s or a.startswith(s + ".") for s in selected) for a in adapted)
    assert not any("layernorm" in a for a in adapted)


def test_print_trainable_parameters_and_theory_default(tiny_vit: nn.Module, capsys) -> None:
    model = get_peft_model(tiny_vit, PlasticityConfig())
    config = model.peft_config["default"]
    assert config.rule == "top_k" and config.top_k == 1
    assert config.selected_modules == ["vit.layers.0.attention", "vit.layers.1.attention"]
    assert config.score_source.startswith("theory")
    attention = sum(p.numel() for p in tiny_vit.vit.layers[0].attention.base_layer.parameters())
    head = sum(p.numel() for p in tiny_vit.classifier.original_module.parameters())
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 2 * attention + head
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,} || all params: {total:,}" in capsys.readouterr().out


def test_selection_from_a_report_is_recorded_in_adapter_config(tiny_vit: nn.Module, tmp_path: Path) -> None:
    report = measure_plasticity(TINY_MODELS["vit"](), pixels(20, seed=3), progress=False)
    top = report.ranking()[0]
    # the raw measured ranking (the tiny random ViT's low-spread tokens would trip signal="auto"'s guard)
    model = get_peft_model(tiny_vit, PlasticityConfig.from_report(report, top_k=1, signal="measured"))
    rc = resolve_components(tiny_vit)
    assert set(model.peft_config["default"].selected_modules) == set(rc.paths[top])
    model.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "adapter_config.json").read_text())
    assert doc["peft_type"] == "PLASTICITY" and doc["score_source"] == "report"
    assert doc["scores"]["report"]["ranking"] == report.ranking()
    assert doc["scores"]["components"][top] == pytest.approx(report.stat(top).mean)
    config = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(config, PlasticityConfig) and config.selected_modules == doc["selected_modules"]


def test_budget_fills_by_per_module_plasticity(tiny_vit: nn.Module) -> None:
    report = measure_plasticity(TINY_MODELS["vit"](), pixels(20, seed=4), progress=False)
    ranked = report.ranked_modules()
    model = get_peft_model(tiny_vit, PlasticityConfig(scores=report, budget=0.4, signal="measured"))
    chosen = model.peft_config["default"].selected_modules
    assert chosen == [m for m in ranked if m in chosen]  # most plastic first, skipping what does not fit
    assert chosen[0] == next(m for m in ranked if m in chosen)


def test_report_path_and_layers(tiny_vit: nn.Module, tmp_path: Path) -> None:
    path = measure_plasticity(TINY_MODELS["vit"](), pixels(10), progress=False).save(tmp_path / "r.json")
    model = get_peft_model(tiny_vit, PlasticityConfig(scores=str(path), components=["mha"], layers=[1]))
    assert model.peft_config["default"].selected_modules == ["vit.layers.1.attention"]


def test_disable_adapter_runs_the_kept_original(tiny_vit: nn.Module) -> None:
    x = pixels(4, seed=5)
    reference = first_output(TINY_MODELS["vit"](), x)
    model = get_peft_model(tiny_vit, PlasticityConfig(components=["mha", "ffn_norm"], keep_original=True))
    train_step(model, x)
    assert not torch.allclose(first_output(model, x), reference)
    with model.disable_adapter():
        assert torch.equal(first_output(model, x), reference)
    assert not torch.allclose(first_output(model, x), reference)
    model.merge_adapter()
    with model.disable_adapter():  # unmerges first: still the original
        assert torch.equal(first_output(model, x), reference)


def test_in_place_trains_the_models_own_weights(tiny_vit: nn.Module, tmp_path: Path) -> None:
    x = pixels(4, seed=7)
    attention = tiny_vit.vit.layers[0].attention
    q_weight = attention.q_proj.weight
    model = get_peft_model(tiny_vit, PlasticityConfig(components=["mha"]))
    before = q_weight.detach().clone()
    train_step(model, x)
    assert not torch.equal(q_weight, before)  # the original tensor itself was trained: no copy exists
    assert model.base_model.model.vit.layers[0].attention.get_base_layer() is attention
    trained = first_output(model, x)

    # what needs the original weights says so, and changes nothing
    for action, call in [
        ("disable_adapter", lambda: model.disable_adapter().__enter__()),
        ("unload", model.unload),
        ("delete_adapter", lambda: model.delete_adapter("default")),
        ("adding adapter 'two'", lambda: model.add_adapter("two", PlasticityConfig(components=["mha"]))),
        ("adding adapter 'three'", lambda: model.add_adapter("three", PlasticityConfig(keep_original=True))),
    ]:
        with pytest.raises(InPlaceAdapterError, match=f"{action}.*keep_original=True"):
            call()
        assert list(model.peft_config) == ["default"]
        assert torch.equal(first_output(model, x), trained)
    assert model.get_model_status().enabled is True

    # merging is a no-op both ways, and merge_and_unload hands back the trained module itself
    model.merge_adapter()
    model.unmerge_adapter()
    assert torch.equal(first_output(model, x), trained)
    model.save_pretrained(tmp_path)
    merged = model.merge_and_unload()
    assert merged.vit.layers[0].attention is attention
    assert torch.equal(first_output(merged, x), trained)

    # the saved adapter is the same whichever way it is loaded: in place, or beside a kept original
    assert torch.equal(first_output(load_adapter(TINY_MODELS["vit"](), tmp_path), x), trained)
    config = PlasticityConfig.from_pretrained(tmp_path)
    config.keep_original = True
    kept = load_adapter(TINY_MODELS["vit"](), tmp_path, config=config)
    assert torch.equal(first_output(kept, x), trained)
    with kept.disable_adapter():
        assert torch.equal(first_output(kept, x), first_output(TINY_MODELS["vit"](), x))


@pytest.mark.parametrize("keep_original", [False, True])
@pytest.mark.parametrize("is_trainable", [False, True])
def test_low_cpu_mem_usage_loading(keep_original: bool, is_trainable: bool, tmp_path: Path) -> None:
    x = pixels(3, seed=8)
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["mha"], keep_original=keep_original))
    train_step(model, x)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(
        TINY_MODELS["vit"](), tmp_path, low_cpu_mem_usage=True, is_trainable=is_trainable
    )
    assert torch.equal(first_output(loaded, x), first_output(model, x))
    assert loaded.get_nb_trainable_parameters()[0] == (model.get_nb_trainable_parameters()[0] if is_trainable else 0)
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.merge_and_unload(adapter_names=["one", "two"]), "several plasticity adapters"),
        (lambda m: m.base_model.merge_adapter(["one", "two"]), "2 plasticity adapters at once"),
    ],
    ids=["merge_and_unload", "merge_adapter"],
)
def test_merging_two_adapters_is_refused(call: Any, match: str) -> None:
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["mha"], keep_original=True), "one")
    model.add_adapter("two", PlasticityConfig(components=["mha"], keep_original=True))
    with pytest.raises(AdapterCombinationError, match=match):
        call(model)


def test_several_adapters(tiny_vit: nn.Module) -> None:
    x = pixels(4, seed=6)
    keep = {"keep_original": True}
    model = get_peft_model(tiny_vit, PlasticityConfig(components=["mha"], **keep), adapter_name="one")
    train_step(model, x)
    out_a = first_output(model, x)
    model.add_adapter("two", PlasticityConfig(components=["mha", "ffn_fc2"], **keep))
    model.set_adapter("two")
    train_step(model, x)
    out_b = first_output(model, x)
    assert not torch.allclose(out_a, out_b)
    model.set_adapter("one")
    assert torch.equal(first_output(model, x), out_a)
    model.delete_adapter("two")
    assert torch.equal(first_output(model, x), out_a)
    model.add_adapter("two", PlasticityConfig(components=["mha", "ffn_fc2"], **keep))
    with pytest.raises(ValueError, match="Only one adapter can be set"):  # PEFT's own guard on the heads
        model.base_model.set_adapter(["one", "two"])
    bare = get_peft_model(
        TINY_MODELS["vit"](), PlasticityConfig(components=["mha"], modules_to_save=[], **keep), "one"
    )
    bare.add_adapter("two", PlasticityConfig(components=["mha"], modules_to_save=[], **keep))
    bare.base_model.set_adapter(["one", "two"])
    with pytest.raises(AdapterCombinationError, match="cannot be combined; activate one"):
        first_output(bare, x)
    with pytest.raises(InPlaceAdapterError, match="adding adapter 'four'"):
        model.add_adapter("four", PlasticityConfig(components=["mha"]))
    assert sorted(model.peft_config) == ["one", "two"]


def test_plain_trainer_moves_exactly_the_selected_parameters(tiny_vit: nn.Module, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    rows = [{"pixel_values": p, "labels": int(torch.randint(0, 3, (), generator=g))} for p in pixels(16, seed=7)]
    model = get_peft_model(tiny_vit, PlasticityConfig(top_k=1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=rows).train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved == trainable
    selected = ("vit.layers.0.attention", "vit.layers.1.attention", "classifier")
    assert {next(s for s in selected if owner(n) == s or owner(n).startswith(s + ".")) for n in moved} == set(selected)


# ------------------------------------------------------------------------------------- registration
def test_loading_needs_the_method_registered(tiny_vit: nn.Module, tmp_path: Path) -> None:
    get_peft_model(tiny_vit, PlasticityConfig()).save_pretrained(tmp_path)
    without = (
        "import sys; from peft import PeftConfig\n"
        f"try:\n    PeftConfig.from_pretrained({str(tmp_path)!r})\n"
        "except Exception as e:\n    print(type(e).__name__, e); sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True)
    assert done.returncode == 3 and "PLASTICITY" in done.stdout
    with_import = (
        "import importlib, hf_plasticity, hf_plasticity.tuner.peft_type as p, hf_plasticity.tuner.registration as r\n"
        "importlib.reload(p); importlib.reload(r); r.register(); hf_plasticity.tuner.register()\n"
        "from tests.conftest import TINY_MODELS\n"
        f"m = hf_plasticity.load_adapter(TINY_MODELS['vit'](), {str(tmp_path)!r})\n"
        "print(type(m).__name__, m.peft_config['default'].peft_type.value)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", with_import], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("PeftModel PLASTICITY")


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"budget": 0}, InvalidInputError, "0 < budget <= 1"),
        ({"budget": 1.5}, InvalidInputError, "0 < budget <= 1"),
        ({"top_k": 6}, InvalidInputError, "5 component types"),
        ({"top_k": 0}, InvalidInputError, "1 <= top_k"),
        ({"components": ["mlp"]}, UnknownComponentError, "attn_norm"),
        ({"top_k": 1, "budget": 0.5}, InvalidInputError, "one selection rule"),
        ({"scores": {"attention": 1.0}}, UnknownComponentError, "mha"),
        ({"mode": "qlora"}, InvalidInputError, "has no modes any more"),
        ({"layers": []}, InvalidInputError, "layer indices"),
    ],
)
def test_bad_configs(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PlasticityConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scores": SCORES, "threshold": 10.0}, r"threshold=10.0 \(scores range 0.1 .. 2\); lower"),
        ({"budget": 1e-4}, "head"),
        ({"budget": 0.12, "modules_to_save": []}, None),
        ({"layers": [5]}, r"the model has 2 layers \(0..1\)"),
    ],
)
def test_selections_that_match_nothing(tiny_vit: nn.Module, kwargs: dict, match: str | None) -> None:
    if match is None:  # a budget that fits something works; one that fits nothing says so
        get_peft_model(tiny_vit, PlasticityConfig(**kwargs))
        with pytest.raises(InvalidInputError, match="fits no module"):
            get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(budget=1e-3, modules_to_save=[]))
        return
    with pytest.raises(InvalidInputError, match=match):
        get_peft_model(tiny_vit, PlasticityConfig(**kwargs))


def test_model_without_component_map() -> None:
    swin = SwinModel(SwinConfig(embed_dim=8, depths=[1], num_heads=[2], image_size=16, patch_size=4, window_size=2))
    with pytest.raises(UnsupportedModelError, match="register_component_map"):
        get_peft_model(swin, PlasticityConfig())


def test_report_of_another_architecture(tiny_vit: nn.Module) -> None:
    report = measure_plasticity(TINY_MODELS["dinov2"](), pixels(10), progress=False)
    with pytest.raises(InvalidInputError, match="'dinov2' model but this is a 'vit' model"):
        get_peft_model(tiny_vit, PlasticityConfig(scores=report))


def test_adapter_on_the_wrong_base(tiny_vit: nn.Module, tmp_path: Path) -> None:
    get_peft_model(tiny_vit, PlasticityConfig()).save_pretrained(tmp_path)
    with pytest.raises(InvalidInputError, match="does not have"):
        load_adapter(TINY_MODELS["dinov2"](), tmp_path)


def test_push_to_hub_through_a_loopback_hub(tiny_vit: nn.Module, tmp_path: Path, hub) -> None:
    x = pixels(4, seed=8)
    model = get_peft_model(tiny_vit, PlasticityConfig(components=["mha", "ffn_fc1"]))
    train_step(model, x)
    model.push_to_hub("someone/vit-plasticity", commit_message="plasticity adapter")
    pushed = hub.repos["someone/vit-plasticity"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(pushed)
    assert [(c["repo"], c["summary"]) for c in hub.commits] == [("someone/vit-plasticity", "plasticity adapter")]
    config = json.loads(pushed["adapter_config.json"])
    assert config["peft_type"] == "PLASTICITY" and config["components"] == ["mha", "ffn_fc1"]
    for name, content in pushed.items():  # what reached the Hub loads back to the same model
        (tmp_path / name).write_bytes(content)
    loaded = load_adapter(TINY_MODELS["vit"](), tmp_path)
    assert torch.equal(first_output(loaded, x), first_output(model, x))


# ------------------------------------------------------------------------------------ saved-file format
@pytest.mark.parametrize("keep_original", [False, True], ids=["in-place", "kept-original"])
def test_adapter_of_the_first_format_still_loads(keep_original: bool, tmp_path: Path) -> None:
    """Files written before the adapter name left the keys (``plasticity_modules.task1.q_proj.weight``) load."""
    from safetensors.torch import save_file

    x = pixels(3, seed=9)
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["mha", "ffn_norm"]))
    train_step(model, x)
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    rc = resolve_components(TINY_MODELS["vit"]())
    selected = model.peft_config["default"].selected_modules
    old = {}
    for key, value in load_file(path).items():
        module = next((m for m in selected if key.startswith(f"base_model.model.{m}.")), None)
        if module is not None:  # the first format: the trained copy under the adapter's name
            key = key.replace(f"{module}.", f"{module}.plasticity_modules.task1.", 1)
        old[key] = value
    assert any(".plasticity_modules.task1." in k for k in old) and rc.num_layers == 2
    save_file(old, path)
    config = PlasticityConfig.from_pretrained(tmp_path)
    config.keep_original = keep_original
    loaded = load_adapter(TINY_MODELS["vit"](), tmp_path, adapter_name="other", config=config)
    assert torch.equal(first_output(loaded, x), first_output(model, x))


def test_budget_counts_the_base_models_own_parameters() -> None:
    """A second adapter with the same budget selects the same modules: the first one's copies are not counted."""
    keep = {"keep_original": True, "budget": 0.3}
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(**keep), adapter_name="one")
    model.add_adapter("two", PlasticityConfig(**keep))
    assert model.peft_config["two"].selected_modules == model.peft_config["one"].selected_modules


def test_transformers_loader_restores_an_in_place_adapter_with_a_layernorm(tmp_path: Path) -> None:
    """transformers' ``model.load_adapter`` sets each saved tensor by name, LayerNorm weights included."""
    x = pixels(3, seed=10)
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["ffn_norm", "ffn_fc1"]))
    train_step(model, x)
    model.save_pretrained(tmp_path)
    base = TINY_MODELS["vit"]()
    base.load_adapter(str(tmp_path))
    assert torch.equal(first_output(base, x), first_output(model, x))
