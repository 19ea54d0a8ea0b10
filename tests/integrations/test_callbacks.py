"""PlasticityCallback: what it logs, the series it keeps, and the settings it refuses before training."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import SwinConfig, SwinForImageClassification, Trainer, TrainerControl, TrainerState

from hf_plasticity import (
    InvalidInputError,
    PlasticityConfig,
    PlasticityWarning,
    UnsupportedModelError,
    measure_plasticity,
    plasticity_lora_config,
)
from hf_plasticity.integrations.callbacks import PlasticityCallback
from hf_plasticity.integrations.training import finetune
from hf_plasticity.report.series import PlasticitySeries
from tests.conftest import TINY, TINY_MODELS, pixels
from tests.integrations.test_training import tiny_data, training_args

PAIRS = (pixels(6, seed=7), pixels(6, seed=8))


def attention_params(model: torch.nn.Module) -> torch.Tensor:
    """All parameters of every layer's attention block, flattened: W of the mha component type."""
    return torch.cat(
        [p.detach().reshape(-1) for n, p in model.named_parameters() if ".attention." in n and "classifier" not in n]
    )


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlasticityCallback, object, Path]:
    out = tmp_path_factory.mktemp("watched")
    callback = PlasticityCallback(PAIRS, every=2, batch_size=4)
    result = finetune(
        TINY_MODELS["vit"](), tiny_data(), None, PlasticityConfig(components=["mha"]),
        training_args(out, max_steps=4, logging_steps=2), callbacks=[callback], save=False,
    )  # fmt: skip
    return callback, result, out


def test_logs_reach_the_trainer_log_history(watched: tuple) -> None:
    _, result, _ = watched
    logs = [e for e in result.trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logs] == [2, 4]
    for entry in logs:
        assert entry["plasticity/grad_norm/mha"] > 0
        assert entry["plasticity/weight_change/mha"] > 0
        assert math.isfinite(entry["plasticity/mha"])
        assert "plasticity/grad_norm/ffn_fc1" not in entry  # only trained components have gradients


def test_weight_change_is_relative_distance_from_the_start(watched: tuple) -> None:
    _, result, _ = watched
    start = attention_params(TINY_MODELS["vit"]())  # the same seeded initial model
    now = attention_params(result.model.base_model.model)
    expected = float(torch.linalg.norm(now.double() - start.double()) / torch.linalg.norm(start.double()))
    logged = result.trainer.state.log_history[-2]["plasticity/weight_change/mha"]  # the step-4 training log
    assert logged == pytest.approx(expected, rel=1e-6)


def test_series_remeasures_on_the_held_out_pairs(watched: tuple) -> None:
    callback, _, _ = watched
    assert [row["step"] for row in callback.series.plasticity] == [0, 2, 4]
    initial = measure_plasticity(TINY_MODELS["vit"](), PAIRS[1], PAIRS[0], num_pairs=6, batch_size=4, progress=False)
    assert callback.series.plasticity[0]["mha"] == pytest.approx(initial.scores()["mha"], rel=1e-12)
    assert callback.series.plasticity[-1]["mha"] != callback.series.plasticity[0]["mha"]  # attention was trained
    # untrained components: the same functions, the same plasticity
    assert callback.series.plasticity[-1]["ffn_fc2"] == pytest.approx(initial.scores()["ffn_fc2"], rel=1e-12)


def test_series_and_figure_are_written_and_reload(watched: tuple) -> None:
    callback, _, out = watched
    loaded = PlasticitySeries.load(out / "plasticity_series.json")
    assert loaded.plasticity == callback.series.plasticity
    assert loaded.weight_change == callback.series.weight_change
    assert (out / "plasticity_series.png").stat().st_size > 0


