"""Register the ``PLASTICITY`` method's config and tuner classes with PEFT (see :mod:`.peft_type` for the
enum member PEFT needs first).
"""

from __future__ import annotations

from .config import PlasticityConfig
from .model import PlasticityModel
from .peft_type import NAME, ensure_peft_type


def register() -> None:
    """Register config and tuner classes with PEFT, once per process."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    member = ensure_peft_type()
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is PlasticityConfig:
        return
    if member in PEFT_TYPE_TO_CONFIG_MAPPING:  # an older copy of our classes (e.g. after importlib.reload)
        _unregister(member)
    register_peft_method(
        name=NAME, config_cls=PlasticityConfig, model_cls=PlasticityModel, prefix=PlasticityModel.prefix
    )


def _unregister(member: object) -> None:
    from peft.mapping import (
        PEFT_TYPE_TO_CONFIG_MAPPING,
        PEFT_TYPE_TO_MIXED_MODEL_MAPPING,
        PEFT_TYPE_TO_PREFIX_MAPPING,
        PEFT_TYPE_TO_TUNER_MAPPING,
    )

    for mapping in (
        PEFT_TYPE_TO_CONFIG_MAPPING,
        PEFT_TYPE_TO_TUNER_MAPPING,
        PEFT_TYPE_TO_MIXED_MODEL_MAPPING,
        PEFT_TYPE_TO_PREFIX_MAPPING,
    ):
        mapping.pop(member, None)
