"""The forced-choice benchmark's measurements: calibration error, forgetting, and the shift tasks' data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_plasticity.data.loaders import read_fashion_mnist_sample_arrays
from hf_plasticity.models import BUNDLED, load_model
from hf_plasticity.reproduce.finetune import expected_calibration_error
from hf_plasticity.reproduce.forgetting import SOURCE_IMAGES, source_task_accuracy
from hf_plasticity.reproduce.tasks import COARSE_OF, corrupt, load_fashion_coarse


def test_ece_is_the_binned_gap_between_confidence_and_accuracy() -> None:
    # two confident rows (p = 0.9, one right, one wrong) and two at p = 0.6 (both right), 3 classes
    def logits_for(p: float, top: int) -> list[float]:
        rest = (1 - p) / 2
        out = [np.log(rest)] * 3
        out[top] = np.log(p)
        return out

    logits = np.array([logits_for(0.9, 0), logits_for(0.9, 1), logits_for(0.6, 2), logits_for(0.6, 0)])
    labels = np.array([0, 2, 2, 0])
    # bin (0.8667, 0.9333]: accuracy 0.5, confidence 0.9; bin (0.5333, 0.6]: accuracy 1, confidence 0.6
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert expected_calibration_error(logits, labels) == pytest.approx(expected)


def test_forgetting_reads_the_source_head_on_the_backbone() -> None:
    model = load_model(BUNDLED)
    images, labels = read_fashion_mnist_sample_arrays()
    pixels = (torch.from_numpy(images[:SOURCE_IMAGES]).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        pred = model(pixel_values=pixels[:, None].repeat(1, 3, 1, 1)).logits.argmax(-1).numpy()
    own = float((pred == labels[:SOURCE_IMAGES]).mean())
    assert source_task_accuracy(model) == pytest.approx(own)
    fresh = load_model(BUNDLED, num_labels=4, ignore_mismatched_sizes=True)  # a new head: the source's goes back on
    assert source_task_accuracy(fresh) == pytest.approx(own)


def test_corruptions_follow_their_definitions() -> None:
    images, labels = read_fashion_mnist_sample_arrays()
    assert np.array_equal(corrupt(images[:5], "invert"), 255 - images[:5])
    noisy = corrupt(images[:50], "noise")
    assert np.array_equal(noisy, corrupt(images[:50], "noise"))  # seeded
    assert 0.2 < np.std(noisy.astype(float) - images[:50]) / 255 < 0.4  # std 0.4 before clipping
    blurred = corrupt(images[:5], "blur").astype(float)
    assert np.abs(np.diff(blurred, axis=-1)).mean() < np.abs(np.diff(images[:5].astype(float), axis=-1)).mean()
    coarse = load_fashion_coarse()
    assert list(coarse["label"]) == [COARSE_OF[y] for y in labels]


def test_pipeline_runs_every_block_scores_choices_and_resumes_from_its_cache(tmp_path, monkeypatch, request) -> None:
    """The benchmark end to end at tiny scale: the oracle is every single block, each signal's choice is read
    off its own scores, spread / informative / regret follow their definitions from the cached runs, and a
    rerun trains nothing."""
    import json

    from hf_plasticity.reproduce import forced, forgetting
    from hf_plasticity.reproduce.forced_output import PLASTICITY
    from hf_plasticity.reproduce.scorers import select

    monkeypatch.setattr(forgetting, "SOURCE_IMAGES", 64)  # forgetting on fewer source images: seconds, not minutes
    forgetting._source_images.cache_clear()
    request.addfinalizer(forgetting._source_images.cache_clear)
    spec = forced.ForcedSpec.quick()
    spec.sources, spec.arms = ("vit6",), ("blocks1", "blocks2")
    results = forced.run(spec, tmp_path, progress=False)
    assert results["not_run"] == 0
    for name in ("results.json", "tables.md", "blocks.png"):
        assert (tmp_path / name).is_file()

    entry = results["choices"]["vit6"]["fashion-c-invert"]
    scores = entry["scores"]["block"]
    blocks = list(scores["first"])
    assert len(blocks) == 6
    top = {s: max(v, key=lambda b: (v[b], -blocks.index(b))) for s, v in scores.items()}
    assert top["first"] == blocks[0] and top["last"] == blocks[-1]
    for signal, key in entry["choices"]["blocks1"].items():
        assert key == f"blocks:{top[signal].rsplit('.', 1)[-1]}", signal
    for signal, key in entry["choices"]["blocks2"].items():
        index = sorted(int(b.rsplit(".", 1)[-1]) for b in select(scores[signal], 2))
        assert key == "blocks:" + "-".join(map(str, index)), signal

    # the oracle, from the cached run files alone
    by_block: dict[str, list[float]] = {}
    kept: dict[str, list[float]] = {}  # source-task accuracy with the source's head put back
    for path in (tmp_path / "runs").rglob("*.json"):
        run = json.loads(path.read_text())
        if run["run_key"].count(":") == 1 and "-" not in run["run_key"]:
            by_block.setdefault(run["run_key"], []).append(run["test_accuracy"])
            kept.setdefault(run["run_key"], []).append(run["source_accuracy"])
    assert sorted(by_block) == [f"blocks:{i}" for i in range(6)]
    assert all(len(v) == len(spec.seeds) for v in by_block.values())
    means = {k: float(np.mean(v)) for k, v in by_block.items()}
    stds = [float(np.std(v, ddof=1)) for v in by_block.values()]
    summary = results["summary"]["vit6"]["fashion-c-invert"]
    assert summary["spread"] == pytest.approx(max(means.values()) - min(means.values()))
    assert summary["informative"] == (summary["spread"] > 2 * float(np.mean(stds)))
    rows = summary["arms"]["blocks1"]
    shuffled = [means[r["run_key"]] for s, r in rows.items() if s.startswith("shuffled@")]
    for signal, row in rows.items():
        acc = float(np.mean(shuffled)) if signal == "shuffled" else means[row["run_key"]]
        assert row["regret"] == pytest.approx(max(means.values()) - acc), signal
    from scipy.stats import rankdata

    for key, first in (("spearman", 0), ("spearman_after_first", 1)):  # Pearson correlation of the ranks
        x = rankdata([scores[PLASTICITY][b] for b in blocks[first:]])
        y = rankdata([means[f"blocks:{i}"] for i in range(first, 6)])
        with np.errstate(invalid="ignore", divide="ignore"):  # tiny runs can leave every accuracy equal
            rho = float(np.corrcoef(x, y)[0, 1]) if np.ptp(x) and np.ptp(y) else math.nan
        got = summary[key][PLASTICITY]["rho"]
        assert got is None if math.isnan(rho) else got == pytest.approx(rho), key
    before = results["source_accuracy_before"]["vit6"]
    for key, accs in kept.items():
        assert summary["oracle"][f"vit.layers.{key[7:]}"]["forgetting"] == pytest.approx(before - np.mean(accs))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(forced, "run_job", no_training)
    again = forced.run(spec, tmp_path, progress=False)
    assert again["summary"]["vit6"] == results["summary"]["vit6"]
    assert len(again["runs"]) == len(results["runs"])
