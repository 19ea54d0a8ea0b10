"""The one place where hf_plasticity reaches into another library's private names, each behind a version check.

Entries:

- ``accelerate_hook``: Accelerate's ``add_hook_to_module`` keeps a module's hook on the private attribute
  ``_hf_hook`` (accelerate 0.x and 1.x). Its public helpers (``has_offloaded_params``, ``align_module_device``)
  load a module's offloaded weights for one call; holding them across a chunk of batches means telling the
  hook not to offload after each forward (its public ``offload`` flag), which needs the hook itself.
"""

from __future__ import annotations

from typing import Any

from .errors import UnsupportedModelError

ACCELERATE_HOOK_VERSIONS = (0, 2)
"""Major versions of accelerate (lowest included, highest excluded) known to keep the hook on ``_hf_hook``."""


def accelerate_hook(module: Any) -> Any:
    """The Accelerate hook attached to ``module`` (``AlignDevicesHook``, ``SequentialHook``, ...), or None."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None:
        _check_accelerate()
    return hook


def _check_accelerate() -> None:
    import accelerate

    major = int(str(accelerate.__version__).split(".")[0])
    low, high = ACCELERATE_HOOK_VERSIONS
    if not low <= major < high:
        raise UnsupportedModelError(
            f"accelerate {accelerate.__version__} may keep its module hooks elsewhere than accelerate "
            f"{low}.x-{high - 1}.x, which hf_plasticity reads to measure offloaded models; install "
            f"'accelerate<{high}' or a newer hf-plasticity"
        )