def test_lora_weight_change_is_the_effective_update(tmp_path: Path) -> None:
    """A PEFT LoRA adapter (hf_plasticity's one LoRA): the change of W + scaling * B A, not of the factors."""
    callback = PlasticityCallback()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["fc1"], modules_to_save=["classifier"])
    result = finetune(
        get_peft_model(TINY_MODELS["vit"](), lora), tiny_data(), None, None,
        training_args(tmp_path, max_steps=2, logging_steps=2), callbacks=[callback], save=False,
    )  # fmt: skip
    base = result.model.base_model.model
    deltas, weights = [], []
    for layer in base.vit.layers:
        fc1 = layer.mlp.fc1
        a, b = fc1.lora_A["default"].weight, fc1.lora_B["default"].weight
        deltas.append((b @ a * fc1.scaling["default"]).detach().reshape(-1))
        weights.append(fc1.base_layer.weight.detach().reshape(-1))
    expected = float(torch.linalg.norm(torch.cat(deltas)) / torch.linalg.norm(torch.cat(weights)))
    assert callback.series.weight_change[-1]["ffn_fc1"] == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def _begin(callback: PlasticityCallback, model: torch.nn.Module, tmp_path: Path) -> None:
    callback.on_train_begin(training_args(tmp_path), TrainerState(), TrainerControl(), model=model)


@pytest.mark.parametrize("every", [0, -5, 1.5, True], ids=["zero", "negative", "float", "bool"])
def test_bad_interval_is_refused(every: object) -> None:
    with pytest.raises(InvalidInputError, match="positive integer"):
        PlasticityCallback(PAIRS, every=every)  # type: ignore[arg-type]


def test_interval_without_pairs_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no pairs"):
        PlasticityCallback(every=5)


BAD_PAIRS = {
    "three-dims": (torch.zeros(4, 16, 16), torch.zeros(4, 16, 16)),
    "different-shapes": (pixels(4), pixels(5)),
    "wrong-channels": (torch.zeros(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)),
    "wrong-size": (torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8)),
    "one-tensor": (pixels(4),),
}


@pytest.mark.parametrize("name", list(BAD_PAIRS))
def test_bad_pairs_fail_at_train_begin_before_any_step(tmp_path: Path, name: str) -> None:
    model = TINY_MODELS["vit"]()
    before = attention_params(model).clone()
    callback = PlasticityCallback(BAD_PAIRS[name], every=2)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        finetune(
            model, tiny_data(), None, PlasticityConfig(components=["mha"]), training_args(tmp_path),
            callbacks=[callback], save=False,
        )  # fmt: skip
    assert torch.equal(attention_params(model), before)  # no step ran


def test_model_without_component_map_fails_at_train_begin(tmp_path: Path) -> None:
    swin = SwinForImageClassification(
        SwinConfig(embed_dim=8, depths=[1], num_heads=[2], image_size=16, patch_size=4, window_size=2)
    )
    with pytest.raises(UnsupportedModelError, match="register_component_map"):
        _begin(PlasticityCallback(), swin, tmp_path)


def test_peft_wrapped_model_is_watched_through_its_base(tmp_path: Path) -> None:
    callback = PlasticityCallback()
    _begin(callback, get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["ffn_norm"])), tmp_path)
    assert callback.series.meta["trained_components"] == ["ffn_norm"]
    assert TINY["num_hidden_layers"] * 2 == len(callback._groups["ffn_norm"])  # weight and bias per layer


# ------------------------------------------------------------------------------------------ resume
def _adapted(mode: str) -> torch.nn.Module:
    """Plasticity's attention trained whole, or PEFT LoRA with ranks from the measured plasticity."""
    model = TINY_MODELS["vit"]()
    if mode == "lora":
        report = measure_plasticity(model, PAIRS[1], PAIRS[0], num_pairs=6, batch_size=4, progress=False)
        return get_peft_model(model, plasticity_lora_config(report, budget=0.1, model=model))
    return get_peft_model(model, PlasticityConfig(components=["mha"]))


def _watched_run(out: Path, mode: str) -> tuple[PlasticityCallback, object]:
    callback = PlasticityCallback(PAIRS, every=2, batch_size=4)
    args = training_args(out, max_steps=4, logging_steps=1, save_strategy="steps", save_steps=2)
    result = finetune(_adapted(mode), tiny_data(), None, None, args, callbacks=[callback], save=False)
    return callback, result


