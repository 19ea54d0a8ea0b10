"""hf_plasticity: which transformer components should you finetune? Measure their plasticity."""

from __future__ import annotations

__version__ = "0.1.0"

from .components import (
    COMPONENTS,
    THEORETICAL_RANKING,
    ComponentMap,
    ComponentSpec,
    get_component_map,
    register_component_map,
    registered_model_types,
    resolve_components,
)
from .errors import (
    EmptyDataError,
    InPlaceAdapterError,
    InvalidInputError,
    MissingDataError,
    NotEnoughPairsError,
    OverlappingPairsError,
    PlasticityError,
    ReportFormatError,
    UnknownComponentError,
    UnsupportedModelError,
)
from .estimator import measure_plasticity
from .report import ComponentStat, PlasticityReport
from .tuner import PlasticityConfig, PlasticityModel, load_adapter, select_modules

__all__ = [
    "COMPONENTS",
    "THEORETICAL_RANKING",
    "ComponentMap",
    "ComponentSpec",
    "ComponentStat",
    "EmptyDataError",
    "InPlaceAdapterError",
    "InvalidInputError",
    "MissingDataError",
    "NotEnoughPairsError",
    "OverlappingPairsError",
    "PlasticityConfig",
    "PlasticityError",
    "PlasticityModel",
    "PlasticityReport",
    "ReportFormatError",
    "UnknownComponentError",
    "UnsupportedModelError",
    "__version__",
    "get_component_map",
    "load_adapter",
    "measure_plasticity",
    "register_component_map",
    "registered_model_types",
    "resolve_components",
    "select_modules",
]
