"""``PlasticityLayer``: a selected module trained in full, as a per-adapter copy beside the frozen original.

Keeping the original untouched is what makes the method behave like any PEFT adapter: the adapter file
holds only the trained copies, ``disable_adapter()`` runs the original, several adapters can sit on one
model, and merging is swapping the trained copy in.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn


class PlasticityLayer(nn.Module, BaseTunerLayer):
    """Wraps one selected module (attention block, MLP linear or LayerNorm) of a transformer layer."""

    adapter_layer_names = ("plasticity_modules",)
    other_param_names = ()

    def __init__(self, base_layer: nn.Module, adapter_name: str, inference_mode: bool = False) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.plasticity_modules = nn.ModuleDict({})
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, inference_mode: bool = False, **kwargs: Any) -> None:
        """Add a trainable copy of the original module for ``adapter_name``."""
        trained = copy.deepcopy(self.get_base_layer())
        trained.requires_grad_(True)
        self.plasticity_modules[adapter_name] = trained
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Swap the adapter's trained copy in as the module (a copy replaces weights; nothing to add up)."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        if len(adapter_names) > 1:
            raise ValueError(
                f"cannot merge {len(adapter_names)} plasticity adapters at once: each replaces the same module's "
                "weights; merge one adapter"
            )
        if self.merged:
            warnings.warn(f"already merged with {self.merged_adapters}; unmerging first", stacklevel=2)
            self.unmerge()
        name = adapter_names[0]
        self.base_layer, self.plasticity_modules[name] = self.plasticity_modules[name], self.base_layer
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("already unmerged; nothing to do", stacklevel=2)
            return
        name = self.merged_adapters.pop()
        self.base_layer, self.plasticity_modules[name] = self.plasticity_modules[name], self.base_layer

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
            raise ValueError(
                f"{len(active)} plasticity adapters are active ({active}) but each replaces this module whole, so "
                "they cannot be combined; activate one with model.set_adapter(name)"
            )
        return self.plasticity_modules[active[0]](*args, **kwargs)

    def __repr__(self) -> str:
        return "plasticity." + super().__repr__()
