"""PEFT's common behaviours, walked over both plasticity layouts with PEFT's own LoRA as the control row.

Re-expressed from the ideas of PEFT's testing_common.py / test_custom_models.py: if a PEFT upgrade changes one
of these behaviours, the control row shows whether PEFT changed or our tuner broke.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    inject_adapter_in_model,
)
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_base_model_state_dict, set_base_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from hf_plasticity import InPlaceAdapterError, PlasticityConfig
from tests.conftest import TINY_MODELS, pixels

CONFIGS = {  # in place, beside a kept original, and PEFT's LoRA as the control
    "full": lambda: PlasticityConfig(components=["mha", "ffn_norm"]),
    "full+original": lambda: PlasticityConfig(components=["mha", "ffn_norm"], keep_original=True),
    "peft-lora": lambda: LoraConfig(target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]),
}
ROWS = sorted(CONFIGS)
IN_PLACE = {"full"}  # what needs the original weights is refused here, with InPlaceAdapterError


def fresh() -> nn.Module:
    return TINY_MODELS["vit"]()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def trained(row: str, adapter_name: str = "default") -> nn.Module:
    """A PEFT model of the row after one Adam step, so its adapter differs from its initialisation."""
    model = get_peft_model(fresh(), CONFIGS[row](), adapter_name=adapter_name)
    step(model)
    return model


def step(model: nn.Module) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):  # two steps: LoRA's A factor only moves once B is non-zero
        model.train()
        model(pixel_values=pixels(4, seed=1)).logits.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()


X = pixels(3, seed=2)


@pytest.mark.parametrize("row", ROWS)
def test_save_load_round_trip(row: str, tmp_path: Path) -> None:
    model = trained(row)
    model.save_pretrained(tmp_path)
    assert torch.equal(logits(PeftModel.from_pretrained(fresh(), tmp_path), X), logits(model, X))


@pytest.mark.parametrize("row", ROWS)
def test_saved_keys_do_not_hold_the_adapter_name(row: str, tmp_path: Path) -> None:
    model = trained(row, adapter_name="task1")
    model.save_pretrained(tmp_path)
    keys = list(load_file(tmp_path / "task1" / "adapter_model.safetensors"))
    assert keys and not [k for k in keys if "task1" in k.split(".") or "default" in k.split(".")]


@pytest.mark.parametrize("row", ROWS)
def test_load_under_another_adapter_name(row: str, tmp_path: Path) -> None:
    model = trained(row, adapter_name="task1")
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing adapter keys.*")
        loaded = PeftModel.from_pretrained(fresh(), tmp_path / "task1", adapter_name="other")
    assert torch.equal(logits(loaded, X), logits(model, X))
    assert not torch.equal(logits(loaded, X), logits(fresh(), X))


@pytest.mark.parametrize("row", ROWS)
def test_base_model_state_dict_keeps_the_original_names(row: str) -> None:
    """Every original key survives, as itself or with PEFT's wrapper segment (``base_layer``, ``original_module``)."""
    model = trained(row)
    keys = set(model.get_base_model().state_dict())
    wrapper = {"base_layer", "original_module"}
    unwrapped = {".".join(p for p in k.split(".") if p not in wrapper) for k in keys}
    assert set(fresh().state_dict()) <= unwrapped
    if row in IN_PLACE:  # the trained weights are the model's own, under their own names
        assert "vit.layers.0.attention.k_proj.weight" in keys and "vit.layers.1.layernorm_after.weight" in keys


@pytest.mark.parametrize("row", ROWS)
def test_merge_and_unload_keeps_outputs(row: str) -> None:
    model = trained(row)
    expected = logits(model, X)
    merged = model.merge_and_unload()
    assert not [m for m in merged.modules() if isinstance(m, BaseTunerLayer)]
    torch.testing.assert_close(logits(merged, X), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("row", ROWS)
def test_merge_unmerge_and_status(row: str) -> None:
    model = trained(row)
    expected = logits(model, X)
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    model.merge_adapter()
    assert all(m.merged_adapters == ["default"] for m in layers)
    # the saved head is never merged, so PEFT reports the model as "irregular" (LoRA's control row too)
    assert model.get_model_status().merged_adapters == "irregular"
    torch.testing.assert_close(logits(model, X), expected, rtol=1e-4, atol=1e-5)
    model.unmerge_adapter()
    assert model.get_model_status().merged_adapters == []
    torch.testing.assert_close(logits(model, X), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("row", ROWS)
def test_model_and_layer_status(row: str) -> None:
    model = trained(row)
    status = model.get_model_status()
    assert status.available_adapters == ["default"] and status.active_adapters == ["default"]
    assert status.enabled is True and status.requires_grad == {"default": True}
    layers = model.get_layer_status()
    assert layers and all(s.available_adapters == ["default"] and s.merged_adapters == [] for s in layers)


@pytest.mark.parametrize("row", ROWS)
def test_print_trainable_parameters_counts(row: str, capsys) -> None:
    model = trained(row)
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,} || all params: {total:,}" in capsys.readouterr().out


@pytest.mark.parametrize("row", ROWS)
def test_inject_adapter_in_model_from_a_state_dict(row: str) -> None:
    config = CONFIGS[row]()
    injected = inject_adapter_in_model(copy.deepcopy(config), fresh())
    saved = get_peft_model_state_dict(injected)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # config and state_dict target the same modules
        again = inject_adapter_in_model(copy.deepcopy(config), fresh(), state_dict=saved)
    resaved = get_peft_model_state_dict(again)
    assert saved and resaved.keys() == saved.keys()
    assert all(resaved[k].shape == saved[k].shape for k in saved)


@pytest.mark.parametrize("row", ROWS)
def test_missing_adapter_keys_warn(row: str, tmp_path: Path) -> None:
    model = trained(row)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "adapter_model.safetensors")
    dropped = next(k for k in sorted(weights) if ".layers.1.attention." in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, tmp_path / "adapter_model.safetensors")
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        PeftModel.from_pretrained(fresh(), tmp_path)


