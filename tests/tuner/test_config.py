"""``PlasticityConfig`` without modes: ``mode="lora"`` raises, naming PEFT's LoRA; saved configs of earlier versions.

hf_plasticity has one LoRA implementation, PEFT's (``plasticity_lora_config`` returns a ``peft.LoraConfig``).
Earlier versions saved ``mode``, ``r``, ``lora_alpha`` and ``lora_dropout`` in every ``adapter_config.json``; in
mode ``full`` the LoRA keys had no effect, so such a file still loads. A saved mode-``lora`` adapter cannot: it
raises the same typed error. In code, ``mode="full"`` still works with a ``FutureWarning`` (it is what the config
always does); ``mode="lora"`` and the LoRA settings raise ``InvalidInputError``, not a bare ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from torch import nn

from hf_plasticity import InvalidInputError, PlasticityConfig, load_adapter
from tests.conftest import TINY_MODELS, pixels

REPLACEMENT = r"hf_plasticity\.plasticity_lora_config\(report, budget=\.\.\., model=\.\.\.\)"
X = pixels(3, seed=4)
LEGACY_KEYS = {"mode": "full", "r": 16, "lora_alpha": 32, "lora_dropout": 0.1}  # what an earlier version wrote


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=X).logits


def trained_adapter(folder: Path, **extra_config: Any) -> nn.Module:
    """A mode-full adapter after one Adam step, saved to ``folder``, its config then given ``extra_config``."""
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["mha", "ffn_norm"]))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model(pixel_values=pixels(4, seed=1)).logits.pow(2).mean().backward()
    opt.step()
    model.eval()
    model.save_pretrained(folder)
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **extra_config}))
    return model


def saved_lora_adapter(folder: Path) -> Path:
    """What ``PlasticityConfig(mode="lora")`` saved: the mode, its LoRA settings, LoRA factors on the linears."""
    trained_adapter(folder, **{**LEGACY_KEYS, "mode": "lora"})
    base = TINY_MODELS["vit"]()
    config = json.loads((folder / "adapter_config.json").read_text())
    linears = [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and ".attention." in n]
    config["target_modules"] = linears
    (folder / "adapter_config.json").write_text(json.dumps(config))
    factors = {}
    for name in linears:
        layer = base.get_submodule(name)
        factors[f"base_model.model.{name}.lora_A.weight"] = torch.zeros(16, layer.in_features)
        factors[f"base_model.model.{name}.lora_B.weight"] = torch.zeros(layer.out_features, 16)
    save_file(factors, str(folder / "adapter_model.safetensors"))
    return folder


# ------------------------------------------------------------------------------------- mode="lora" raises
LORA_CONFIGS: dict[str, Callable[[], Any]] = {
    "default-rule": lambda: PlasticityConfig(mode="lora"),
    "components": lambda: PlasticityConfig(components=["mha"], mode="lora"),
    "budget": lambda: PlasticityConfig(budget=0.3, mode="lora"),
    "from-report-scores": lambda: PlasticityConfig.from_report(_report(), mode="lora"),
    "with-lora-settings": lambda: PlasticityConfig(mode="lora", r=8),
    "lora-settings-alone": lambda: PlasticityConfig(r=8, lora_alpha=16),
}


def _report() -> Any:
    from hf_plasticity import measure_plasticity

    return measure_plasticity(TINY_MODELS["vit"](), pixels(8, seed=3), num_pairs=4, progress=False)


@pytest.mark.parametrize("make", LORA_CONFIGS.values(), ids=LORA_CONFIGS.keys())
def test_lora_mode_raises_naming_plasticity_lora_config(make: Callable[[], Any]) -> None:
    with pytest.raises(InvalidInputError, match=REPLACEMENT):
        make()


def test_lora_mode_error_names_peft_lora_config_for_a_fixed_rank() -> None:
    with pytest.raises(InvalidInputError, match=r"peft's own LoraConfig\(target_modules=\.\.\.\)"):
        PlasticityConfig(mode="lora")


def test_lora_only_settings_and_mode_are_no_longer_fields() -> None:
    assert not {"mode", "r", "lora_alpha", "lora_dropout"} & set(PlasticityConfig().to_dict())
    assert "mode" not in {f.name for f in dataclasses.fields(PlasticityConfig)}


def test_mode_full_in_code_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(FutureWarning, match="drop the argument"):
        config = PlasticityConfig(mode="full", components=["mha"])
    assert config.components == ["mha"] and config.rule == "components" and not hasattr(config, "mode")
    assert config.to_dict() == PlasticityConfig(components=["mha"]).to_dict()


def test_unknown_mode_in_code_names_the_fix() -> None:
    with pytest.raises(InvalidInputError, match=r"no modes any more.*drop the argument"):
        PlasticityConfig(mode="qlora")


# ------------------------------------------------------------------- old mode-full configs with LoRA keys
MODEL_LOADERS: dict[str, Callable[[nn.Module, Path], nn.Module]] = {
    "PeftModel.from_pretrained": lambda base, path: PeftModel.from_pretrained(base, path),
    "hf_plasticity.load_adapter": lambda base, path: load_adapter(base, path),
    "transformers-load_adapter": lambda base, path: (base.load_adapter(str(path)), base)[1],
}
CONFIG_LOADERS: dict[str, Callable[[Path], Any]] = {
    "PeftConfig.from_pretrained": PeftConfig.from_pretrained,
    "PlasticityConfig.from_pretrained": PlasticityConfig.from_pretrained,
}


@pytest.mark.parametrize("load", MODEL_LOADERS.values(), ids=MODEL_LOADERS.keys())
def test_old_full_adapter_with_lora_keys_loads_the_trained_model(load: Callable, tmp_path: Path) -> None:
    model = trained_adapter(tmp_path, **LEGACY_KEYS)
    assert torch.equal(logits(load(TINY_MODELS["vit"](), tmp_path)), logits(model))


@pytest.mark.parametrize("load", CONFIG_LOADERS.values(), ids=CONFIG_LOADERS.keys())
def test_old_full_config_with_lora_keys_loads_without_them(load: Callable, tmp_path: Path) -> None:
    model = trained_adapter(tmp_path, **LEGACY_KEYS)
    config = load(tmp_path)
    assert isinstance(config, PlasticityConfig) and not hasattr(config, "mode")
    assert config.selected_modules == model.peft_config["default"].selected_modules
    assert not any(hasattr(config, key) for key in LEGACY_KEYS)


OLD_CONFIG_FILE = """{
  "base_model_name_or_path": null,
  "budget": null,
  "components": ["mha", "ffn_norm"],
  "inference_mode": true,
  "keep_original": false,
  "layers": null,
  "lora_alpha": 16,
  "lora_dropout": 0.0,
  "mode": "full",
  "modules_to_save": ["classifier"],
  "peft_type": "PLASTICITY",
  "r": 8,
  "revision": null,
  "score_source": "theory (Odonnat et al., 2026)",
  "scores": {"components": {"attn_norm": 1.0, "ffn_fc1": 4.0, "ffn_fc2": 3.0, "ffn_norm": 2.0, "mha": 5.0},
             "modules": {}},
  "selected_modules": ["vit.layers.0.attention", "vit.layers.1.attention",
                       "vit.layers.0.layernorm_after", "vit.layers.1.layernorm_after"],
  "signal": "auto",
  "target_modules": ["vit.layers.0.attention", "vit.layers.1.attention",
                     "vit.layers.0.layernorm_after", "vit.layers.1.layernorm_after"],
  "task_type": null,
  "threshold": null,
  "top_k": null
}"""
"""An ``adapter_config.json`` as an earlier version wrote it, by hand: ``mode`` and the LoRA keys of mode 'lora'."""


@pytest.mark.parametrize("load", MODEL_LOADERS.values(), ids=MODEL_LOADERS.keys())
def test_old_style_config_file_loads_the_trained_weights(load: Callable, tmp_path: Path) -> None:
    model = trained_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(OLD_CONFIG_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a saved file is not the user's code: no deprecation
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        loaded = load(TINY_MODELS["vit"](), tmp_path)
    assert torch.equal(logits(loaded), logits(model))
    config = PlasticityConfig.from_pretrained(str(tmp_path))
    assert not any(hasattr(config, key) for key in ("mode", "r", "lora_alpha", "lora_dropout"))
    assert (
        config.components == ["mha", "ffn_norm"]
        and config.selected_modules == json.loads(OLD_CONFIG_FILE)["selected_modules"]
    )


WARNING_FREE = {
    "PlasticityConfig.from_pretrained": lambda path: PlasticityConfig.from_pretrained(path),
    "PeftModel.from_pretrained": lambda path: PeftModel.from_pretrained(TINY_MODELS["vit"](), path),
    "hf_plasticity.load_adapter": lambda path: load_adapter(TINY_MODELS["vit"](), path),
    "PeftConfig.from_pretrained": lambda path: PeftConfig.from_pretrained(path),
}


@pytest.mark.parametrize("load", WARNING_FREE.values(), ids=WARNING_FREE.keys())
def test_old_lora_keys_raise_no_newer_version_warning(load: Callable, tmp_path: Path) -> None:
    """PEFT would take the keys for a newer version's and advise upgrading it; they are an older version's."""
    trained_adapter(tmp_path, **LEGACY_KEYS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(tmp_path)
    assert not [w for w in caught if "Unexpected keyword arguments" in str(w.message)]


# ------------------------------------------------------------------------- a saved mode-lora adapter raises
LORA_LOADERS: dict[str, Callable[[Path], Any]] = {
    **{name: (lambda path, load=load: load(TINY_MODELS["vit"](), path)) for name, load in MODEL_LOADERS.items()},
    **CONFIG_LOADERS,
    "transformers-from_pretrained-adapter-folder": lambda path: _from_adapter_folder(path),
}


def _from_adapter_folder(path: Path) -> nn.Module:
    """``AutoModel...from_pretrained(<adapter folder>)``: transformers loads the base it names, then the adapter."""
    from transformers import AutoModelForImageClassification

    base = path.with_name(path.name + "-base")
    TINY_MODELS["vit"]().save_pretrained(base)
    config = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    return AutoModelForImageClassification.from_pretrained(str(path))


@pytest.mark.parametrize("load", LORA_LOADERS.values(), ids=LORA_LOADERS.keys())
def test_saved_lora_adapter_raises_naming_plasticity_lora_config(load: Callable, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=REPLACEMENT):
        load(saved_lora_adapter(tmp_path))


@pytest.mark.parametrize("load", WARNING_FREE.values(), ids=WARNING_FREE.keys())
def test_saved_lora_adapter_error_says_to_retrain(load: Callable, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"saved with PlasticityConfig\(mode='lora'\).*Retrain it"):
        load(saved_lora_adapter(tmp_path))
