"""The model card tells the whole truth: what chose the modules, no local path, metadata that scales."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from peft import get_peft_model
from transformers import AutoModelForImageClassification

from hf_plasticity import PlasticityConfig, PlasticityReport, build_model_card, measure_plasticity, write_model_card
from hf_plasticity.cli import main
from hf_plasticity.components import THEORETICAL_RANKING
from hf_plasticity.integrations.cards import BASE_PLACEHOLDER, CARD_NAME, TOP_MODULES
from tests.conftest import TINY_MODELS, pixels


@pytest.fixture(scope="module")
def report() -> PlasticityReport:
    """Tiny random ViT: its LayerNorms measure above their bounds (token spread < 1), so `auto` falls back."""
    r = measure_plasticity(TINY_MODELS["vit"](), pixels(24, seed=3), progress=False)
    assert r.exceeding_bounds(), "the fixture must exercise the auto fallback"
    return r


def _theory_top(k: int = 1) -> set[str]:
    return set(THEORETICAL_RANKING[:k])


# (config kwargs, selected_by, fallback recorded, trained types, a sentence the card must say, one it must not)
CASES = {
    "measured": (
        {"top_k": 1, "signal": "measured"},
        "measured ranking",
        False,
        None,  # the measured top type, from the report
        "chosen by the `top_k` rule from the measured ranking",
        "theoretical ranking (",
    ),
    "auto-fallback": (
        {"top_k": 1},
        "theoretical ranking",
        True,
        _theory_top(),
        "not from the measurement below, which was set aside",
        "as measured",
    ),
    "theory": (
        {"top_k": 1, "signal": "theory"},
        "theoretical ranking",
        False,
        _theory_top(),
        'as asked (`signal="theory"`), not from the measurement below',
        "as measured",
    ),
    "named": (
        {"components": ["ffn_fc2"]},
        "named components",
        False,
        {"ffn_fc2"},
        "trains the component types `ffn_fc2`, as it was told",
        "as measured",
    ),
}


def _case_model(report: PlasticityReport, case: str):
    return get_peft_model(TINY_MODELS["vit"](), PlasticityConfig.from_report(report, **CASES[case][0]))


def _ticked(text: str) -> set[str]:
    """Component types whose row of the card's ranking table is marked trained."""
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \| \w+ \|", line)]
    return {row.split(" | ")[1] for row in rows if row.rstrip(" |").endswith("✓")}


@pytest.mark.parametrize("case", sorted(CASES), ids=sorted(CASES))
def test_metadata_says_what_chose_the_modules(report, case: str) -> None:
    kwargs, by, has_fallback, trained, _, _ = CASES[case]
    block = build_model_card(_case_model(report, case)).data.plasticity
    assert block["selected_by"] == by and block["signal"] == kwargs.get("signal", "auto")
    assert (block["fallback"] is not None) == has_fallback
    if has_fallback:  # the recorded reason names the LayerNorm that exceeded its bound
        assert "LayerNorm" in block["fallback"] and "theoretical bound" in block["fallback"]
    expected = trained or {report.ranking()[0]}
    assert {r["component"] for r in block["ranking"] if r["trained"]} == expected
    assert set(block["trained"]["components"]) == expected


@pytest.mark.parametrize("case", sorted(CASES), ids=sorted(CASES))
def test_card_body_says_what_chose_the_modules(report, case: str) -> None:
    _, _, has_fallback, trained, says, never = CASES[case]
    text = build_model_card(_case_model(report, case)).text
    assert says in text and never not in text
    assert ("**Why not the measured ranking:**" in text) == (case in ("auto-fallback", "theory"))
    if has_fallback:  # in plain words, with the facts of this measurement
        comp, layer, value, bound = max(report.exceeding_bounds(), key=lambda c: c[2] / c[3])
        assert f"the largest, `{comp}` of layer {layer}, at {value:.3g} against a bound of {bound:.3g}" in text
        assert "set the measurement aside" in text
    assert _ticked(text) == (trained or {report.ranking()[0]})


