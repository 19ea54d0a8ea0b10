"""``PlasticityModel``: PEFT's tuner for the plasticity method.

The selection is resolved once, when the adapter is created, from the live model and the config's
scores; it is written back into the config (``selected_modules``, ``target_modules``), so loading a saved
adapter rebuilds exactly the same modules without needing the report.
"""

from __future__ import annotations

from typing import Any, ClassVar

from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_target_module_exists
from torch import nn

from ..components import resolve_components
from ..errors import InvalidInputError
from .config import PlasticityConfig
from .layer import PlasticityLayer, in_place_error
from .selection import lora_targets, select_modules


class PlasticityModel(BaseTuner):
    """Trains the modules that plasticity selects: in full (``mode="full"``) or through LoRA (``mode="lora"``).

    In mode full the modules train in place unless ``keep_original=True``; an in-place adapter is the
    model's only adapter, and what needs the original weights raises :class:`InPlaceAdapterError`.

    Example:
        >>> from peft import get_peft_model
        >>> from hf_plasticity import PlasticityConfig
        >>> peft_model = get_peft_model(vit, PlasticityConfig(scores=report, top_k=1))
        >>> peft_model.print_trainable_parameters()
    """

    prefix: str = "plasticity_"
    tuner_layer_cls = BaseTunerLayer  # PlasticityLayer, and PEFT's own LoRA layers in mode="lora"
    target_module_mapping: ClassVar[dict[str, list[str]]] = {}

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        """Resolve the selection on the live model (first adapter or ``add_adapter``), then let PEFT inject."""
        self._resolve_targets(model, adapter_name)
        super().inject_adapter(model, adapter_name, *args, **kwargs)

    def _resolve_targets(self, model: nn.Module, adapter_name: str) -> None:
        config: PlasticityConfig = self.peft_config[adapter_name]
        resolve_components(model)  # an unsupported model fails here, with the fix in the message
        others = [c for name, c in self.peft_config.items() if name != adapter_name]
        if others and (config.in_place or any(c.in_place for c in others)):
            raise in_place_error(f"adding adapter {adapter_name!r} to a model that already has one")
        modes = {c.mode for c in others if c.selected_modules}
        if modes and modes != {config.mode}:
            raise InvalidInputError(
                f"this model already has a mode={modes.pop()!r} plasticity adapter; adapters of mode 'full' and "
                "'lora' cannot share a module — use the same mode for every adapter on this model"
            )
        if config.selected_modules is None:
            selection = select_modules(model, config)
            config.selected_modules = selection.modules
            if config.modules_to_save is None:
                config.modules_to_save = selection.heads
        else:
            names = dict(model.named_modules())
            missing = [m for m in config.selected_modules if m not in names]
            if missing:
                raise InvalidInputError(
                    f"this adapter trains {missing[:3]}, which the model does not have; load it on the base model "
                    f"it was trained from ({config.base_model_name_or_path or 'see adapter_config.json'})"
                )
        if config.mode == "lora":
            config.target_modules = lora_targets(model, config.selected_modules)
        else:
            config.target_modules = list(config.selected_modules)

    def _prepare_adapter_config(self, peft_config: PlasticityConfig, model_config: dict) -> PlasticityConfig:
        return peft_config  # targets are resolved from the live model in _pre_injection_hook

    @staticmethod
    def _check_target_module_exists(peft_config: PlasticityConfig, key: str) -> bool:
        # PEFT's own matcher: with 20+ targets PEFT rewrites the full names into the shortest suffixes
        # that match them and no other module, so exact-name matching alone would miss them.
        return bool(check_target_module_exists(peft_config, key))

    def _create_and_replace(
        self,
        peft_config: PlasticityConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        lora = peft_config.mode == "lora" and isinstance(target, nn.Linear | LoraLayer)
        if lora and isinstance(target, LoraLayer):
            target.update_layer(adapter_name, peft_config.r, peft_config.lora_alpha, config=_lora_config(peft_config))
            return
        if not lora and isinstance(target, PlasticityLayer):
            target.update_layer(adapter_name, inference_mode=peft_config.inference_mode)
            return
        if isinstance(target, BaseTunerLayer):
            raise InvalidInputError(
                f"{current_key} already carries a {type(target).__name__} adapter; adapters of mode 'full' and "
                "'lora' cannot share a module — use the same mode for every adapter on this model"
            )
        if lora:
            new: nn.Module = LoraLinear(
                target,
                adapter_name,
                config=_lora_config(peft_config),
                r=peft_config.r,
                lora_alpha=peft_config.lora_alpha,
            )
        else:
            new = PlasticityLayer(
                target,
                adapter_name,
                inference_mode=peft_config.inference_mode,
                keep_original=not peft_config.in_place,
            )
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        """PEFT's version assumes a module with ``.weight`` (a linear); ours may be a whole attention block."""
        if isinstance(new_module, PlasticityLayer) or (
            isinstance(child, PlasticityLayer) and new_module is child.get_base_layer()
        ):
            setattr(parent, child_name, new_module)
            if isinstance(new_module, PlasticityLayer):
                weight = next(new_module.get_base_layer().parameters(), None)
                if weight is not None and weight.device.type != "meta":
                    new_module.plasticity_modules.to(weight.device)
            return
        super()._replace_module(parent, child_name, new_module, child)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Trained copies keep the dtype of the module they copy (no float32 up-cast as for LoRA factors)."""
        if self.peft_config[adapter_name].mode == "lora":
            super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype)

    def disable_adapter_layers(self) -> None:
        """PEFT's, after checking that the original weights still exist (before anything is switched off)."""
        self._check_original_kept("disable_adapter()")
        super().disable_adapter_layers()

    def unload(self) -> nn.Module:
        """PEFT's: the base model without the adapter, which needs the original weights kept."""
        self._check_original_kept("unload()")
        return super().unload()

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.peft_config and self.peft_config[adapter_name].in_place:
            raise in_place_error(f"delete_adapter({adapter_name!r})")
        super().delete_adapter(adapter_name)

    def _check_original_kept(self, action: str) -> None:
        if any(c.in_place for c in self.peft_config.values()):
            raise in_place_error(action)

    def _unloading_checks(self, adapter_names: list[str] | None) -> None:
        adapters = adapter_names or self.active_adapters
        if len(adapters) > 1 and any(self.peft_config[a].mode == "full" for a in adapters):
            raise ValueError("cannot merge several full-mode plasticity adapters: each replaces the same weights")


def _lora_config(config: PlasticityConfig) -> LoraConfig:
    """The LoRA settings PEFT's LoRA layers read, taken from the plasticity config."""
    return LoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules or []),
        inference_mode=config.inference_mode,
    )
