"""Export a plasticity model to what people without hf_plasticity load: the merged model.

A ``PLASTICITY`` adapter needs ``import hf_plasticity`` to load (PEFT does not know the method); merged into
the base model, it is a plain checkpoint ``transformers`` loads. A LoRA adapter needs no export: the one LoRA
implementation is PEFT's (``hf_plasticity.plasticity_lora_config`` returns a ``peft.LoraConfig``), so its
adapters already load with plain ``peft``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ..errors import ExportError, InvalidInputError
from .cards import plasticity_config_of


def export_merged(
    model: Any, save_directory: str | os.PathLike[str], image_processor: Any = None, adapter_name: str = "default"
) -> Path:
    """Write the model with the plasticity adapter merged in: a plain checkpoint ``transformers`` loads.

    Works on a copy: the PEFT model you pass keeps its adapter (a copy of the model is held meanwhile).
    """
    if plasticity_config_of(model, adapter_name) is None:
        raise ExportError(
            f"the model has no plasticity adapter named {adapter_name!r} to merge; a PEFT LoRA adapter (e.g. from "
            "hf_plasticity.plasticity_lora_config) merges with PEFT's own model.merge_and_unload()"
        )
    try:
        merged = copy.deepcopy(model).merge_and_unload(adapter_names=[adapter_name])
    except ValueError as exc:
        raise InvalidInputError(f"cannot merge the adapter: {exc}") from exc
    out = Path(save_directory)
    merged.save_pretrained(str(out))
    if image_processor is not None:
        image_processor.save_pretrained(str(out))
    return out
