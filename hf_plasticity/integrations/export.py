"""Export a plasticity model to what people without hf_plasticity load: a LoRA adapter or the merged model.

A ``PLASTICITY`` adapter needs ``import hf_plasticity`` to load (PEFT does not know the method). Mode
``lora`` is LoRA in the selected linear layers plus a few modules trained in full, which is exactly what a
standard ``LoraConfig`` with ``modules_to_save`` describes, so it exports to an adapter plain ``peft``
loads. Any mode exports to the merged model, which plain ``transformers`` loads.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ..errors import ExportError, InvalidInputError
from .cards import plasticity_config_of


def export_lora(model: Any, save_directory: str | os.PathLike[str], adapter_name: str = "default") -> Path:
    """Write a mode-lora plasticity adapter as a standard PEFT LoRA adapter (``LoraConfig``).

    The LoRA factors keep their module names; the modules trained in full (the head, a selected
    LayerNorm) become ``modules_to_save``. ``PeftModel.from_pretrained(base, save_directory)`` in a
    process without hf_plasticity then gives the same outputs.
    """
    from peft import LoraConfig
    from peft.tuners.lora.layer import LoraLayer
    from safetensors.torch import save_file

    from ..tuner.layer import PlasticityLayer

    config = plasticity_config_of(model, adapter_name)
    if config is None:
        raise ExportError(f"the model has no plasticity adapter named {adapter_name!r} to export")
    if config.mode != "lora":
        raise ExportError(
            f"a mode={config.mode!r} plasticity adapter trains whole modules, which is no LoRA adapter; export the "
            "merged model instead: hf_plasticity.export_merged(model, path)"
        )
    base = model.get_base_model()
    tensors: dict[str, Any] = {}
    lora_targets: list[str] = []
    full: list[str] = []
    for path, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            lora_targets.append(path)
            tensors[f"base_model.model.{path}.lora_A.weight"] = module.lora_A[adapter_name].weight
            tensors[f"base_model.model.{path}.lora_B.weight"] = module.lora_B[adapter_name].weight
        elif isinstance(module, PlasticityLayer) and adapter_name in module.plasticity_modules:
            full.append(path)
            _add_full(tensors, path, module.plasticity_modules[adapter_name])
        elif hasattr(module, "modules_to_save") and adapter_name in getattr(module, "modules_to_save", {}):
            full.append(path)
            _add_full(tensors, path, module.modules_to_save[adapter_name])
    if not lora_targets:
        raise ExportError("the adapter has no LoRA layer to export; was it created with mode='lora'?")
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets,
        # GPT-2's Conv1D layers store weights in x out; PEFT's LoRA needs to know (one flag for all targets)
        fan_in_fan_out=any(getattr(base.get_submodule(p), "fan_in_fan_out", False) for p in lora_targets),
        modules_to_save=full or None,
        base_model_name_or_path=config.base_model_name_or_path,
        inference_mode=True,
    )
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    lora.save_pretrained(str(out))
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out


def export_merged(
    model: Any, save_directory: str | os.PathLike[str], image_processor: Any = None, adapter_name: str = "default"
) -> Path:
    """Write the model with the plasticity adapter merged in: a plain checkpoint ``transformers`` loads.

    Works on a copy: the PEFT model you pass keeps its adapter (a copy of the model is held meanwhile).
    """
    if plasticity_config_of(model, adapter_name) is None:
        raise ExportError(f"the model has no plasticity adapter named {adapter_name!r} to merge")
    try:
        merged = copy.deepcopy(model).merge_and_unload(adapter_names=[adapter_name])
    except ValueError as exc:
        raise InvalidInputError(f"cannot merge the adapter: {exc}") from exc
    out = Path(save_directory)
    merged.save_pretrained(str(out))
    if image_processor is not None:
        image_processor.save_pretrained(str(out))
    return out


def _add_full(tensors: dict[str, Any], path: str, module: Any) -> None:
    for name, tensor in module.state_dict().items():
        tensors[f"base_model.model.{path}.{name}"] = tensor
