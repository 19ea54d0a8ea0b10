"""Export a plasticity model to what people without hf_plasticity load: the merged model.

A ``PLASTICITY`` adapter needs ``import hf_plasticity`` to load (PEFT does not know the method); merged into
the base model, it is a plain checkpoint ``transformers`` loads. A LoRA adapter needs no export: the one LoRA
implementation is PEFT's (``hf_plasticity.plasticity_lora_config`` returns a ``peft.LoraConfig``), so its
adapters already load with plain ``peft``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ExportError, InvalidInputError
from .cards import plasticity_config_of


def export_merged(
    model: Any,
    save_directory: str | os.PathLike[str],
    image_processor: Any = None,
    adapter_name: str = "default",
    *,
    tokenizer: Any = None,
    card: bool = True,
) -> Path:
    """Write the model with the plasticity adapter merged in: a checkpoint ``transformers.pipeline`` serves.

    Besides the weights and config, the folder gets what the base model reads its inputs with (the image
    processor or tokenizer passed, else the one saved with the base model, found from its ``name_or_path``)
    and, with ``card``, a ``README.md`` model card (the ranking, what was trained, the base model). Everything
    is written to a temporary folder beside ``save_directory`` and moved into place, so a failure leaves no
    half-written export. Works on a copy: the PEFT model you pass keeps its adapter.
    """
    if plasticity_config_of(model, adapter_name) is None:
        raise ExportError(
            f"the model has no plasticity adapter named {adapter_name!r} to merge; a PEFT LoRA adapter (e.g. from "
            "hf_plasticity.plasticity_lora_config) merges with PEFT's own model.merge_and_unload()"
        )
    out = Path(save_directory).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{str(out)!r} is a file; pass a folder to export the merged model to")
    try:
        merged = copy.deepcopy(model).merge_and_unload(adapter_names=[adapter_name])
    except ValueError as exc:
        raise InvalidInputError(f"cannot merge the adapter: {exc}") from exc
    takes_tokens = getattr(merged, "main_input_name", "pixel_values") == "input_ids"
    preprocessor = tokenizer if takes_tokens else image_processor
    if preprocessor is None:
        preprocessor = _base_preprocessor(merged, takes_tokens)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        merged.save_pretrained(str(staging))
        if preprocessor is not None:
            preprocessor.save_pretrained(str(staging))
        if card:
            from .cards import build_model_card, write_model_card

            task = "text-generation" if takes_tokens else "image-classification"
            write_model_card(build_model_card(model, pipeline_tag=task, adapter_name=adapter_name), staging)
        if not out.exists():
            os.replace(staging, out)
        else:  # an existing folder: each file replaced in one step, the user's other files kept
            for item in staging.iterdir():
                os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _base_preprocessor(model: Any, takes_tokens: bool) -> Any:
    """The base model's own image processor or tokenizer, from where it was loaded (None if it has none)."""
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or getattr(model, "name_or_path", "")
    if not name:
        return None
    from transformers import AutoImageProcessor, AutoTokenizer

    loader = AutoTokenizer if takes_tokens else AutoImageProcessor
    try:
        return loader.from_pretrained(name, local_files_only=True)  # a local folder or the Hub cache, never a download
    except (OSError, ValueError, KeyError, TypeError):
        return None
