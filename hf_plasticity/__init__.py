"""hf_plasticity: which transformer components should you finetune? Measure their plasticity.

Importing the package is cheap: the names below load their modules (and torch, transformers, peft) on first
use (PEP 562), so ``hf-plasticity --help`` and ``import hf_plasticity`` cost milliseconds, not seconds.
The ``PLASTICITY`` PEFT method is still registered, and the card hooks on ``PeftModel`` still installed,
before anyone can use PEFT: at once when ``peft`` is already imported, otherwise the moment it is (a
post-import hook on ``peft``), so ``import hf_plasticity`` followed by ``PeftModel.from_pretrained`` works as
it always did.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import PlasticityError, PlasticityWarning
from .version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see (the advertised names); __getattr__ loads them on first use
    from .components import (
        COMPONENTS,
        THEORETICAL_RANKING,
        AttentionSpec,
        ComponentMap,
        ComponentSpec,
        LinearSpec,
        NormSpec,
        register_component_map,
    )
    from .integrations.callbacks import PlasticityCallback
    from .integrations.cards import attach_report, build_model_card, save_card_files, write_model_card
    from .integrations.export import export_merged
    from .integrations.hub import push_to_hub
    from .integrations.training import finetune
    from .measure import measure_plasticity
    from .report import PlasticityReport
    from .tuner import (
        PlasticityConfig,
        allocate_ranks,
        find_gradient_target_modules,
        find_plasticity_target_modules,
        find_plasticity_trainable_modules,
        load_adapter,
        plasticity_lora_config,
    )

# name -> the module (relative to this package) that defines it. Beyond ``__all__``, the names code written
# against earlier versions imports from here still resolve at run time: every error and warning (whose home, and
# the documented import, is ``hf_plasticity.errors``) and a few internals (``PlasticityModel``, ``select_modules``,
# ``rank_components``, ...).
_LAZY = {
    **dict.fromkeys(
        [
            "COMPONENTS",
            "THEORETICAL_RANKING",
            "AttentionSpec",
            "ComponentMap",
            "ComponentSpec",
            "LinearSpec",
            "NormSpec",
            "get_component_map",
            "rank_components",
            "register_component_map",
            "registered_model_types",
            "resolve_components",
        ],
        "components",
    ),
    "PlasticityCallback": "integrations.callbacks",
    **dict.fromkeys(
        ["attach_report", "build_model_card", "save_card_files", "write_model_card"], "integrations.cards"
    ),
    "export_merged": "integrations.export",
    "push_to_hub": "integrations.hub",
    "install_peft_hooks": "integrations.peft_hooks",
    "finetune": "integrations.training",
    "measure_plasticity": "measure",
    **dict.fromkeys(["ComponentStat", "PlasticityReport"], "report"),
    **dict.fromkeys(
        [
            "PlasticityConfig",
            "PlasticityModel",
            "allocate_ranks",
            "find_gradient_target_modules",
            "find_plasticity_target_modules",
            "find_plasticity_trainable_modules",
            "load_adapter",
            "plasticity_lora_config",
            "select_modules",
        ],
        "tuner",
    ),
}
_SUBMODULES = (
    "cli",
    "components",
    "data",
    "errors",
    "integrations",
    "io",
    "lookup",
    "measure",
    "models",
    "report",
    "reproduce",
    "stats",
    "tuner",
    "version",
)


def __getattr__(name: str) -> Any:
    """Load a public name's module on first access (PEP 562); PEFT-facing names also install the card hooks."""
    if name in _LAZY:
        module = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        if module.startswith(("tuner", "integrations")):
            _connect_to_peft()
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    errors = importlib.import_module(".errors", __name__)
    if name.endswith(("Error", "Warning")) and isinstance(getattr(errors, name, None), type):
        return getattr(errors, name)  # every error and warning, as before they moved out of __all__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


def _connect_to_peft() -> None:
    """Install the card hooks and register the method; PEFT must be imported (this imports it otherwise).

    While ``hf_plasticity.tuner`` is itself being imported (its import is what imported PEFT), registering is
    left to it: it registers as its last step.
    """
    from .integrations.peft_hooks import install_peft_hooks as install_peft_hooks

    install_peft_hooks()
    if "hf_plasticity.tuner" not in sys.modules:
        importlib.import_module(".tuner", __name__)  # registers PLASTICITY with PEFT


class _PeftImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`_connect_to_peft` right after ``peft`` finishes importing, whoever imports it."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != "peft":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if isinstance(spec.loader, importlib.abc.Loader):
                    spec.loader = _ThenConnect(spec.loader)
                return spec
        return None


class _ThenConnect(importlib.abc.Loader):
    """``peft``'s own loader, followed by :func:`_connect_to_peft` once the module has executed."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _remove_peft_hook()
        _connect_to_peft()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: the original loader's
        return getattr(self.loader, name)


def _remove_peft_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != _PeftImportHook.__name__]


if "peft" in sys.modules:
    _connect_to_peft()
else:
    _remove_peft_hook()  # one hook, however often this module is imported or reloaded
    sys.meta_path.insert(0, _PeftImportHook())

# What users import (the names README.md and docs/ use); the rest above resolves too, for code written against
# earlier versions, but is not advertised.
__all__ = [
    "COMPONENTS",
    "THEORETICAL_RANKING",
    "AttentionSpec",
    "ComponentMap",
    "ComponentSpec",
    "LinearSpec",
    "NormSpec",
    "PlasticityCallback",
    "PlasticityConfig",
    "PlasticityError",
    "PlasticityReport",
    "PlasticityWarning",
    "__version__",
    "allocate_ranks",
    "attach_report",
    "build_model_card",
    "export_merged",
    "find_gradient_target_modules",
    "find_plasticity_target_modules",
    "find_plasticity_trainable_modules",
    "finetune",
    "load_adapter",
    "measure_plasticity",
    "plasticity_lora_config",
    "push_to_hub",
    "register_component_map",
    "save_card_files",
    "write_model_card",
]
