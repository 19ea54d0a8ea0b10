"""``hf-plasticity reproduce --pareto --quick``: the matched-budget experiment end to end, and its statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import rankdata

from hf_plasticity.cli import main
from hf_plasticity.reproduce.pareto import PARETO_METHODS, is_plasticity


@pytest.fixture(scope="module")
def pareto(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("pareto")
    assert main(["reproduce", "--pareto", "--quick", "--no-progress", "--out-dir", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def grid_only(doc: dict[str, Any]) -> set[str]:
    return {m for plan in doc["spec"]["optimizers"] if plan["grid_only"] for m in plan["methods"]}


def test_every_method_has_a_run_per_seed(pareto) -> None:
    _, doc = pareto
    cells = doc["statistics"]["summary"]["adamw"]["digits"]
    assert set(cells) == set(doc["spec"]["methods"]) - grid_only(doc)
    assert all(cell["seeds"] == doc["spec"]["seeds"] for cell in cells.values())


def test_a_grid_only_method_runs_its_grid_and_is_listed_as_pruned(pareto) -> None:
    out, doc = pareto
    assert grid_only(doc) == {"b1_plora_shared"}
    grid = [g for g in doc["lr_grid"]["adamw"]["digits"].values() if "b1_plora_shared" in g["methods"]]
    assert len(grid) == 1 and set(grid[0]["val_accuracy"]) == {"0.001", "0.003"}
    assert not any("b1_plora_shared" in run["methods"] for run in doc["runs"])
    best = max(grid[0]["val_accuracy"].values())
    assert f"| adamw | digits | b1_plora_shared | {100 * best:.1f} (" in (out / "results.md").read_text()


def test_plasticity_lora_fits_the_b1_budget_within_one_rank_step(pareto) -> None:
    _, doc = pareto
    cells = doc["statistics"]["summary"]["adamw"]["digits"]
    base = cells["linear"]["total"]  # linear probing adds no parameter: the base model's count
    allowance = doc["shares"]["digits"]["B1"] * base
    got = cells["b1_plora_in_situ"]["trainable"]
    assert allowance - (128 + 512) < got <= allowance  # one rank step of the bundled ViT's widest linear (fc1)
    assert abs(cells["lora"]["trainable"] - allowance) < 1  # B1 is LoRA r=16 on (q, v) by definition


def test_best_options_are_the_highest_means_of_their_side(pareto) -> None:
    _, doc = pareto
    table = doc["statistics"]["budgets"]["adamw"]["table"]
    entry = doc["statistics"]["budgets"]["adamw"]["per_budget"]["B1"]
    mine = {n: v["mean"] for n, v in table.items() if v["budget"] == "B1" and is_plasticity(n)}
    peers = {n: v["mean"] for n, v in table.items() if v["budget"] == "B1" and not is_plasticity(n)}
    assert table[entry["best_plasticity"]]["mean"] == max(mine.values())
    assert table[entry["best_peer"]]["mean"] == max(peers.values())
    assert entry["difference"] == pytest.approx(max(mine.values()) - max(peers.values()))


def test_wilcoxon_is_over_the_paired_task_seed_accuracies(pareto) -> None:
    _, doc = pareto
    cells = doc["statistics"]["summary"]["adamw"]["digits"]
    entry = doc["statistics"]["budgets"]["adamw"]["per_budget"]["B1"]
    diff = np.subtract(cells[entry["best_plasticity"]]["test_accuracy"], cells[entry["best_peer"]]["test_accuracy"])
    test = entry["wilcoxon"]
    assert test["differences"] == pytest.approx(diff.tolist())
    nonzero = diff[diff != 0]
    if nonzero.size:  # W+ = sum of the ranks of |d| over the positive differences (the definition)
        ranks = rankdata(np.abs(nonzero))
        assert test["statistic"] == pytest.approx(ranks[nonzero > 0].sum())


def test_b4_top2_trains_the_two_least_smooth_types_of_the_theory(pareto) -> None:
    _, doc = pareto
    method = doc["methods"]["digits"]["b4_top2"]
    trained = method["selected_modules"]
    assert sorted({m.rsplit(".", 1)[-1] for m in trained}) == ["attention", "fc1"]
    assert len(trained) == 12  # 6 layers x (attention, fc1): the paper's order puts them first


def test_families_split_into_plasticity_and_peers() -> None:
    assert {n for n in PARETO_METHODS if is_plasticity(n)} >= {"b1_plora_in_situ", "b2_budget_in_situ", "mha"}
    assert not any(is_plasticity(n) for n in ("lora", "b1_lora_all", "b1_eva", "b1_kappa", "ln_tuning", "full"))


def test_table_and_figure_are_written(pareto) -> None:
    out, doc = pareto
    text = (out / "results.md").read_text()
    assert "| B1 | **b1_plora_in_situ** |" in text and "best plasticity" in text
    assert (out / "pareto.png").stat().st_size > 10_000
    assert doc["command"].startswith("hf-plasticity reproduce --pareto --quick")
