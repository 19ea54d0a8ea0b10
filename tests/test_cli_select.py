"""``hf-plasticity select``: a saved report to a LoraConfig's keyword arguments, or to modules/blocks to train."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model

from hf_plasticity import measure_plasticity
from hf_plasticity.cli import main
from tests.conftest import TINY_MODELS, pixels


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("select")
    model = TINY_MODELS["vit"]()
    model.save_pretrained(folder / "model")
    measure_plasticity(model, pixels(16, seed=7), progress=False).save(folder / "report.json")
    return folder / "model", folder / "report.json"


def test_top_p_writes_lora_kwargs_that_peft_takes(saved, tmp_path: Path, capsys) -> None:
    model_dir, report = saved
    out = tmp_path / "lora.json"
    argv = ["select", "--report", str(report), "--model", str(model_dir), "--top_p", "0.25", "--r", "4"]
    assert main([*argv, "--output", str(out)]) == 0
    kwargs = json.loads(out.read_text())
    assert len(kwargs["target_modules"]) == max(1, math.floor(12 * 0.25))
    assert kwargs["r"] == kwargs["lora_alpha"] == 4
    peft_model = get_peft_model(TINY_MODELS["vit"](), LoraConfig(**kwargs))
    wrapped = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(kwargs["target_modules"])
    assert f"wrote {out}" in capsys.readouterr().out


def test_budget_writes_a_rank_pattern(saved, tmp_path: Path) -> None:
    model_dir, report = saved
    out = tmp_path / "lora.json"
    assert (
        main(["select", "--report", str(report), "--model", str(model_dir), "--budget", "0.2", "--output", str(out)])
        == 0
    )
    kwargs = json.loads(out.read_text())
    assert set(kwargs["rank_pattern"]) == set(kwargs["target_modules"])
    assert kwargs["r"] == max(kwargs["rank_pattern"].values())


def test_block_unit_writes_modules_and_a_parameter_pattern(saved, tmp_path: Path) -> None:
    model_dir, report = saved
    out = tmp_path / "blocks.json"
    argv = ["select", "--report", str(report), "--model", str(model_dir), "--unit", "block", "--num-modules", "1"]
    assert main([*argv, "--output", str(out)]) == 0
    found = json.loads(out.read_text())
    assert len(found["modules"]) == 1 and re.fullmatch(r"vit\.layers\.[01]", found["modules"][0])
    names = [n for n, _ in TINY_MODELS["vit"]().named_parameters()]
    trained = [n for n in names if re.fullmatch(found["pattern"], n)]
    assert trained == [n for n in names if n.startswith((found["modules"][0] + ".", "classifier."))]


def test_budget_with_a_whole_module_unit_is_refused_and_writes_nothing(saved, tmp_path: Path, capsys) -> None:
    model_dir, report = saved
    out = tmp_path / "x.json"
    argv = ["select", "--report", str(report), "--model", str(model_dir), "--unit", "module", "--budget", "0.1"]
    assert main([*argv, "--output", str(out)]) == 2
    assert "--budget" in capsys.readouterr().err
    assert not out.exists()
