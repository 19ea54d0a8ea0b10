"""Make PEFT know the ``PLASTICITY`` method.

``peft.utils.register_peft_method`` wants a member of ``PeftType``, a closed ``str`` enum. We add the
member in place, the way the enum machinery itself stores members, and register only when PEFT does not
know the method yet: importing twice, reloading, or importing in every process of a distributed run is
harmless.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

NAME = "plasticity"


def _add_enum_member(enum_cls: type, name: str, value: str) -> object:
    existing = enum_cls.__members__.get(name)
    if existing is not None:
        return existing
    member = str.__new__(enum_cls, value)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = enum_cls  # type: ignore[attr-defined]
    member.__init__(value)
    enum_cls._member_map_[name] = member  # type: ignore[attr-defined]
    enum_cls._value2member_map_[value] = member  # type: ignore[attr-defined]
    enum_cls._member_names_.append(name)  # type: ignore[attr-defined]
    type.__setattr__(enum_cls, name, member)
    return member


PLASTICITY = _add_enum_member(PeftType, NAME.upper(), NAME.upper())


def ensure_peft_type() -> object:
    """The ``PeftType.PLASTICITY`` member (added if a reload of PEFT dropped it)."""
    return _add_enum_member(PeftType, NAME.upper(), NAME.upper())


def register() -> None:
    """Register config and tuner classes with PEFT, once per process."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    from .config import PlasticityConfig
    from .model import PlasticityModel

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
