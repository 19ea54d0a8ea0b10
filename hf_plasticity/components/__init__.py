"""The component-map registry: the one place that knows where each architecture keeps its components.

Everything else (the estimator, the bounds, the PEFT tuner, model cards) asks this module which modules exist
and what each component is (a norm and its gain rule, one linear or several stacked, attention with its
projections and auxiliary inputs), never module names or shapes; so supporting a new architecture is one
:func:`register_component_map` call plus one row in ``tests/components/test_families.py``, whose brute force checks it
against the definition of each component (``docs/architectures.md``).
"""

from . import families  # registers every supported family
from .registry import (
    ResolvedComponents,
    get_component_map,
    refuse_model_type,
    refused_model_types,
    register_component_map,
    registered_maps,
    registered_model_types,
    resolve_components,
    validate_components,
)
from .specs import (
    COMPONENT_DESCRIPTIONS,
    COMPONENTS,
    THEORETICAL_RANKING,
    AttentionSpec,
    ComponentMap,
    ComponentSpec,
    LinearSpec,
    NormSpec,
    rank_components,
)

__all__ = [
    "COMPONENTS",
    "COMPONENT_DESCRIPTIONS",
    "THEORETICAL_RANKING",
    "AttentionSpec",
    "ComponentMap",
    "ComponentSpec",
    "LinearSpec",
    "NormSpec",
    "ResolvedComponents",
    "families",
    "get_component_map",
    "rank_components",
    "refuse_model_type",
    "refused_model_types",
    "register_component_map",
    "registered_maps",
    "registered_model_types",
    "resolve_components",
    "validate_components",
]
