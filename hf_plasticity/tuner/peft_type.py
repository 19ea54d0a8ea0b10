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
