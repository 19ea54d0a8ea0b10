"""``PlasticityModel``: PEFT's tuner for the plasticity method.

The selection is resolved once, when the adapter is created, from the live model and the config's
scores; it is written back into the config (``selected_modules``, ``target_modules``), so loading a saved
adapter rebuilds exactly the same modules without needing the report.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, ClassVar

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_target_module_exists
from torch import nn

from ..compat import COMPILED_ATTRIBUTE, filter_state_dict_by_key_prefixes, tuner_state_dict_key_prefixes
from ..components import resolve_components
from ..errors import AdapterCombinationError, AdapterLoadError, InvalidInputError
from ..report.report import PlasticityReport
from .config import PlasticityConfig
from .layer import PlasticityLayer, in_place_error
from .scores import resolve_scores
from .selection import select_modules


class PlasticityModel(BaseTuner):
    """Trains the modules that plasticity selects, whole (LoRA is PEFT's own: ``plasticity_lora_config``).

    The modules train in place unless ``keep_original=True``; an in-place adapter is the
    model's only adapter, and what needs the original weights raises :class:`InPlaceAdapterError`.

    Example:
        >>> from peft import get_peft_model
        >>> from hf_plasticity import PlasticityConfig
        >>> peft_model = get_peft_model(vit, PlasticityConfig(scores=report, top_k=1))
        >>> peft_model.print_trainable_parameters()
    """

    prefix: str = "plasticity_"
    tuner_layer_cls = PlasticityLayer
    target_module_mapping: ClassVar[dict[str, list[str]]] = {}  # type: ignore[misc]  # PEFT's is per instance
    peft_config: dict[str, PlasticityConfig]  # type: ignore[assignment]  # PEFT types it as any PeftConfig
    _container: ClassVar[str] = PlasticityLayer.adapter_layer_names[0]

    plasticity_reports: dict[str, PlasticityReport]
    """The measured report each adapter was selected from (by adapter name), for model cards; an adapter loaded
    from disk has none until :func:`hf_plasticity.attach_report` gives it one."""

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any) -> None:
        self.__dict__.setdefault("plasticity_reports", {})
        super().__init__(model, *args, **kwargs)
        # PEFT loads adapters with load_state_dict(strict=False), which stops at torch's bare size mismatch; this
        # hook names both shapes and the fix first (after PEFT dropped what ignore_mismatched_sizes=True drops).
        self.register_load_state_dict_pre_hook(_check_shapes)

    def inject_adapter(
        self, model: nn.Module, adapter_name: str, *args: Any, state_dict: dict | None = None, **kwargs: Any
    ) -> None:
        """Resolve the selection on the live model (first adapter or ``add_adapter``), then let PEFT inject.

        Given a ``state_dict`` (PEFT's ``inject_adapter_in_model(config, model, state_dict=...)``), the modules to
        wrap are read from its keys, in both of this method's key layouts (PEFT's own reading looks for the
        method prefix only, which in-place keys do not carry).
        """
        self._resolve_targets(model, adapter_name)
        if state_dict is not None:
            state_dict = {f"{m}.{self.prefix}": None for m in _modules_in_state_dict(model, state_dict)}
        super().inject_adapter(model, adapter_name, *args, state_dict=state_dict, **kwargs)  # type: ignore[misc]

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``...plasticity_modules.<adapter>.q_proj.weight`` saves as ``...plasticity_modules.q_proj.weight``.

        PEFT's default removes the name only where LoRA puts it (second to last); ours sits right after the
        container, so saved files never depend on the adapter name. In-place keys carry no name at all.
        """
        marker = f".{cls._container}.{adapter_name}."
        if marker in key:
            head, _, tail = key.rpartition(marker)
            return f"{head}.{cls._container}.{tail}"
        return super()._remove_adapter_name_from_key(key, adapter_name)

    @classmethod
    def _remap_adapter_state_dict_for_load(  # type: ignore[override]
        cls, model: nn.Module, config: PlasticityConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """PEFT's remapping, plus: a full-mode file loads whether it was saved in place or beside a kept original,
        and a file of the first format (adapter name in the key) still loads, under any name. Warns about adapter
        keys the file lacks where PEFT's own warning cannot see them (in-place keys lack its prefix)."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        model_keys = model.state_dict().keys()
        aliases: dict[str, str] = {}
        for name, module in model.named_modules():
            if not isinstance(module, PlasticityLayer) or adapter_name not in module.plasticity_modules:
                continue
            for key in module.plasticity_modules[adapter_name].state_dict():
                own = f"{name}.{cls._container}.{adapter_name}.{key}" if module.keep_original else f"{name}.{key}"
                for saved in (f"{name}.{key}", f"{name}.{cls._container}.{key}"):
                    aliases[saved] = own
                    aliases["base_model.model." + saved] = own
        legacy = re.compile(rf"^(.*\.{cls._container})\.[^.]+\.(.*)$")
        out: dict[str, torch.Tensor] = {}
        for key, value in remapped.items():
            if key not in model_keys:
                match = legacy.match(key)
                key = aliases.get(key) or (match and aliases.get(f"{match[1]}.{match[2]}")) or key
            out[key] = value
        expected = filter_state_dict_by_key_prefixes(
            dict.fromkeys(model_keys), tuner_state_dict_key_prefixes(model, adapter_name)
        )
        unseen = [k for k in expected if k not in out and not (cls.prefix in k and adapter_name in k)]
        if unseen:  # PEFT's wording, so tools that look for it find it
            warnings.warn(f"Found missing adapter keys while loading the checkpoint: {unseen}.", stacklevel=2)
        return out

    def _resolve_targets(self, model: nn.Module, adapter_name: str) -> None:
        config: PlasticityConfig = self.peft_config[adapter_name]
        resolve_components(model)  # an unsupported model fails here, with the fix in the message
        others = [c for name, c in self.peft_config.items() if name != adapter_name]
        if others and (config.in_place or any(c.in_place for c in others)):
            raise in_place_error(f"adding adapter {adapter_name!r} to a model that already has one")
        shape = model_shape(model)
        if config.selected_modules is None:
            report = resolve_scores(config)  # the config keeps plain values; the report stays with the model
            if report is not None:
                self.__dict__.setdefault("plasticity_reports", {})[adapter_name] = report
            selection = select_modules(model, config)
            config.selected_modules = selection.modules
            if config.modules_to_save is None:
                config.modules_to_save = selection.heads
            config.base_model_shape = shape
        else:
            names = dict(model.named_modules())
            missing = [m for m in config.selected_modules if m not in names]
            if missing:
                raise AdapterLoadError(
                    f"this adapter trains {missing[:3]}, which the model does not have; load it on the base model "
                    f"it was trained from ({config.base_model_name_or_path or 'see adapter_config.json'})"
                )
            saved = {k: v for k, v in (config.base_model_shape or {}).items() if k in shape}
            if saved and any(shape[k] != v for k, v in saved.items()):
                raise AdapterLoadError(
                    f"this adapter was trained on a model with {_shape_text(saved)} but this model has "
                    f"{_shape_text({k: shape[k] for k in saved})}; load it on the base model it was trained from "
                    f"({config.base_model_name_or_path or 'see base_model_name_or_path in adapter_config.json'})"
                )
        config.target_modules = list(config.selected_modules)

    def _prepare_adapter_config(  # type: ignore[override]  # PEFT's tuners narrow the config to their own
        self, peft_config: PlasticityConfig, model_config: dict
    ) -> PlasticityConfig:
        return peft_config  # targets are resolved from the live model in _pre_injection_hook

    @staticmethod
    def _check_target_module_exists(peft_config: PlasticityConfig, key: str) -> bool:  # type: ignore[override]
        # PEFT's own matcher: with 20+ targets PEFT rewrites the full names into the shortest suffixes
        # that match them and no other module, so exact-name matching alone would miss them.
        return bool(check_target_module_exists(peft_config, key))

    def _create_and_replace(  # type: ignore[override]
        self,
        peft_config: PlasticityConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        if isinstance(target, PlasticityLayer):
            target.update_layer(adapter_name, inference_mode=peft_config.inference_mode)
            return
        if isinstance(target, BaseTunerLayer):
            raise InvalidInputError(
                f"{current_key} already carries a {type(target).__name__} adapter of another PEFT method; a "
                "plasticity adapter trains the whole module, so it cannot sit on top of another adapter: put it on "
                "the base model"
            )
        new = PlasticityLayer(
            target, adapter_name, inference_mode=peft_config.inference_mode, keep_original=not peft_config.in_place
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
        if not hasattr(new_module, "base_layer") and not isinstance(getattr(new_module, "weight", None), torch.Tensor):
            # a head that is a block, not a linear (RoBERTa's dense + out_proj), handed back by unload(): PEFT's
            # version would copy a .weight it does not have
            setattr(parent, child_name, new_module)
            return
        super()._replace_module(parent, child_name, new_module, child)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """Trained copies keep the dtype of the module they copy (no float32 up-cast as for LoRA factors)."""

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

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> Any:
        """PEFT's, after refusing a merge of several full-mode adapters before any module is touched."""
        if merge:
            self._unloading_checks(adapter_names)
        return super()._unload_and_optionally_merge(merge, progressbar, safe_merge, adapter_names)

    def _unloading_checks(self, adapter_names: list[str] | None) -> None:
        adapters = adapter_names or self.active_adapters
        if len(adapters) > 1:
            raise AdapterCombinationError(
                "cannot merge several plasticity adapters: each replaces the same weights; merge one "
                "adapter (merge_and_unload(adapter_names=[name]))"
            )


def report_of(model: Any, adapter_name: str = "default") -> PlasticityReport | None:
    """The report a plasticity adapter was selected from: kept by the tuner model (a ``PeftModel`` or the tuner)."""
    tuner = getattr(model, "base_model", None) if not isinstance(model, PlasticityModel) else model
    return getattr(tuner, "plasticity_reports", {}).get(adapter_name) if isinstance(tuner, PlasticityModel) else None


def model_shape(model: nn.Module) -> dict[str, int]:
    """What an adapter must match besides module names: depth and width (recorded in ``base_model_shape``)."""
    shape = {"num_layers": resolve_components(model).num_layers}
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    if isinstance(hidden, int):
        shape["hidden_size"] = hidden
    return shape


def _shape_text(shape: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in shape.items())


def _modules_in_state_dict(model: nn.Module, state_dict: dict[str, Any]) -> set[str]:
    """The modules a saved adapter wraps, from its keys: before the container, else a component path."""
    components = {path for _, _, path in resolve_components(model).iter_module_paths()}
    found = set()
    for key in state_dict:
        key = key.removeprefix(f"{COMPILED_ATTRIBUTE}.").removeprefix("base_model.model.")
        for marker in (f".{PlasticityModel._container}.", f".{PlasticityModel._container}"):
            if marker in key:
                found.add(key.split(marker)[0])
                break
        else:  # in place: the deepest component module the key lies under
            parts = key.split(".")
            owners = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
            found.update(next(([o] for o in owners if o in components), []))
    return found


def _check_shapes(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Refuse a checkpoint whose tensors do not fit this model, naming both shapes and the fix."""
    own = module.state_dict(prefix=prefix, keep_vars=True)
    wrong = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    ]
    if not wrong:
        return
    lines = "; ".join(f"{k.removeprefix(prefix)}: saved {s}, model {m}" for k, s, m in wrong[:4])
    raise AdapterLoadError(
        f"the adapter does not fit this model ({len(wrong)} tensors differ in shape: {lines}); load it on the base "
        "model it was trained from (same hidden_size, and num_labels=<the saved head's rows> for the head, e.g. "
        "AutoModelForImageClassification.from_pretrained(base, num_labels=...)), or pass "
        "ignore_mismatched_sizes=True to PeftModel.from_pretrained / hf_plasticity.load_adapter to keep the base "
        "model's own (untrained) tensors where they differ"
    )
