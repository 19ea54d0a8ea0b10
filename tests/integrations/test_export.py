"""Export for people without hf_plasticity: the merged model, in process.

(Loading the exports in a process that never imports hf_plasticity, through the Hub, is in ``test_hub.py``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import ViTForImageClassification

import hf_plasticity
from hf_plasticity import ExportError, PlasticityConfig, export_merged
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


@pytest.mark.parametrize(
    "kwargs",
    [{"components": ["mha"]}, {"components": ["mha"], "keep_original": True}],
    ids=["full-in-place", "full-keep-original"],
)
def test_merged_export_is_a_plain_model_and_keeps_the_adapter(kwargs: dict, tmp_path: Path) -> None:
    model, x = trained(**kwargs), pixels(3, seed=5)
    before = logits(model, x)
    export_merged(model, tmp_path)
    plain = ViTForImageClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(plain, x), before, rtol=1e-5, atol=1e-6)
    assert isinstance(model, PeftModel) and torch.equal(logits(model, x), before)  # the adapter is still there


def test_a_model_without_a_plasticity_adapter_is_refused_naming_peft_merge(tmp_path: Path) -> None:
    plain_lora = get_peft_model(TINY_MODELS["vit"](), LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ExportError, match=r"no plasticity adapter named 'default'.*merge_and_unload\(\)"):
        export_merged(plain_lora, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_lora_is_gone_with_mode_lora() -> None:
    """One LoRA implementation, PEFT's: its adapters need no export (``plasticity_lora_config`` makes them)."""
    assert "export_lora" not in hf_plasticity.__all__ and not hasattr(hf_plasticity, "export_lora")
