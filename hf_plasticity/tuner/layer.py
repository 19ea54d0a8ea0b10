"""``PlasticityLayer``: a selected module trained in full, either in place or as a copy beside the original.

In place (the default, and the paper's method) the module's own weights are the adapter: nothing is
duplicated, so the memory cost is that of training those weights and no more. The layer is then a *view* of
the module: it shares the module's parameter, buffer and child registries, so every parameter keeps its
original name (``vit.layers.0.attention.q_proj.weight``) in ``named_parameters()``, in the base model's
``state_dict()`` and in the saved adapter, and transformers' own loaders find it where they expect it.
Merging is a no-op (recorded in ``merged_adapters``); what needs the original weights (disabling,
unloading, a second adapter) raises :class:`InPlaceAdapterError` naming ``keep_original=True``.

With ``keep_original=True`` each adapter trains its own copy and the frozen original stays as
``base_layer``, as PEFT's ``ModulesToSaveWrapper`` does: ``disable_adapter()`` runs the original, several
adapters can sit on one model, and merging swaps the trained copy in.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from ..compat import registered_child, set_active_adapter, share_module_registries
from ..errors import AdapterCombinationError, InPlaceAdapterError


def in_place_error(action: str) -> InPlaceAdapterError:
    """The one message for everything an in-place adapter cannot do: it has no original weights."""
    return InPlaceAdapterError(
        f"{action} needs the original weights, but this plasticity adapter trained the selected modules in place "
        "(PlasticityConfig(keep_original=False), the default); create the adapter with "
        "PlasticityConfig(..., keep_original=True) to keep a frozen original, or reload the base model"
    )


class PlasticityLayer(nn.Module, BaseTunerLayer):
    """Wraps one selected module (attention block, MLP linear or LayerNorm) of a transformer layer."""

    adapter_layer_names = ("plasticity_modules",)
    other_param_names = ()

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, inference_mode: bool = False, keep_original: bool = True
    ) -> None:
        super().__init__()
        self.keep_original = keep_original
        if keep_original:
            self.base_layer = base_layer  # type: ignore[misc]  # nn.Module registers it; read through the property
            self.plasticity_modules = nn.ModuleDict({})
        else:
            # A view of the module: the same registries, so its parameters keep their own names everywhere. The
            # module itself is held unregistered (under the adapter's name, for PEFT's per-adapter bookkeeping).
            share_module_registries(self, base_layer)
            self.__dict__["plasticity_modules"] = nn.ModuleDict({adapter_name: base_layer})
        self.in_features, self.out_features = _features(base_layer)
        set_active_adapter(self, adapter_name)
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, inference_mode=inference_mode)

    @property
    def base_layer(self) -> nn.Module:
        # In place, the trained module *is* the base layer, seen by PEFT's unloading as the base.
        if self.keep_original:
            return registered_child(self, "base_layer")
        return next(iter(self.plasticity_modules.values()))

    def update_layer(self, adapter_name: str, inference_mode: bool = False, **kwargs: Any) -> None:
        """Make ``adapter_name``'s module trainable: the module itself, or a new copy of the original."""
        if self.keep_original:
            self.plasticity_modules[adapter_name] = copy.deepcopy(self.get_base_layer())
        elif adapter_name not in self.plasticity_modules:
            raise in_place_error(f"adding adapter {adapter_name!r} beside another on the same module")
        self.plasticity_modules[adapter_name].requires_grad_(True)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def enable_adapters(self, enabled: bool) -> None:
        if not enabled and not self.keep_original:
            raise in_place_error("disable_adapter()")
        super().enable_adapters(enabled)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Swap the adapter's trained copy in as the module; in place, the weights already are the module's."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        if not self.keep_original:
            self.merged_adapters.extend(adapter_names)  # nothing to move; recorded so get_model_status() says so
            return
        if len(adapter_names) > 1:
            raise AdapterCombinationError(
                f"cannot merge {len(adapter_names)} plasticity adapters at once: each replaces the same module's "
                "weights; merge one adapter"
            )
        if self.merged:
            warnings.warn(f"already merged with {self.merged_adapters}; unmerging first", stacklevel=2)
            self.unmerge()
        name = adapter_names[0]
        self.base_layer, self.plasticity_modules[name] = self.plasticity_modules[name], self.base_layer  # type: ignore[misc]
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("already unmerged; nothing to do", stacklevel=2)
            return
        name = self.merged_adapters.pop()
        if not self.keep_original:
            return  # merged and unmerged are the same weights: the adapter's
        self.base_layer, self.plasticity_modules[name] = self.plasticity_modules[name], self.base_layer  # type: ignore[misc]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(*args, **kwargs)
        if self.merged or not self.active_adapters:
            return self.base_layer(*args, **kwargs)
        active = [a for a in self.active_adapters if a in self.plasticity_modules]
        if not active:
            return self.base_layer(*args, **kwargs)
        if len(active) > 1:
            raise AdapterCombinationError(
                f"{len(active)} plasticity adapters are active ({active}) but each replaces this module whole, so "
                "they cannot be combined; activate one with model.set_adapter(name)"
            )
        return self.plasticity_modules[active[0]](*args, **kwargs)

    def __repr__(self) -> str:
        return "plasticity." + super().__repr__()


def _features(module: nn.Module) -> tuple[int | None, int | None]:
    """Input and output width of a selected module (PEFT tooling reads ``in_features``/``out_features``)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1], module.normalized_shape[-1]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears:  # a block (attention, MLP): what enters its first linear, what leaves its last
        return linears[0].in_features, linears[-1].out_features
    weight = getattr(module, "weight", None)
    width = weight.shape[-1] if weight is not None and weight.ndim >= 1 else None
    return width, width
