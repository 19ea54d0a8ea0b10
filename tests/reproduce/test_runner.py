"""``hf-plasticity reproduce --quick``: the whole experiment end to end on tiny splits, and its outputs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hf_plasticity.cli import main
from hf_plasticity.errors import MissingExtraError
from hf_plasticity.models import bundled_model_path
from hf_plasticity.reproduce import METHODS, TASKS
from hf_plasticity.reproduce import runner as runner_module
from hf_plasticity.reproduce.command import check_extra
from hf_plasticity.reproduce.tasks import PAPER_TASKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--quick", "--no-progress", "--output-dir", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def _ranks(values: list[float]) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's definition uses."""
    values = np.asarray(values, dtype=float)
    ranks = np.empty(len(values))
    for v in np.unique(values):
        where = np.flatnonzero(values == v)
        ranks[where] = np.mean([1 + np.sum(values < v) + i for i in range(len(where))])
    return ranks


def test_every_method_and_task_has_results(quick: tuple[Path, dict[str, Any]]) -> None:
    _, doc = quick
    summary = doc["statistics"]["summary"]["sgd"]
    assert set(summary) == set(PAPER_TASKS)
    for task in PAPER_TASKS:
        assert set(summary[task]) == set(METHODS)
        for entry in summary[task].values():
            assert entry["seeds"] == [0]
            assert 0.0 <= entry["mean"] <= 1.0
            assert entry["trainable"] > 0 and entry["s_per_step"][0] > 0


def test_identical_selections_share_one_run(quick: tuple[Path, dict[str, Any]]) -> None:
    _, doc = quick
    methods = doc["methods"]["digits"]
    assert methods["theory"]["run_key"] == methods["mha"]["run_key"]  # theory ranks mha first
    summary = doc["statistics"]["summary"]["sgd"]["digits"]
    assert summary["theory"]["test_accuracy"] == summary["mha"]["test_accuracy"]
    keys = [(r["task"], r["run_key"], r["seed"]) for r in doc["runs"]]
    assert len(keys) == len(set(keys))


def test_splits_are_recorded_and_disjoint(quick: tuple[Path, dict[str, Any]]) -> None:
    _, doc = quick
    for task in doc["tasks"].values():
        parts = [set(task["indices"][k]) for k in ("train", "val", "test")]
        assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert task["sizes"] == {"train": 64, "val": 32, "test": 32}


def test_spearman_is_the_rank_correlation_of_recorded_numbers(quick: tuple[Path, dict[str, Any]]) -> None:
    _, doc = quick
    task, protocol = "digits", "shared"
    runs = [r for r in doc["runs"] if r["task"] == task and r["optimizer"] == "sgd"]
    acc = {name: r["test_accuracy"] for r in runs for name in r["methods"]}
    comps = ["attn_norm", "mha", "ffn_norm", "ffn_fc1", "ffn_fc2"]
    scores = [doc["measurements"][task][protocol]["scores"][c] for c in comps]
    gains = [acc[c] - acc["linear"] for c in comps]
    stored = doc["statistics"]["spearman"]["sgd"][task][protocol]
    if len(set(gains)) < 2:
        assert stored["rho"] is None
        return
    rx, ry = _ranks(scores), _ranks(gains)
    expected = float(np.corrcoef(rx, ry)[0, 1])  # Spearman = Pearson correlation of the ranks
    assert stored["rho"] == pytest.approx(expected)


def test_wilcoxon_statistic_is_the_positive_rank_sum(quick: tuple[Path, dict[str, Any]]) -> None:
    _, doc = quick
    acc = {
        (r["task"], name): r["test_accuracy"] for r in doc["runs"] if r["optimizer"] == "sgd" for name in r["methods"]
    }
    for other in ("attn_norm", "ffn_fc2"):
        stored = doc["statistics"]["wilcoxon"]["sgd"][other]
        assert sorted(task for task, _ in stored["pairs"]) == sorted(PAPER_TASKS)
        d = np.array([acc[t, "mha"] - acc[t, other] for t, _ in stored["pairs"]])
        assert stored["differences"] == pytest.approx(d.tolist())
        nonzero = d[d != 0]
        if not nonzero.size:
            assert stored["pvalue"] is None
            continue
        ranks = _ranks(list(np.abs(nonzero)))
        assert stored["statistic"] == pytest.approx(float(ranks[nonzero > 0].sum()))
        assert 0.0 < stored["pvalue"] <= 1.0


def test_table_and_figure_are_written(quick: tuple[Path, dict[str, Any]]) -> None:
    out, doc = quick
    md = (out / "results.md").read_text()
    for name in METHODS:
        assert f"| {name} |" in md
    pretraining = json.loads((bundled_model_path() / "config.json").read_text())["hf_plasticity_pretraining"]
    assert f"pretrained {pretraining['epochs']:g} epochs" in md  # the source as it is now, not as it once was
    assert f"({100 * pretraining['test_accuracy']:.1f}% test accuracy)" in md
    assert "Spearman" in md and "Wilcoxon" in md
    assert doc["command"].startswith("hf-plasticity reproduce")
    assert doc["environment"]["versions"]["transformers"]
    assert (out / "gain_vs_plasticity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_cached_runs(quick: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    out, doc = quick

    def no_training(*args: object) -> None:
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(runner_module, "run_job", no_training)
    assert main(["reproduce", "--quick", "--no-progress", "--out-dir", str(out), "--tasks", "digits"]) == 0
    again = json.loads((out / "results.json").read_text())
    first = [r["test_accuracy"] for r in doc["runs"] if r["task"] == "digits"]
    assert [r["test_accuracy"] for r in again["runs"]] == first


def test_example_script_has_help() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "reproduce_paper.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--output-dir" in result.stdout and "--out-dir" not in result.stdout


@pytest.mark.parametrize("missing", ["scipy", "mlxtend"])
def test_missing_extra_names_the_install_command(missing: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    with pytest.raises(MissingExtraError, match=rf"needs {missing}.*pip install 'hf-plasticity\[reproduce\]'"):
        check_extra()


def test_cli_reports_a_missing_extra_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a))
    assert main(["reproduce", "--quick", "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("hf-plasticity: error: hf-plasticity reproduce needs scipy")
    assert not (tmp_path / "out").exists()


def test_unknown_task_lists_the_tasks(tmp_path, capsys) -> None:
    assert main(["reproduce", "--quick", "--tasks", "digitz", "--output-dir", str(tmp_path / "out")]) == 2
    assert f"choose among {', '.join(TASKS)}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
