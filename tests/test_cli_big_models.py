"""``hf-plasticity measure`` on a causal LM: big-model loading flags, and the Axolotl list and LoraConfig it writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from peft import LoraConfig, get_peft_model

from hf_plasticity.cli import main
from hf_plasticity.report.report import PlasticityReport
from hf_plasticity.tuner import plasticity_lora_config, select_modules
from hf_plasticity.tuner.config import PlasticityConfig
from tests.text_data import DOWNSTREAM_TEXT, REFERENCE_TEXT, save_with_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm-cli")
    paths = {"reference": root / "reference.txt", "data": root / "downstream.txt"}
    paths["reference"].write_text("\n\n".join(REFERENCE_TEXT), encoding="utf-8")
    paths["data"].write_text("\n\n".join(DOWNSTREAM_TEXT), encoding="utf-8")
    paths["llama"] = save_with_tokenizer(tiny_llama(), root / "llama")
    return paths


def _measure(corpus: dict[str, Path], out: Path, *extra: str) -> int:
    argv = ["measure", "--model", str(corpus["llama"]), "--data", str(corpus["data"]), "--reference"]
    argv += [str(corpus["reference"]), "--seq-len", "16", "--num-pairs", "12", "--batch-size", "4"]
    return main([*argv, "--out", str(out), "--no-progress", *extra])


def axolotl_match(pattern: str, name: str) -> bool:
    """Axolotl's documented rule: ``re.match`` from the name's start, a dot literal unless it precedes ``+``."""
    return re.match(re.sub(r"\.(?!\+)", "\\\\.", pattern), name) is not None


def test_axolotl_list_unfreezes_the_selected_modules(corpus: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert _measure(corpus, tmp_path / "r.json", "--unfrozen-budget", "0.3") == 0
    assert "Axolotl unfrozen_parameters" in capsys.readouterr().out
    config = yaml.safe_load((tmp_path / "r.axolotl.yaml").read_text(encoding="utf-8"))
    patterns = config["unfrozen_parameters"]
    assert patterns and all(isinstance(p, str) for p in patterns)
    model = tiny_llama()
    report = PlasticityReport.load(tmp_path / "r.json")
    chosen = select_modules(model, PlasticityConfig(scores=report, budget=0.3, modules_to_save=[]))
    names = [n for n, _ in model.named_parameters()]
    unfrozen = {n for n in names if any(axolotl_match(p, n) for p in patterns)}
    wanted = {n for n in names if any(n.startswith(f"{m}.") for m in chosen.modules)}
    assert unfrozen == wanted
    assert sum(model.get_parameter(n).numel() for n in unfrozen) <= 0.3 * sum(p.numel() for p in model.parameters())
    assert [p.removeprefix("^").removesuffix(".") for p in patterns] == chosen.modules  # most plastic first
    assert all(any(re.match(p, n) for n in names) for p in patterns)  # plain re.match reads them the same


def test_lora_config_loads_with_peft(corpus: dict[str, Path], tmp_path: Path) -> None:
    assert _measure(corpus, tmp_path / "r.json", "--lora-budget", "0.1") == 0
    folder = tmp_path / "r-lora"
    loaded = LoraConfig.from_pretrained(str(folder))
    same = LoraConfig.from_json_file(str(folder / "adapter_config.json"))
    assert same["rank_pattern"] == loaded.rank_pattern
    model = tiny_llama()
    report = PlasticityReport.load(tmp_path / "r.json")
    expected = plasticity_lora_config(report, model=model, budget=0.1, modules_to_save=[])
    assert set(loaded.target_modules) == set(expected.target_modules)
    assert loaded.rank_pattern == expected.rank_pattern
    peft_model = get_peft_model(model, loaded)
    trained = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert 0 < trained <= 0.1 * sum(p.numel() for p in tiny_llama().parameters())


def test_offloaded_measure_equals_in_memory(corpus: dict[str, Path], tmp_path: Path) -> None:
    assert _measure(corpus, tmp_path / "memory.json") == 0
    flags = ["--device-map", "auto", "--max-memory", "cpu=20000", "--offload-folder", str(tmp_path / "off")]
    assert _measure(corpus, tmp_path / "disk.json", *flags) == 0
    memory, disk = (PlasticityReport.load(tmp_path / f"{n}.json") for n in ("memory", "disk"))
    np.testing.assert_allclose(disk.mean, memory.mean, rtol=1e-5)
    np.testing.assert_allclose(disk.rates, memory.rates, rtol=1e-5)
    assert json.loads((tmp_path / "disk-lora" / "adapter_config.json").read_text())["rank_pattern"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-memory", "cpu=1GiB"], "--device-map auto"),
        (["--device-map", "auto", "--max-memory", "lots"], "DEVICE=SIZE"),
        (["--device-map", "auto", "--device", "cpu"], "--device with --device-map"),
        (["--unfrozen-budget", "2"], "--unfrozen-budget"),
    ],
    ids=["memory-without-map", "bad-memory", "device-and-map", "bad-budget"],
)
def test_bad_big_model_flags_exit_2(corpus: dict[str, Path], tmp_path: Path, capsys, extra, message) -> None:
    assert _measure(corpus, tmp_path / "r.json", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
