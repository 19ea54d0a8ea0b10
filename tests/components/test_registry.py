"""The component registry: the one ranking rule, map validation, registration, lookup and binding to a model."""

from __future__ import annotations

import math

import pytest

from hf_plasticity.components import (
    COMPONENTS,
    ComponentMap,
    ComponentSpec,
    get_component_map,
    rank_components,
    register_component_map,
    registered_model_types,
    resolve_components,
    validate_components,
)
from hf_plasticity.components import registry as component_registry
from hf_plasticity.errors import ComponentMapError, UnknownComponentError, UnsupportedModelError
from tests.conftest import TINY_MODELS

RANKING_CASES = {
    # scores -> expected order: highest first; ties in COMPONENTS order; missing or non-finite scores last
    "by-score": ({"mha": 1.0, "ffn_fc1": 3.0, "attn_norm": 2.0}, ["ffn_fc1", "attn_norm", "mha"]),
    "tie-canonical": ({"ffn_fc2": 1.0, "attn_norm": 1.0, "mha": 1.0}, ["attn_norm", "mha", "ffn_fc2"]),
    "nan-last": ({"mha": math.nan, "ffn_norm": 0.5}, ["ffn_norm", "mha"]),
    "none-last": ({"ffn_fc1": None, "ffn_fc2": -1.0}, ["ffn_fc2", "ffn_fc1"]),
    "inf-last": ({"mha": math.inf, "attn_norm": 0.0}, ["attn_norm", "mha"]),
}


@pytest.mark.parametrize("case", sorted(RANKING_CASES), ids=sorted(RANKING_CASES))
def test_rank_components(case: str) -> None:
    scores, expected = RANKING_CASES[case]
    assert rank_components(scores) == expected


def _spec_map(names: list[str]) -> dict[str, ComponentSpec]:
    return {name: ComponentSpec(f"block.{name}") for name in names}


def test_a_map_must_name_every_component() -> None:
    with pytest.raises(ComponentMapError, match="lacks \\['ffn_fc2'\\]"):
        ComponentMap(
            family="half", model_types=("half",), layers="layers", components=_spec_map(list(COMPONENTS[:-1]))
        )


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, ComponentMap]:
    """A copy of the registry, restored after the test."""
    copy = dict(component_registry._REGISTRY)
    monkeypatch.setattr(component_registry, "_REGISTRY", copy)
    return copy


def test_registering_over_another_map_needs_overwrite(registry: dict[str, ComponentMap]) -> None:
    other = ComponentMap(family="other", model_types=("vit",), layers="layers", components=_spec_map(list(COMPONENTS)))
    with pytest.raises(ComponentMapError, match="overwrite=True"):
        register_component_map(other)
    assert registry["vit"].family == "vit"
    assert register_component_map(other, overwrite=True) is other
    assert get_component_map("vit") is other


def test_registering_the_same_map_again_is_harmless(registry: dict[str, ComponentMap]) -> None:
    same = registry["vit"]
    assert register_component_map(same) is same
    assert registered_model_types() == sorted(registry)


def test_unknown_model_type_names_the_fix() -> None:
    with pytest.raises(UnsupportedModelError, match="register_component_map"):
        get_component_map("swin")


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, COMPONENTS), ("mha", ("mha",)), (["ffn_fc2", "attn_norm"], ("attn_norm", "ffn_fc2"))],
    ids=["all", "one-name", "canonical-order"],
)
def test_validate_components(given: object, expected: tuple[str, ...]) -> None:
    assert validate_components(given) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("given", "match"), [(["mlp"], "unknown component"), ([], "no component selected")])
def test_validate_components_rejects(given: list[str], match: str) -> None:
    with pytest.raises(UnknownComponentError, match=match):
        validate_components(given)


@pytest.mark.parametrize("family", sorted(TINY_MODELS), ids=sorted(TINY_MODELS))
def test_resolved_paths_exist_in_the_model(family: str) -> None:
    model = TINY_MODELS[family]()
    resolved = resolve_components(model)
    names = dict(model.named_modules())
    assert resolved.num_layers == model.config.num_hidden_layers
    for layer, comp, path in resolved.iter_modules():
        assert path in names and f".{layer}." in path
        assert resolved.component(layer, comp) is names[path]
    assert resolved.embeddings_path in names


def test_one_tie_break_for_types_modules_and_cells() -> None:
    """Equal scores: the shallower layer first, then canonical component order, whatever the mapping's order."""
    places = {"l1.mha": (1, "mha"), "l0.ffn_norm": (0, "ffn_norm"), "l0.mha": (0, "mha"), "l1.best": (1, "ffn_fc1")}
    scores = {"l1.mha": 1.0, "l0.ffn_norm": 1.0, "l0.mha": 1.0, "l1.best": 2.0}
    assert rank_components(scores, places) == ["l1.best", "l0.mha", "l0.ffn_norm", "l1.mha"]
    assert rank_components({"ffn_norm": 1.0, "mha": 1.0, "attn_norm": float("nan")}) == [
        "mha",
        "ffn_norm",
        "attn_norm",
    ]


def test_report_ranked_modules_and_card_cells_follow_the_one_rule() -> None:
    import warnings

    import numpy as np

    from hf_plasticity import measure_plasticity
    from hf_plasticity.integrations.cards.metadata import _top
    from tests.conftest import TINY_MODELS, pixels

    report = measure_plasticity(TINY_MODELS["vit"](), pixels(8, seed=3), num_pairs=4, progress=False)
    means = report.module_means()
    places = {p: (layer, c) for c in report.components for layer, p in enumerate(report.module_paths[c])}
    assert report.ranked_modules() == rank_components(means, places)
    cells = [{"layer": layer, "component": c, "score": 1.0} for layer in (1, 0) for c in reversed(report.components)]
    assert [(c["layer"], c["component"]) for c in _top(cells)][:2] == [
        (0, report.components[0]),
        (0, report.components[1]),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert report.module_scores() == means
    assert any(issubclass(w.category, FutureWarning) and "module_means" in str(w.message) for w in caught)
    assert np.isfinite(list(means.values())).all()
