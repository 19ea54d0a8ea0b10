"""The one place hf_plasticity touches another library's private names, each behind a check of what is installed.

A PEFT method lives inside PEFT: its tuner overrides ``BaseTuner`` hooks, its layer shares a torch module's
registries, and a few PEFT helpers it needs have underscore names. Those names change between releases without
notice, so every use goes through this module: :data:`PEFT_RANGE` is the PEFT range this release was tested
against (``pyproject.toml`` pins the same range; ``tests/test_compat.py`` checks both agree and that every name
below resolves), and a name that is missing raises :class:`~hf_plasticity.errors.UnsupportedVersionError`
naming the supported range, never an ``AttributeError`` from deep inside PEFT.

Accelerate keeps a module's offload hook on the private attribute ``_hf_hook``; measuring an offloaded model
holds a block's weights across a chunk of batches, which needs the hook itself (:func:`accelerate_hook`).

Importing this module imports nothing heavy; each helper imports its library when called.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from typing import Any

from .errors import UnsupportedVersionError, UnsupportedVersionWarning

PEFT_MIN, PEFT_BELOW = (0, 21), (0, 22)
"""The PEFT versions this release supports: ``PEFT_MIN <= version < PEFT_BELOW`` (major, minor)."""
PEFT_RANGE = f">={PEFT_MIN[0]}.{PEFT_MIN[1]},<{PEFT_BELOW[0]}.{PEFT_BELOW[1]}"
""":data:`PEFT_MIN` and :data:`PEFT_BELOW` as a requirement specifier (what ``pyproject.toml`` says)."""
ALLOW_ENV = "HF_PLASTICITY_ALLOW_UNSUPPORTED_PEFT"
"""Set to ``1`` to run with a PEFT outside :data:`PEFT_RANGE` anyway (a warning instead of the error)."""

PRIVATE_NAMES: dict[str, tuple[str, str, str]] = {
    "filter_state_dict_by_key_prefixes": ("peft", "peft.tuners.tuners_utils", "_filter_state_dict_by_key_prefixes"),
    "tuner_state_dict_key_prefixes": ("peft", "peft.tuners.tuners_utils", "_get_tuner_state_dict_key_prefixes"),
    "adapter_state_dict_key_prefixes": ("peft", "peft.utils.save_and_load", "_get_adapter_state_dict_key_prefixes"),
    "auto_model_mapping": ("transformers", "transformers.AutoModelForCausalLM", "_model_mapping"),
}
"""Every private module-level name used, by the helper that wraps it: (library, owner, attribute)."""

TUNER_HOOKS = (
    "_create_and_replace",
    "_prepare_adapter_config",
    "_check_target_module_exists",
    "_replace_module",
    "_cast_adapter_dtype",
    "_remove_adapter_name_from_key",
    "_remap_adapter_state_dict_for_load",
    "_unload_and_optionally_merge",
)
"""The ``peft.tuners.tuners_utils.BaseTuner`` hooks ``PlasticityModel`` overrides: if PEFT stops calling one of
them, the tuner would silently fall back to LoRA-shaped behaviour, so each must still exist on ``BaseTuner``."""

TUNER_LAYER_ATTRIBUTES = ("_active_adapter",)
"""``BaseTunerLayer`` state that every PEFT tuner layer sets in its ``__init__`` (PEFT's own layers do)."""

MODULE_REGISTRIES = ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules")
"""The ``torch.nn.Module`` registries an in-place ``PlasticityLayer`` shares with the module it views."""

COMPILED_ATTRIBUTE = "_orig_mod"
"""Where ``torch.compile`` keeps the compiled module (and the prefix it gives state-dict keys)."""


# ------------------------------------------------------------------------------------------ versions
def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if not piece.isdigit() else piece
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():
            break
    return tuple(parts)


def peft_version() -> str:
    """The installed PEFT's version string."""
    import peft

    return str(peft.__version__)


def unsupported_peft(reason: str, version: str | None = None) -> UnsupportedVersionError:
    """The one error for a PEFT this release cannot work with: what is wrong, the range, the fix."""
    version = version or peft_version()
    return UnsupportedVersionError(
        f"{reason}: hf_plasticity supports peft{PEFT_RANGE} and peft {version} is installed; install a supported "
        f"one (pip install 'peft{PEFT_RANGE}') or an hf-plasticity release made for peft {version}"
    )


def check_peft_version(version: str | None = None) -> None:
    """Refuse a PEFT outside :data:`PEFT_RANGE` (or warn, when :data:`ALLOW_ENV` is set to 1)."""
    version = version or peft_version()
    if PEFT_MIN <= _version_tuple(version)[:2] < PEFT_BELOW:
        return
    if os.environ.get(ALLOW_ENV) == "1":
        warnings.warn(
            f"peft {version} is outside the supported range peft{PEFT_RANGE} ({ALLOW_ENV}=1): the PLASTICITY method "
            "may fail",
            UnsupportedVersionWarning,
            stacklevel=2,
        )
        return
    raise unsupported_peft(f"peft {version} is outside the tested range (set {ALLOW_ENV}=1 to try it anyway)", version)


def private(helper: str) -> Any:
    """The private name :data:`PRIVATE_NAMES` lists for ``helper``, or the typed error naming the range."""
    library, owner, name = PRIVATE_NAMES[helper]
    module_name, _, cls_name = owner.rpartition(".") if owner.split(".")[-1][:1].isupper() else (owner, "", "")
    try:
        obj: Any = importlib.import_module(module_name)
        if cls_name:
            obj = getattr(obj, cls_name)
        return getattr(obj, name)
    except (ImportError, AttributeError):
        if library == "peft":
            raise unsupported_peft(f"peft lacks {owner}.{name}, which hf_plasticity needs") from None
        version = importlib.import_module(library).__version__
        raise UnsupportedVersionError(
            f"{library} {version} lacks {owner}.{name}, which hf_plasticity needs; install the {library} version "
            f"pyproject.toml of hf-plasticity asks for"
        ) from None


# ----------------------------------------------------------------------------------------------- peft
def filter_state_dict_by_key_prefixes(state_dict: dict[str, Any], prefixes: Any) -> dict[str, Any]:
    """PEFT's filter of a state dict down to the keys under some prefixes."""
    return dict(private("filter_state_dict_by_key_prefixes")(state_dict, prefixes))


def tuner_state_dict_key_prefixes(model: Any, adapter_name: str) -> Any:
    """The key prefixes of ``adapter_name``'s tuner layers in ``model`` (what PEFT expects a file to hold)."""
    return private("tuner_state_dict_key_prefixes")(model, adapter_name=adapter_name)


def wrap_adapter_state_dict_key_prefixes(make: Callable[[Any], Callable[[Any], set[str]]]) -> None:
    """Replace PEFT's ``_get_adapter_state_dict_key_prefixes`` with ``make(original)``, once per process.

    Only PEFT's base-model state-dict helpers (``get_base_model_state_dict`` / ``set_base_model_state_dict``)
    read it; the replacement is marked, so installing twice (a reload) wraps the original only.
    """
    from peft.utils import save_and_load

    original = private("adapter_state_dict_key_prefixes")
    if getattr(original, "_hf_plasticity", False):
        return
    replacement = make(original)
    replacement._hf_plasticity = True  # type: ignore[attr-defined]
    setattr(save_and_load, PRIVATE_NAMES["adapter_state_dict_key_prefixes"][2], replacement)


def check_tuner_hooks(tuner_cls: type) -> None:
    """Every ``BaseTuner`` hook :data:`TUNER_HOOKS` names exists, so ``tuner_cls``'s overrides are called."""
    from peft.tuners.tuners_utils import BaseTuner

    missing = [name for name in TUNER_HOOKS if not hasattr(BaseTuner, name)]
    if missing:
        raise unsupported_peft(f"peft's BaseTuner has no {missing}, which {tuner_cls.__name__} overrides")


def set_active_adapter(layer: Any, adapter_name: str) -> None:
    """What every PEFT tuner layer's ``__init__`` does: make ``adapter_name`` the layer's active adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not isinstance(getattr(BaseTunerLayer, "active_adapter", None), property):
        raise unsupported_peft("peft's BaseTunerLayer.active_adapter is no longer the property of _active_adapter")
    setattr(layer, TUNER_LAYER_ATTRIBUTES[0], adapter_name)


def add_enum_member(enum_cls: Any, name: str, value: str) -> Any:
    """Add ``name = value`` to a closed ``str`` enum (PEFT's ``PeftType``), the way the enum machinery stores members.

    ``peft.utils.register_peft_method`` wants a member of ``PeftType``; a new method has none. Idempotent: the
    existing member is returned, so importing twice, reloading, or importing in every process is harmless.
    """
    existing = enum_cls.__members__.get(name)
    if existing is not None:
        return existing
    tables = ("_member_map_", "_value2member_map_", "_member_names_")
    missing = [t for t in tables if not hasattr(enum_cls, t)]
    if missing:
        raise UnsupportedVersionError(
            f"this Python's enum has no {missing}, which adding the PLASTICITY member to {enum_cls.__name__} needs"
        )
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


def patch_method(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> bool:
    """Replace ``cls.name`` with ``make(original)`` once (marked, so a second call is a no-op); False if done."""
    original = getattr(cls, name, None)
    if original is None:
        raise unsupported_peft(f"{cls.__name__}.{name} is gone")
    if getattr(original, "_hf_plasticity", False):
        return False
    replacement = make(original)
    replacement._hf_plasticity = True  # type: ignore[attr-defined]
    replacement.__doc__ = original.__doc__
    setattr(cls, name, replacement)
    return True


# ---------------------------------------------------------------------------------------------- torch
def share_module_registries(view: Any, module: Any) -> None:
    """Make ``view`` see ``module``'s parameters, buffers and children as its own (the same dictionaries)."""
    missing = [r for r in MODULE_REGISTRIES if r not in module.__dict__]
    if missing:
        import torch

        raise UnsupportedVersionError(
            f"torch {torch.__version__}'s nn.Module keeps no {missing}, which an in-place PlasticityConfig adapter "
            "shares with the module it trains; use keep_original=True, or a torch version hf-plasticity supports"
        )
    for registry in MODULE_REGISTRIES:
        view.__dict__[registry] = module.__dict__[registry]


def registered_child(module: Any, name: str) -> Any:
    """The child registered under ``name`` (read without ``nn.Module.__getattr__``, which a property shadows)."""
    return module.__dict__[MODULE_REGISTRIES[3]][name]


# --------------------------------------------------------------------------------------- transformers
def auto_model_mapping(auto_cls: Any) -> Any:
    """A transformers auto class's mapping from config class to model class(es)."""
    name = PRIVATE_NAMES["auto_model_mapping"][2]
    mapping = getattr(auto_cls, name, None)
    if mapping is None:
        private("auto_model_mapping")  # raises naming the version when transformers dropped the name
        raise UnsupportedVersionError(f"{getattr(auto_cls, '__name__', auto_cls)} has no {name}")
    return mapping


# ------------------------------------------------------------------------------------------- datasets
def dataset_fingerprint(dataset: Any) -> str:
    """A ``datasets.Dataset``'s content fingerprint (what ``datasets`` caches by)."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        import datasets

        raise UnsupportedVersionError(
            f"datasets {datasets.__version__}'s Dataset has no _fingerprint, which names a data set in reports; "
            "install the datasets version hf-plasticity asks for"
        )
    return str(fingerprint)


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
        raise UnsupportedVersionError(
            f"accelerate {accelerate.__version__} may keep its module hooks elsewhere than accelerate "
            f"{low}.x-{high - 1}.x, which hf_plasticity reads to measure offloaded models; install "
            f"'accelerate<{high}' or a newer hf-plasticity"
        )


__all__ = [
    "ACCELERATE_HOOK_VERSIONS",
    "ALLOW_ENV",
    "COMPILED_ATTRIBUTE",
    "MODULE_REGISTRIES",
    "PEFT_BELOW",
    "PEFT_MIN",
    "PEFT_RANGE",
    "PRIVATE_NAMES",
    "TUNER_HOOKS",
    "accelerate_hook",
    "add_enum_member",
    "auto_model_mapping",
    "check_peft_version",
    "check_tuner_hooks",
    "dataset_fingerprint",
    "filter_state_dict_by_key_prefixes",
    "patch_method",
    "peft_version",
    "private",
    "registered_child",
    "set_active_adapter",
    "share_module_registries",
    "tuner_state_dict_key_prefixes",
    "unsupported_peft",
    "wrap_adapter_state_dict_key_prefixes",
]