def _plasticity_logs(result: object) -> dict[int, dict[str, float]]:
    return {
        e["step"]: {k: v for k, v in e.items() if k.startswith("plasticity/")}
        for e in result.trainer.state.log_history  # type: ignore[attr-defined]
        if "loss" in e
    }


@pytest.mark.parametrize(
    ("mode", "where"),
    [("full", "same"), ("full", "elsewhere"), ("lora", "same")],
    ids=["full-same-output-dir", "full-other-output-dir", "plasticity-lora-config-same-output-dir"],
)
def test_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path: Path, mode: str, where: str) -> None:
    """4 steps at once against 2 steps, a checkpoint, and 2 more resumed from it: the same weight change
    (from the pretrained weights, not the checkpoint's), gradient norms, plasticity and series."""
    whole_cb, whole = _watched_run(tmp_path / "whole", mode)
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert (checkpoint / "plasticity_callback.safetensors").is_file()
    out = tmp_path / "whole" if where == "same" else tmp_path / "resumed"
    resumed_cb = PlasticityCallback(PAIRS, every=2, batch_size=4)
    args = training_args(
        out, max_steps=4, logging_steps=1, save_strategy="steps", save_steps=2, resume_from_checkpoint=str(checkpoint)
    )
    resumed = finetune(_adapted(mode), tiny_data(), None, None, args, callbacks=[resumed_cb], save=False)
    expected, got = _plasticity_logs(whole), _plasticity_logs(resumed)
    assert sorted(got) == [1, 2, 3, 4] and got[3]  # the resumed run's history holds the checkpoint's logs too
    for step in (3, 4):
        assert got[step].keys() == expected[step].keys()
        for key, value in expected[step].items():
            assert got[step][key] == pytest.approx(value, rel=1e-5, abs=1e-9), (step, key)
    for part in ("plasticity", "weight_change", "grad_norm"):
        a, b = getattr(whole_cb.series, part), getattr(resumed_cb.series, part)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for row_a, row_b in zip(a, b, strict=True):
            assert row_b == pytest.approx(row_a, rel=1e-5, abs=1e-9)


def test_resume_without_the_callback_state_warns(tmp_path: Path) -> None:
    _watched_run(tmp_path / "whole", "full")
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    (checkpoint / "plasticity_callback.safetensors").unlink()
    callback = PlasticityCallback(PAIRS, every=2, batch_size=4)
    args = training_args(tmp_path / "b", max_steps=4, logging_steps=1, resume_from_checkpoint=str(checkpoint))
    with pytest.warns(PlasticityWarning, match="restarts"):
        finetune(
            TINY_MODELS["vit"](), tiny_data(), None, PlasticityConfig(components=["mha"]), args,
            callbacks=[callback], save=False,
        )  # fmt: skip


def _plain_trainer_run(out: Path, resume: bool) -> tuple[PlasticityCallback, Trainer]:
    g = torch.Generator().manual_seed(0)
    rows = [{"pixel_values": p, "labels": int(torch.randint(0, 3, (), generator=g))} for p in pixels(16, seed=7)]
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["mha"]))
    callback = PlasticityCallback(PAIRS, every=2, batch_size=4)
    args = training_args(out, max_steps=4, logging_steps=1, save_strategy="steps", save_steps=2)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
    trainer.train(resume_from_checkpoint=True if resume else None)
    return callback, trainer


def test_resume_finds_the_state_under_output_dir(tmp_path: Path) -> None:
    """A plain Trainer resumed with ``resume_from_checkpoint=True`` (its last checkpoint under output_dir)."""
    whole_cb, whole = _plain_trainer_run(tmp_path, resume=False)
    expected = {e["step"]: e for e in whole.state.log_history if "loss" in e}
    shutil.rmtree(tmp_path / "checkpoint-4")  # so the last checkpoint is the halfway one
    resumed_cb, resumed = _plain_trainer_run(tmp_path, resume=True)
    got = {e["step"]: e for e in resumed.state.log_history if "loss" in e}
    for step in (3, 4):
        for key in ("plasticity/weight_change/mha", "plasticity/grad_norm/mha"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5), (step, key)
    assert [r["step"] for r in resumed_cb.series.plasticity] == [r["step"] for r in whole_cb.series.plasticity]