@pytest.mark.parametrize("row", ROWS)
def test_disable_adapter(row: str) -> None:
    model = trained(row)
    if row in IN_PLACE:
        with pytest.raises(InPlaceAdapterError, match="keep_original=True"):
            model.disable_adapter().__enter__()
        return
    with model.disable_adapter():
        assert torch.equal(logits(model, X), logits(fresh(), X))
    assert not torch.equal(logits(model, X), logits(fresh(), X))


@pytest.mark.parametrize("row", ROWS)
def test_several_adapters(row: str) -> None:
    model = trained(row)
    first = logits(model, X)
    if row in IN_PLACE:
        with pytest.raises(InPlaceAdapterError, match="keep_original=True"):
            model.add_adapter("second", CONFIGS[row]())
        return
    model.add_adapter("second", CONFIGS[row]())
    model.set_adapter("second")
    assert torch.equal(logits(model, X), logits(fresh(), X))  # a new adapter starts at the base model
    step(model)
    assert not torch.equal(logits(model, X), logits(fresh(), X))
    model.set_adapter("default")
    assert torch.equal(logits(model, X), first)


@pytest.mark.parametrize("row", ROWS)
def test_layers_expose_in_and_out_features(row: str) -> None:
    layers = [m for m in trained(row).modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(isinstance(m.in_features, int) and isinstance(m.out_features, int) for m in layers)
    hidden = fresh().config.hidden_size
    assert all(m.in_features == hidden for m in layers)


@pytest.mark.parametrize("row", ROWS)
def test_training_moves_only_trainable_parameters(row: str) -> None:
    model = get_peft_model(fresh(), CONFIGS[row]())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(model)
    for name, p in model.named_parameters():
        assert torch.equal(before[name], p) != p.requires_grad, name


@pytest.mark.parametrize("row", ROWS)
def test_transformers_load_adapter(row: str, tmp_path: Path) -> None:
    """transformers' own PEFT integration (``model.load_adapter(dir)``) restores the trained model."""
    model = trained(row)
    model.save_pretrained(tmp_path)
    base = fresh()
    base.load_adapter(str(tmp_path))
    assert torch.equal(logits(base, X), logits(model, X))


# ------------------------------------------------------------------ base-model state dict (peft.utils)
BASE_ROWS = {
    **CONFIGS,
    "full-linear-and-norm": lambda: PlasticityConfig(components=["ffn_fc1", "attn_norm"]),  # leaf modules in place
}


@pytest.mark.parametrize("row", sorted(BASE_ROWS), ids=sorted(BASE_ROWS))
def test_base_model_state_dict_has_every_base_key(row: str) -> None:
    """``get_base_model_state_dict`` returns the plain model's keys, the selected (trained) modules included."""
    model = get_peft_model(fresh(), BASE_ROWS[row]())
    step(model)
    assert set(get_base_model_state_dict(model)) == set(fresh().state_dict())


@pytest.mark.parametrize("row", sorted(BASE_ROWS), ids=sorted(BASE_ROWS))
def test_base_model_state_dict_round_trips(row: str) -> None:
    """Save the base weights, train, set them back: every base key holds the saved value again."""
    model = get_peft_model(fresh(), BASE_ROWS[row]())
    saved = {k: v.detach().clone() for k, v in get_base_model_state_dict(model).items()}
    step(model)
    result = set_base_model_state_dict(model, saved)
    assert not result.missing_keys and not result.unexpected_keys
    restored = get_base_model_state_dict(model)
    assert restored.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(restored[key], value), key


def test_in_place_base_state_dict_is_the_trained_model() -> None:
    """In place the trained weights are the base weights: they are what the helper returns."""
    model = get_peft_model(fresh(), PlasticityConfig(components=["mha"]))
    step(model)
    base = get_base_model_state_dict(model)
    key = "vit.layers.0.attention.k_proj.weight"
    assert torch.equal(base[key], model.get_base_model().state_dict()[key])
    assert not torch.equal(base[key], fresh().state_dict()[key])  # trained, not the initial weights
