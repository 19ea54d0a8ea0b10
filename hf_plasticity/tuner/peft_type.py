"""Make PEFT know the ``PLASTICITY`` method.

``peft.utils.register_peft_method`` wants a member of ``PeftType``, a closed ``str`` enum, so the member is
added to it (through :func:`hf_plasticity.compat.add_enum_member`, the one place that touches enum internals),
and only when PEFT does not know the method yet: importing twice, reloading, or importing in every process of
a distributed run is harmless.
"""

from __future__ import annotations

from typing import Any

from peft.utils.peft_types import PeftType

from ..compat import add_enum_member, check_peft_version

NAME = "plasticity"

check_peft_version()
PLASTICITY = add_enum_member(PeftType, NAME.upper(), NAME.upper())


def ensure_peft_type() -> Any:
    """The ``PeftType.PLASTICITY`` member (added if a reload of PEFT dropped it)."""
    return add_enum_member(PeftType, NAME.upper(), NAME.upper())
