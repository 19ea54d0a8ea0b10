"""Exports for people without hf_plasticity: a standard LoRA adapter, or the merged model, in process.

(Loading the exports in a process that never imports hf_plasticity, through the Hub, is in ``test_hub.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import ViTForImageClassification

from hf_plasticity import ExportError, PlasticityConfig, export_lora, export_merged
from tests.conftest import TINY_MODELS, pixels


def trained(**kwargs: object) -> PeftModel:
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(**kwargs))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        model(pixel_values=pixels(4, seed=1)).logits.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def test_lora_export_is_a_standard_lora_adapter(tmp_path: Path) -> None:
    model = trained(components=["mha", "ffn_norm"], mode="lora")
    export_lora(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert set(config["modules_to_save"]) >= {"classifier"}  # the head, trained in full
    assert any(m.endswith("layernorm_after") for m in config["modules_to_save"])  # the selected LayerNorm
    keys = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any(k.endswith("lora_A.weight") for k in keys) and any(k.endswith("lora_B.weight") for k in keys)


def test_lora_export_reloads_with_the_same_outputs(tmp_path: Path) -> None:
    model, x = trained(components=["mha"], mode="lora"), pixels(3, seed=5)
    export_lora(model, tmp_path)
    loaded = PeftModel.from_pretrained(TINY_MODELS["vit"](), tmp_path)
    assert isinstance(loaded.peft_config["default"], LoraConfig)
    torch.testing.assert_close(logits(loaded.eval(), x), logits(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"components": ["mha"]}, {"components": ["mha"], "keep_original": True}, {"components": ["mha"], "mode": "lora"}],
    ids=["full-in-place", "full-keep-original", "lora"],
)
def test_merged_export_is_a_plain_model_and_keeps_the_adapter(kwargs: dict, tmp_path: Path) -> None:
    model, x = trained(**kwargs), pixels(3, seed=5)
    before = logits(model, x)
    export_merged(model, tmp_path)
    plain = ViTForImageClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(plain, x), before, rtol=1e-5, atol=1e-6)
    assert isinstance(model, PeftModel) and torch.equal(logits(model, x), before)  # the adapter is still there


@pytest.mark.parametrize("export", [export_lora, export_merged], ids=["lora", "merged"])
def test_a_model_without_a_plasticity_adapter_is_refused(export, tmp_path: Path) -> None:
    plain_lora = get_peft_model(TINY_MODELS["vit"](), LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ExportError, match="no plasticity adapter named 'default'"):
        export(plain_lora, tmp_path / "out")
    assert not (tmp_path / "out").exists()
