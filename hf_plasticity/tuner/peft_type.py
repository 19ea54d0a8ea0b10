"""Make PEFT know the ``PLASTICITY`` method.

``peft.utils.register_peft_method`` wants a member of ``PeftType``, a closed ``str`` enum. We add the
member in place, the way the enum machinery itself stores members, and register only when PEFT does not
know the method yet: importing twice, reloading, or importing in every process of a distributed run is
harmless.
"""

from __future__ import annotations

from typing import Any

from peft.utils.peft_types import PeftType

NAME = "plasticity"


def _add_enum_member(enum_cls: Any, name: str, value: str) -> Any:
    existing = enum_cls.__members__.get(name)
    if existing is not None:
        return existing
    member: Any = str.__new__(enum_cls, value)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = enum_cls
    member.__init__(value)
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[value] = member
    enum_cls._member_names_.append(name)
    type.__setattr__(enum_cls, name, member)
    return member


PLASTICITY = _add_enum_member(PeftType, NAME.upper(), NAME.upper())


def ensure_peft_type() -> Any:
    """The ``PeftType.PLASTICITY`` member (added if a reload of PEFT dropped it)."""
    return _add_enum_member(PeftType, NAME.upper(), NAME.upper())
