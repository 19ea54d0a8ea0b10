"""Register the ``PLASTICITY`` method's config and tuner classes with PEFT (see :mod:`.peft_type` for the
enum member PEFT needs first), and teach PEFT's base-model state-dict helpers about in-place adapters.
"""

from __future__ import annotations

from typing import Any

from ..compat import check_tuner_hooks, wrap_adapter_state_dict_key_prefixes
from .config import PlasticityConfig
from .layer import PlasticityLayer
from .model import PlasticityModel
from .peft_type import NAME, ensure_peft_type


def register() -> None:
    """Register config and tuner classes with PEFT, once per process."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    check_tuner_hooks(PlasticityModel)
    _count_in_place_weights_as_base()
    member = ensure_peft_type()
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is PlasticityConfig:
        return
    if member in PEFT_TYPE_TO_CONFIG_MAPPING:  # an older copy of our classes (e.g. after importlib.reload)
        _unregister(member)
    register_peft_method(
        name=NAME, config_cls=PlasticityConfig, model_cls=PlasticityModel, prefix=PlasticityModel.prefix
    )


def _unregister(member: Any) -> None:
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


def _count_in_place_weights_as_base() -> None:
    """Make ``peft.utils.get_base_model_state_dict``/``set_base_model_state_dict`` keep in-place trained weights.

    PEFT tells adapter keys from base keys structurally: every direct member of a tuner layer except its
    ``base_layer`` belongs to the adapter. An in-place layer is a view whose members *are* the module's own
    weights (that is how they train, save in the adapter file and keep their names), so they are adapter and
    base weights at once; PEFT's base helpers would drop them (``vit.layers.0.attention.k_proj.weight``, ...).
    Only those helpers read PEFT's adapter key prefixes; the wrapped version leaves in-place layers out, and
    every other model gets PEFT's answer unchanged.
    """

    def make(original: Any) -> Any:
        def adapter_prefixes(model: Any) -> set[str]:
            in_place = {
                name
                for name, module in model.base_model.model.named_modules()
                if isinstance(module, PlasticityLayer) and not module.keep_original
            }
            return {p for p in original(model) if p.rpartition(".")[0] not in in_place}

        return adapter_prefixes

    wrap_adapter_state_dict_key_prefixes(make)