def test_saved_adapter_card_keeps_the_reason_without_the_report(report, tmp_path: Path) -> None:
    """adapter_config.json alone (no plasticity_report.json beside it) still says why, and in what order."""
    _case_model(report, "auto-fallback").save_pretrained(tmp_path)
    (tmp_path / "plasticity_report.json").unlink()
    block = build_model_card(tmp_path).data.plasticity
    assert block["selected_by"] == "theoretical ranking" and "LayerNorm" in block["fallback"]
    assert [r["component"] for r in block["ranking"]] == report.ranking()  # the measured order, as measured
    assert {r["component"] for r in block["ranking"] if r["trained"]} == _theory_top()


def test_theory_without_a_measurement_says_none_was_made() -> None:
    text = build_model_card(get_peft_model(TINY_MODELS["vit"](), PlasticityConfig())).text
    assert "from the paper's theoretical ranking (mha > ffn_fc1" in text and "no measurement was made" in text


# ------------------------------------------------------------------------------------------ no local paths
ABSOLUTE = re.compile(r"(?:^|[\s`'\"(=:])(/(?:[\w.~-]+/)+[\w.~-]*)", re.MULTILINE)


def _local_cards(report_unused, tmp_path: Path) -> dict[str, str]:
    base = tmp_path / "checkpoints" / "my-vit"
    TINY_MODELS["vit"]().save_pretrained(base)
    model = AutoModelForImageClassification.from_pretrained(base)
    measured = measure_plasticity(model, pixels(16, seed=1), progress=False, data_name=str(tmp_path / "imgs"))
    saved = measured.save(tmp_path / "report.json")
    peft_model = get_peft_model(model, PlasticityConfig(scores=str(saved), top_k=1))
    peft_model.save_pretrained(tmp_path / "adapter")
    assert main(["card", "--report", str(saved), "--out", str(tmp_path / "cli.md")]) == 0
    return {
        "model": str(build_model_card(peft_model)),
        "config": str(build_model_card(peft_model.peft_config["default"])),
        "report": str(build_model_card(measured)),
        "saved-folder": str(build_model_card(tmp_path / "adapter")),
        "save_pretrained": (tmp_path / "adapter" / CARD_NAME).read_text(),
        "cli": (tmp_path / "cli.md").read_text(),
    }


def test_no_card_names_a_path_of_this_machine(report, tmp_path: Path) -> None:
    for name, text in _local_cards(report, tmp_path).items():
        assert str(tmp_path) not in text, name
        assert not ABSOLUTE.findall(text), (name, ABSOLUTE.findall(text))


def test_a_local_base_model_is_named_as_such_with_a_placeholder(tmp_path: Path) -> None:
    base = tmp_path / "my-vit"
    TINY_MODELS["vit"]().save_pretrained(base)
    model = get_peft_model(AutoModelForImageClassification.from_pretrained(base), PlasticityConfig())
    card = build_model_card(model)
    assert card.data.base_model is None
    assert "A finetune of a local checkpoint (not on the Hub)" in card.text
    assert f'from_pretrained("{BASE_PLACEHOLDER}"' in card.text and "was a local checkpoint" in card.text


def test_the_report_model_id_names_the_base_when_the_config_has_a_path(report, tmp_path: Path) -> None:
    base = tmp_path / "vit-fashion-mnist"
    TINY_MODELS["vit"]().save_pretrained(base)
    model = AutoModelForImageClassification.from_pretrained(base)
    named = replace(report, model={**report.model, "model_id": "someone/vit-tiny"})
    card = build_model_card(get_peft_model(model, PlasticityConfig.from_report(named)))
    assert card.data.base_model == "someone/vit-tiny"
    assert 'from_pretrained("someone/vit-tiny"' in card.text and "A finetune of `someone/vit-tiny`" in card.text


