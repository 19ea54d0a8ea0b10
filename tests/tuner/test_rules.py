"""The selection-rule registry: a rule registered in one entry is read by the config, the CLI, the selection,
the saved adapter and the card, with no other change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from peft import get_peft_model

from hf_plasticity import InvalidInputError, PlasticityConfig, build_model_card, load_adapter, resolve_components
from hf_plasticity.components import rank_components
from hf_plasticity.integrations.training import parse_rule
from hf_plasticity.tuner.rules import RULES, SelectionRule, register
from tests.conftest import TINY_MODELS

SCORES = {"mha": 2.0, "ffn_fc1": 1.5, "ffn_fc2": 1.0, "ffn_norm": 0.5, "attn_norm": 0.1}


def _bottom(value: int, type_scores: dict[str, float]) -> list[str]:
    return rank_components(type_scores)[-value:]


def _check(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"bottom_k={value!r} must be an integer >= 1")
    return value


@pytest.fixture
def bottom_k() -> Iterator[SelectionRule]:
    """A toy rule (the k *least* plastic component types), registered for one test and removed after it."""
    rule = register(
        SelectionRule(
            name="bottom_k",
            syntax="bottom_k=K",
            check=_check,
            parse=int,
            select=lambda c, value: [p for p in c.ranked if c.components[p] in _bottom(value, c.type_scores)],
            describe=lambda value: f"the {value} least plastic component type(s)",
            trained_types=_bottom,
        )
    )
    yield rule
    del RULES[rule.name]


def test_the_builtin_rules_are_registered_in_the_config_order() -> None:
    assert list(RULES) == ["top_k", "budget", "threshold", "components"]


def test_a_registered_rule_is_one_entry_end_to_end(bottom_k: SelectionRule, tmp_path: Path) -> None:
    kwargs = parse_rule("bottom_k=1")
    assert kwargs == {"bottom_k": 1}
    config = PlasticityConfig(scores=SCORES, **kwargs)
    assert config.rule == "bottom_k" and config.top_k is None

    base = TINY_MODELS["vit"]()
    resolved = resolve_components(base)
    model = get_peft_model(base, config)
    chosen = model.peft_config["default"].selected_modules
    assert sorted(chosen) == sorted(resolved.paths["attn_norm"])  # SCORES ranks attn_norm last

    card = build_model_card(model)
    block = card.data.plasticity
    assert block["selection"]["rule"] == "bottom_k" and block["selection"]["value"] == 1
    assert block["trained"]["components"] == {"attn_norm": resolved.num_layers}
    assert "- **Rule:** `bottom_k=1`: the 1 least plastic component type(s)." in card.text

    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["bottom_k"] == 1 and saved["top_k"] is None
    loaded = load_adapter(TINY_MODELS["vit"](), tmp_path)
    again = loaded.peft_config["default"]
    assert again.rule == "bottom_k" and again.selected_modules == chosen

    del RULES["bottom_k"]  # a process that never registered the rule: PEFT drops the key, the saved modules stay
    try:
        with pytest.warns(UserWarning, match="bottom_k"):
            stranger = load_adapter(TINY_MODELS["vit"](), tmp_path)
        assert stranger.peft_config["default"].selected_modules == chosen
    finally:
        RULES["bottom_k"] = bottom_k


def test_a_registered_rule_is_checked_and_counted_as_a_rule(bottom_k: SelectionRule) -> None:
    with pytest.raises(InvalidInputError, match="must be an integer >= 1"):
        PlasticityConfig(bottom_k=0)
    with pytest.raises(InvalidInputError, match="choose one selection rule"):
        PlasticityConfig(bottom_k=1, top_k=1)
    with pytest.raises(InvalidInputError, match="bottom_k=K"):
        parse_rule("bottom_k=x")


def test_a_rule_name_is_registered_once() -> None:
    with pytest.raises(InvalidInputError, match="already registered"):
        register(RULES["top_k"])


def test_an_unregistered_rule_is_not_understood() -> None:
    with pytest.raises(InvalidInputError, match="not understood"):
        parse_rule("bottom_k=1")
    with pytest.raises(TypeError):
        PlasticityConfig(bottom_k=1)
