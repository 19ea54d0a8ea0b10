"""The one place hf_plasticity changes PEFT's behaviour: cards and Hub uploads of plasticity adapters.

Importing ``hf_plasticity`` installs the hooks once (idempotent). Only models whose active adapter is a
``PlasticityConfig``, or a LoRA adapter the user gave a report with :func:`hf_plasticity.attach_report`, are
affected; every other PEFT model (plain LoRA included) goes through PEFT's own methods unchanged.
"""

from __future__ import annotations

from typing import Any

from ..compat import patch_method
from .cards import card_adapter_name, save_card_files
from .hub import push_to_hub as push


def install_peft_hooks() -> None:
    """Make ``save_pretrained`` and ``push_to_hub`` of a plasticity PEFT model write and upload our card.

    PEFT writes a generic card in ``PeftModel.create_or_update_model_card`` (also called by the Trainer
    after it writes its own summary) and transformers' ``push_to_hub`` replaces the README with the
    remote or a generic one. For a model whose active adapter is a ``PlasticityConfig`` (or a LoRA adapter with
    an attached report) both go through this package's card and Hub code instead; every other PEFT model keeps
    PEFT's behaviour.
    """
    from peft import PeftModel

    def card_hook(original: Any) -> Any:
        def create_or_update_model_card(self: Any, output_dir: str) -> None:
            name = card_adapter_name(self)
            if name is None:
                return original(self, output_dir)
            save_card_files(self, output_dir, adapter_name=name)
            return None

        return create_or_update_model_card

    def push_hook(original: Any) -> Any:
        def push_to_hub(self: Any, repo_id: str, *args: Any, **kwargs: Any) -> Any:
            if card_adapter_name(self) is None:
                return original(self, repo_id, *args, **kwargs)
            kwargs.pop("max_shard_size", None)
            kwargs.pop("tags", None)
            return push(self, repo_id, *args, **kwargs)

        return push_to_hub

    patch_method(PeftModel, "create_or_update_model_card", card_hook)
    patch_method(PeftModel, "push_to_hub", push_hook)