# ------------------------------------------------------------------------------------------ metadata that scales
def _deep_report(layers: int = 80, pairs: int = 8) -> PlasticityReport:
    """A synthetic report of an ``layers``-deep ViT: random rates, statistics computed from them."""
    comps = ("mha", "ffn_fc1", "ffn_fc2", "attn_norm", "ffn_norm")
    rates = np.random.default_rng(0).gamma(2.0, 0.5, size=(pairs, layers, len(comps)))
    names = {"mha": "attention", "ffn_fc1": "mlp.fc1", "ffn_fc2": "mlp.fc2", "attn_norm": "layernorm_before",
             "ffn_norm": "layernorm_after"}  # fmt: skip
    return PlasticityReport(
        components=comps,
        module_paths={c: [f"vit.layers.{i}.{names[c]}" for i in range(layers)] for c in comps},
        count=np.full((layers, len(comps)), pairs),
        sum=rates.sum(0),
        sum_sq=(rates**2).sum(0),
        excluded=np.zeros((layers, len(comps)), dtype=int),
        protocol="shared",
        num_pairs=pairs,
        data_name="digits",
        model={"model_id": "someone/vit-80", "model_type": "vit"},
        rates=rates,
    )


@pytest.mark.parametrize("source", ["report", "config"], ids=["report", "config"])
def test_metadata_of_an_80_layer_model_stays_small_and_loads(source: str, tmp_path: Path) -> None:
    deep = _deep_report()
    card = build_model_card(deep if source == "report" else PlasticityConfig.from_report(deep, signal="measured"))
    write_model_card(card, tmp_path)
    text = (tmp_path / CARD_NAME).read_text()
    yaml = text.split("---\n")[1]
    assert len(yaml.encode()) < 4_096, len(yaml.encode())  # about 2.0-2.5 KB: a few KB at any depth
    block = ModelCard.load(tmp_path / CARD_NAME).data.plasticity
    assert block["num_layers"] == 80 and len(block["top_modules"]) == TOP_MODULES
    best = np.unravel_index(np.argmax(deep.mean), deep.mean.shape)  # the most plastic cell, from the statistics
    assert (block["top_modules"][0]["layer"], block["top_modules"][0]["component"]) == (
        int(best[0]),
        deep.components[best[1]],
    )
    body_rows = [line for line in text.split("<details>")[1].splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split(" | ")[0].strip("| ")) for row in body_rows] == list(range(80))  # full table, collapsed


def test_a_config_not_yet_applied_claims_no_module_count(report) -> None:
    card = build_model_card(PlasticityConfig.from_report(report, top_k=1))
    assert card.data.plasticity["trained"] == {"modules": None, "components": {"mha": None}}
    assert "trains the modules chosen by the `top_k` rule" in card.text and "None" not in card.text


@pytest.mark.parametrize(
    "model_id, opening",
    [("someone/vit-tiny", "`someone/vit-tiny`, with the plasticity"), ("", "This model, with the plasticity")],
    ids=["hub-id", "unnamed"],
)
def test_a_measured_model_card_names_the_model_it_measured(report, model_id: str, opening: str) -> None:
    named = replace(report, model={**report.model, "model_id": model_id})
    text = build_model_card(named).text
    assert opening in text


@pytest.mark.parametrize(
    "name, published, hub",
    [
        ("google/vit-base-patch16-224", "google/vit-base-patch16-224", "google/vit-base-patch16-224"),
        ("digits", "digits", "digits"),
        ("/home/me/models/my-vit/", "a local checkpoint (my-vit)", None),
        ("./my-vit", "a local checkpoint (my-vit)", None),
        ("~/my-vit", "a local checkpoint (my-vit)", None),
        ("C:\\models\\my-vit", "a local checkpoint (my-vit)", None),
    ],
    ids=["hub-id", "bare-name", "absolute", "relative", "home", "windows"],
)
def test_names_fit_to_publish(name: str, published: str, hub: str | None) -> None:
    from hf_plasticity.integrations.cards.sources import hub_id, public_name

    assert public_name(name, "checkpoint") == published
    assert hub_id(name) == hub
