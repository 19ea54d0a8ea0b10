"""The reproduction's statistics and splits, checked against computations from their definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hf_plasticity.errors import InvalidInputError
from hf_plasticity.reproduce.stats import (
    comparisons,
    gains_over_linear,
    mean_std,
    mha_tests,
    pooled_bounds,
    spearman,
    summarise,
    wilcoxon_greater,
)
from hf_plasticity.reproduce.tasks import load_fashion_rot4, stratified_split

COMPS = ("attn_norm", "mha", "ffn_norm", "ffn_fc1", "ffn_fc2")


def _ranks(values: list[float]) -> np.ndarray:
    """Ranks 1..n (no ties in these tests)."""
    order = np.argsort(values)
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


def test_mean_std_is_sample_std() -> None:
    mean, std = mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7)
    assert std == pytest.approx(math.sqrt((0.2**2 + 0.2**2) / 2))


def test_mean_std_single_value_has_zero_spread() -> None:
    assert mean_std([0.8]) == (0.8, 0.0)


@pytest.mark.parametrize(
    "gains",
    [[0.5, 0.3, 0.4, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4, 0.5], [-0.2, 0.3, 0.0, 0.25, -0.1]],
    ids=["mixed", "reversed", "signed"],
)
def test_spearman_matches_rank_formula(gains: list[float]) -> None:
    scores = dict(zip(COMPS, [5.0, 4.0, 3.0, 2.0, 1.0], strict=True))
    result = spearman(scores, dict(zip(COMPS, gains, strict=True)))
    d = _ranks(list(scores.values())) - _ranks(gains)
    n = len(gains)
    assert result["rho"] == pytest.approx(1 - 6 * float((d**2).sum()) / (n * (n**2 - 1)))
    assert result["n"] == 5


def test_spearman_undefined_for_constant_gains() -> None:
    result = spearman(dict.fromkeys(COMPS, 1.0) | {"mha": 2.0}, dict.fromkeys(COMPS, 0.1))
    assert result["rho"] is None and "constant" in result["note"]


def test_wilcoxon_matches_exact_signed_rank_distribution() -> None:
    a = [0.83, 0.70, 0.92, 0.65, 0.90]
    b = [0.80, 0.71, 0.90, 0.60, 0.86]
    d = np.array(a) - np.array(b)  # 3, -1, 2, 5, 4 points: no ties, no zeros
    ranks = _ranks(list(np.abs(d)))
    w_plus = float(ranks[d > 0].sum())
    # exact null: every sign pattern of the ranks is equally likely
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in itertools.product([0, 1], repeat=5)]
    p_exact = sum(s >= w_plus for s in sums) / len(sums)
    result = wilcoxon_greater(a, b)
    assert result["statistic"] == pytest.approx(w_plus)
    assert result["pvalue"] == pytest.approx(p_exact)
    assert result["n"] == 5


def test_wilcoxon_undefined_without_differences() -> None:
    result = wilcoxon_greater([0.5, 0.6], [0.5, 0.6])
    assert result["pvalue"] is None


def test_wilcoxon_rejects_unpaired_samples() -> None:
    with pytest.raises(InvalidInputError, match="differ in length"):
        wilcoxon_greater([0.5, 0.6], [0.5])


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        (None, None),
        ({"mha": [1.0, 3.0], "ffn_fc1": 2.0}, {"mha": 3.0, "ffn_fc1": 2.0}),
        ({"bounds": {"attn_norm": [0.5, None, 1.5]}}, {"attn_norm": 1.5}),
        (np.array([[1.0, 4.0], [2.0, np.nan]]), {"mha": 2.0, "ffn_fc1": 4.0}),
        (np.ones((2, 3)), None),
        ("not bounds", None),
    ],
    ids=[
        "absent",
        "per-layer-and-scalar",
        "nested-with-missing-layer",
        "report-array",
        "array-wrong-width",
        "foreign",
    ],
)
def test_pooled_bounds_take_the_largest_layer(bounds: object, expected: dict[str, float] | None) -> None:
    assert pooled_bounds(bounds, components=["mha", "ffn_fc1"]) == expected


def _run(task: str, method: str, seed: int, acc: float, run_key: str | None = None) -> dict:
    return {
        "optimizer": "sgd",
        "task": task,
        "methods": [method],
        "run_key": run_key or method,
        "lr": 0.1,
        "seed": seed,
        "test_accuracy": acc,
        "val_accuracy": acc,
        "s_per_step": 0.2,
        "trainable": 10,
        "total": 100,
    }


def test_summarise_groups_shared_runs_under_every_name() -> None:
    run = _run("digits", "mha", 0, 0.8) | {"methods": ["mha", "theory"]}
    summary = summarise([run])
    assert summary["sgd"]["digits"]["mha"]["test_accuracy"] == [0.8]
    assert summary["sgd"]["digits"]["theory"]["test_accuracy"] == [0.8]


def test_gains_are_relative_to_linear_probing() -> None:
    runs = [_run("t", "linear", 0, 0.5), _run("t", "mha", 0, 0.7), _run("t", "attn_norm", 0, 0.4)]
    gains = gains_over_linear(summarise(runs)["sgd"]["t"])
    assert gains == {"attn_norm": pytest.approx(-0.1), "mha": pytest.approx(0.2)}


@pytest.mark.parametrize(
    ("theory", "meets"), [(0.797, True), (0.796, False), (0.9, True)], ids=["minus-0.3", "minus-0.4", "above"]
)
def test_comparison_against_full_minus_0_3_points(theory: float, meets: bool) -> None:
    runs = [_run("t", "full", 0, 0.8), _run("t", "lora", 0, 0.79), _run("t", "theory", 0, theory)]
    result = comparisons(summarise(runs)["sgd"]["t"])["theory"]
    assert result["at_least_full_minus_0.3"] is meets
    assert result["vs_full_points"] == pytest.approx(100 * (theory - 0.8))
    assert result["beats_lora"] is (theory > 0.79)


def test_mha_tests_pair_runs_by_task_and_seed() -> None:
    runs = [
        _run("a", "mha", 42, 0.9),
        _run("a", "mha", 0, 0.7),
        _run("a", "ffn_fc1", 0, 0.6),
        _run("a", "ffn_fc1", 42, 0.95),
        _run("b", "mha", 0, 0.5),
        _run("b", "ffn_fc1", 0, 0.4),
    ]
    result = mha_tests(summarise(runs)["sgd"])["ffn_fc1"]
    assert result["pairs"] == [["a", 0], ["a", 42], ["b", 0]]
    assert result["differences"] == pytest.approx([0.1, -0.05, 0.1])


def test_stratified_split_is_disjoint_seeded_and_balanced() -> None:
    labels = np.repeat(np.arange(4), 50)
    first = stratified_split(labels, val=40, test=40, train=None, seed=0)
    again = stratified_split(labels, val=40, test=40, train=None, seed=0)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    parts = [set(first[k].tolist()) for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 200 and len(set.union(*parts)) == 200
    assert np.bincount(labels[first["test"]]).tolist() == [10, 10, 10, 10]


def test_fashion_rot4_labels_are_the_rotation() -> None:
    from hf_plasticity.data.loaders import read_fashion_mnist_sample_arrays

    originals, _ = read_fashion_mnist_sample_arrays()
    data = load_fashion_rot4()
    for i in (0, 1, 2, 3, 500, 1999):
        k = data[i]["label"]
        assert np.array_equal(np.asarray(data[i]["image"]), np.rot90(originals[i], k=k))
    assert set(data["label"]) == {0, 1, 2, 3}
