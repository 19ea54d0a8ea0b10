"""The plasticity PEFT method: ``get_peft_model(model, PlasticityConfig(...))``.

Importing this package registers the method with PEFT (``PeftType.PLASTICITY``), after which PEFT's own
entry points (``get_peft_model``, ``PeftModel.from_pretrained``, ``PeftConfig.from_pretrained``, ...)
handle it like any built-in method.
"""

from __future__ import annotations

import os
from typing import Any

from .config import PlasticityConfig
from .layer import PlasticityLayer
from .model import PlasticityModel
from .registration import register
from .selection import Selection, select_modules

register()


def load_adapter(model: Any, path: str | os.PathLike[str], adapter_name: str = "default", **kwargs: Any) -> Any:
    """Load a saved plasticity adapter onto ``model``: ``PeftModel.from_pretrained`` with the method registered.

    A process that never imported ``hf_plasticity`` cannot read ``"peft_type": "PLASTICITY"`` (PEFT raises
    inside ``PeftConfig.from_pretrained``); this function guarantees the registration first.
    """
    from peft import PeftModel

    register()
    return PeftModel.from_pretrained(model, os.fspath(path), adapter_name=adapter_name, **kwargs)


__all__ = [
    "PlasticityConfig",
    "PlasticityLayer",
    "PlasticityModel",
    "Selection",
    "load_adapter",
    "select_modules",
]
