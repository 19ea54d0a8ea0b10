"""Model cards that carry the plasticity ranking: built from a report, a config or a PEFT model.

A finetuned model's Hub page should say which components were measured as most plastic, which were
trained, *what chose them* (the measured ranking, or the theoretical one and why), with what result and
how to load it. The card's metadata holds a bounded ``plasticity:`` block (``ModelCard.load(...).data.
plasticity``) beside the standard keys; the body renders the same facts from the Jinja templates in
``hf_plasticity/integrations/templates`` (documented in the top-level ``model_cards/`` folder).

Plasticity adapters and PEFT LoRA adapters (from :func:`hf_plasticity.plasticity_lora_config`, with their
report) get a card; a LoRA card loads with ``peft`` alone (``lora_card.md.j2``).

One job per module: :mod:`.sources` (where facts and publishable names come from), :mod:`.metadata` (the
``plasticity:`` block), :mod:`.body` (prose and tables, through :mod:`hf_plasticity.report.tables`),
:mod:`.build` (the ``ModelCard``), :mod:`.merge` (writing without clobbering). Hub uploads are in
:mod:`hf_plasticity.integrations.hub`; PEFT's save/push hooks in :mod:`hf_plasticity.integrations.peft_hooks`.
"""

from ...errors import ModelCardError
from .build import BASE_PLACEHOLDER, build_model_card
from .common import CARD_NAME, FIGURE_NAME, HUB_DATASETS, REPORT_NAME, TOP_MODULES, template_path
from .merge import attach_report, merge_model_card, save_card_files, write_model_card
from .metadata import lora_metadata, plasticity_metadata
from .sources import card_adapter_name, lora_config_of, plasticity_adapter_name, plasticity_config_of

__all__ = [
    "BASE_PLACEHOLDER",
    "CARD_NAME",
    "FIGURE_NAME",
    "HUB_DATASETS",
    "REPORT_NAME",
    "TOP_MODULES",
    "ModelCardError",
    "attach_report",
    "build_model_card",
    "card_adapter_name",
    "lora_config_of",
    "lora_metadata",
    "merge_model_card",
    "plasticity_adapter_name",
    "plasticity_config_of",
    "plasticity_metadata",
    "save_card_files",
    "template_path",
    "write_model_card",
]
