"""hf_plasticity: which transformer components should you finetune? Measure their plasticity."""

from __future__ import annotations

from .components import (
    COMPONENTS,
    THEORETICAL_RANKING,
    ComponentMap,
    ComponentSpec,
    get_component_map,
    rank_components,
    register_component_map,
    registered_model_types,
    resolve_components,
)
from .errors import (
    AdapterLoadError,
    EmptyDataError,
    HubUnreachableError,
    InPlaceAdapterError,
    InvalidInputError,
    LegacyReportWarning,
    MissingDataError,
    ModelCardError,
    NonFiniteError,
    NotEnoughPairsError,
    OutputPathError,
    OverlappingPairsError,
    PlasticityError,
    PlasticityWarning,
    ReportFormatError,
    SmallSampleWarning,
    UnknownComponentError,
    UnsupportedModelError,
)
from .integrations.cards import attach_report, build_model_card, write_model_card
from .integrations.export import ExportError, export_lora, export_merged
from .integrations.hub import HubAuthError, HubPushError, push_to_hub
from .integrations.peft_hooks import install_peft_hooks
from .measure import measure_plasticity
from .report import ComponentStat, PlasticityReport
from .tuner import PlasticityConfig, PlasticityModel, load_adapter, plasticity_lora_config, select_modules
from .version import __version__

# save_pretrained/push_to_hub of a plasticity PEFT model write and upload our card
install_peft_hooks()

__all__ = [
    "COMPONENTS",
    "THEORETICAL_RANKING",
    "AdapterLoadError",
    "ComponentMap",
    "ComponentSpec",
    "ComponentStat",
    "EmptyDataError",
    "ExportError",
    "HubAuthError",
    "HubPushError",
    "HubUnreachableError",
    "InPlaceAdapterError",
    "InvalidInputError",
    "LegacyReportWarning",
    "MissingDataError",
    "ModelCardError",
    "NonFiniteError",
    "NotEnoughPairsError",
    "OutputPathError",
    "OverlappingPairsError",
    "PlasticityConfig",
    "PlasticityError",
    "PlasticityModel",
    "PlasticityReport",
    "PlasticityWarning",
    "ReportFormatError",
    "SmallSampleWarning",
    "UnknownComponentError",
    "UnsupportedModelError",
    "__version__",
    "attach_report",
    "build_model_card",
    "export_lora",
    "export_merged",
    "get_component_map",
    "load_adapter",
    "measure_plasticity",
    "plasticity_lora_config",
    "push_to_hub",
    "rank_components",
    "register_component_map",
    "registered_model_types",
    "resolve_components",
    "select_modules",
    "write_model_card",
]
