"""The plasticity PEFT method: ``get_peft_model(model, PlasticityConfig(...))``.

Importing this package registers the method with PEFT (``PeftType.PLASTICITY``), after which PEFT's own
entry points (``get_peft_model``, ``PeftModel.from_pretrained``, ``PeftConfig.from_pretrained``, ...)
handle it like any built-in method.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import AdapterLoadError
from .axolotl import DEFAULT_UNFROZEN_BUDGET, axolotl_unfrozen_parameters, write_axolotl_unfrozen_parameters
from .config import PlasticityConfig
from .layer import PlasticityLayer
from .lora_config import DEFAULT_LORA_BUDGET, allocate_ranks, plasticity_lora_config
from .model import PlasticityModel
from .registration import register
from .selection import Selection, select_modules
from .targets import find_gradient_target_modules, find_plasticity_target_modules, find_plasticity_trainable_modules

register()


def load_adapter(model: Any, path: str | os.PathLike[str], adapter_name: str = "default", **kwargs: Any) -> Any:
    """Load a saved plasticity adapter onto ``model``: ``PeftModel.from_pretrained`` with the method registered.

    A process that never imported ``hf_plasticity`` cannot read ``"peft_type": "PLASTICITY"`` (PEFT raises
    inside ``PeftConfig.from_pretrained``); this function guarantees the registration first. A local folder is
    checked before PEFT sees it, so a missing or corrupt file is named at once (PEFT would take the path for a
    Hub id and fail with an unrelated validation or network error).
    """
    from peft import PeftModel

    register()
    source = check_adapter_folder(path, subfolder=kwargs.get("subfolder"))
    try:
        return PeftModel.from_pretrained(model, source, adapter_name=adapter_name, **kwargs)
    except json.JSONDecodeError as error:  # a config PEFT read from the Hub cache
        raise AdapterLoadError(f"adapter_config.json of {source} is not valid JSON ({error}); re-save it") from error


def check_adapter_folder(path: str | os.PathLike[str], subfolder: str | None = None) -> str:
    """The adapter's location, after refusing a local folder that is absent, incomplete or corrupt (fast, offline).

    A name that is not on disk is taken for a Hub repo id only if it has that shape (``owner/name``) and its first
    part is not a local folder; anything else that looks like a path raises instead of going to the network.
    """
    source = os.fspath(path)
    folder = Path(source) / subfolder if subfolder else Path(source)
    if not folder.exists():
        looks_local = (
            folder.is_absolute()
            or source.startswith((".", "~"))
            or source.count("/") != 1
            or Path(source.split("/")[0]).is_dir()
        )
        if looks_local:
            raise AdapterLoadError(
                f"no adapter folder at {folder}: pass the directory that model.save_pretrained() wrote (it holds "
                "adapter_config.json and adapter_model.safetensors), or a Hub repo id 'owner/name'"
            )
        return source
    if not folder.is_dir():
        raise AdapterLoadError(f"{folder} is a file; pass the folder that holds adapter_config.json")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterLoadError(
            f"{folder} holds no adapter_config.json, so it is not a saved adapter; pass the directory that "
            "model.save_pretrained() wrote"
        )
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterLoadError(f"{config_file} is not valid JSON ({error}); re-save the adapter") from error
    weights = [folder / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (folder / n).is_file()]
    if not weights:
        raise AdapterLoadError(
            f"{folder} holds adapter_config.json but no adapter_model.safetensors (nor adapter_model.bin): the "
            "weights were not saved or not copied; save the adapter again with model.save_pretrained()"
        )
    if weights[0].suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights[0]), framework="pt") as handle:
                handle.keys()
        except Exception as error:  # safetensors raises its own (untyped) error for a damaged header
            raise AdapterLoadError(
                f"{weights[0]} is not a readable safetensors file ({error}); it is damaged or truncated: save or copy "
                "the adapter again"
            ) from error
    return source


__all__ = [
    "DEFAULT_LORA_BUDGET",
    "DEFAULT_UNFROZEN_BUDGET",
    "PlasticityConfig",
    "PlasticityLayer",
    "PlasticityModel",
    "Selection",
    "allocate_ranks",
    "axolotl_unfrozen_parameters",
    "check_adapter_folder",
    "find_gradient_target_modules",
    "find_plasticity_target_modules",
    "find_plasticity_trainable_modules",
    "load_adapter",
    "plasticity_lora_config",
    "select_modules",
    "write_axolotl_unfrozen_parameters",
]
