"""Measuring on several processes and training with DDP: shards, gathers, merges, and two real processes.

The multi-process tests run tests/distributed_worker.py twice at the same time: under
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`` with 4 images per process, and as one
process with 8 (the same global batch). Every rank writes what it ended with; the tests compare.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import ViTImageProcessor

from hf_plasticity import (
    InvalidInputError,
    OverlappingPairsError,
    PlasticityConfig,
    PlasticityReport,
    UnsupportedModelError,
    measure_plasticity,
)
from hf_plasticity.measure.distributed import resolve_shard
from hf_plasticity.stats import merge_ranges
from tests.conftest import IMAGE_SIZE, TINY_MODELS, pixels

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "distributed_worker.py"
TIMEOUT_S = 240
ONE_PROCESS_ATOL = 1e-6
"""DDP averages the two processes' mean gradients; one process takes the mean over all 8 images. Equal in exact
arithmetic, they differ by float32 rounding, so after 3 SGD steps the weights agree to ~1e-7, not bitwise. The
runs use SGD: Adam divides by the gradient's magnitude, so a parameter whose true gradient is zero (attention's
key bias: softmax ignores a shift) moves by +-lr on rounding noise whose sign differs between the two runs."""

KW = {"num_pairs": 19, "batch_size": 4, "progress": False}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    return pixels(24, seed=1), pixels(24, seed=2)


# ----------------------------------------------------------------------------- one process, explicit shards
@pytest.mark.parametrize("world_size", [2, 3, 5], ids=lambda w: f"world{w}")
def test_explicit_shards_merge_to_the_one_process_report(world_size: int) -> None:
    model, (data, ref) = TINY_MODELS["vit"](), _data()
    whole = measure_plasticity(model, data, ref, **KW)
    shards = [measure_plasticity(model, data, ref, rank=r, world_size=world_size, **KW) for r in range(world_size)]
    merged = shards[-1]
    for shard in reversed(shards[:-1]):  # any order: rates still come back in pair order
        merged = merged.merge(shard)
    np.testing.assert_array_equal(merged.count, whole.count)
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-12, atol=0)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(merged.rates, whole.rates)
    assert merged.coverage["ranges"] == [[0, 19]] == whole.coverage["ranges"]
    assert merged.num_pairs == whole.num_pairs == 19


def test_shards_cover_disjoint_pair_ranges() -> None:
    model, (data, ref) = TINY_MODELS["vit"](), _data()
    a, b = (measure_plasticity(model, data, ref, rank=r, world_size=2, **KW) for r in range(2))
    assert a.coverage["ranges"] == [[0, 4], [8, 12], [16, 19]]
    assert b.coverage["ranges"] == [[4, 8], [12, 16]]
    assert a.coverage["plan"] == b.coverage["plan"]
    assert len(a.rates) == 11 and len(b.rates) == 8


@pytest.mark.parametrize(
    "case",
    ["same report twice", "shard and whole", "shard twice"],
)
def test_merge_refuses_overlapping_pairs(case: str) -> None:
    model, (data, ref) = TINY_MODELS["vit"](), _data()
    whole = measure_plasticity(model, data, ref, **KW)
    shard = measure_plasticity(model, data, ref, rank=1, world_size=2, **KW)
    a, b = {"same report twice": (whole, whole), "shard and whole": (shard, whole), "shard twice": (shard, shard)}[
        case
    ]
    with pytest.raises(OverlappingPairsError, match="count them twice"):
        a.merge(b)


def test_merge_of_other_seeds_adds_their_pairs() -> None:
    model, (data, ref) = TINY_MODELS["vit"](), _data()
    a = measure_plasticity(model, data, ref, seed=0, **KW)
    b = measure_plasticity(model, data, ref, seed=1, **KW)
    merged = a.merge(b)
    assert merged.num_pairs == 38 and merged.coverage is None
    np.testing.assert_array_equal(merged.count, a.count + b.count)


def test_coverage_survives_save_and_load(tmp_path: Path) -> None:
    model, (data, ref) = TINY_MODELS["vit"](), _data()
    shard = measure_plasticity(model, data, ref, rank=0, world_size=2, **KW)
    loaded = PlasticityReport.load(shard.save(tmp_path / "r.json"))
    assert loaded.coverage == shard.coverage
    with pytest.raises(OverlappingPairsError):
        loaded.merge(shard)


def test_report_without_coverage_still_loads_and_merges(tmp_path: Path) -> None:
    model, (data, ref) = TINY_MODELS["vit"](), _data()
    report = measure_plasticity(model, data, ref, **KW)
    d = report.to_dict()
    del d["coverage"]  # a report written before coverage was recorded
    old = PlasticityReport.from_dict(d)
    assert old.coverage is None
    assert old.merge(report).num_pairs == 38


@pytest.mark.parametrize(
    "kwargs",
    [{"rank": 0}, {"world_size": 2}, {"rank": 2, "world_size": 2}, {"rank": 0, "world_size": 0}],
    ids=["rank-only", "world-only", "rank-too-big", "world-zero"],
)
def test_bad_shard_arguments_raise(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidInputError):
        resolve_shard(**kwargs)


def test_no_process_group_means_one_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    shard = resolve_shard()
    assert (shard.rank, shard.world_size, shard.gather) == (0, 1, False)


def test_merge_ranges_joins_adjacent_and_sorts() -> None:
    assert merge_ranges([[8, 12], [0, 4], [4, 8], [20, 21], [5, 6]]) == [[0, 12], [20, 21]]


# ----------------------------------------------------------------------------- wrapped models
WRAPPED = {
    "full-in-place": lambda: PlasticityConfig(),
    "full-keep-original": lambda: PlasticityConfig(keep_original=True),
    "peft-lora": lambda: LoraConfig(target_modules=["q_proj", "v_proj", "fc1"], modules_to_save=["classifier"]),
    "full-fc1-norm": lambda: PlasticityConfig(components=["ffn_fc1", "ffn_norm"]),
}


@pytest.mark.parametrize("make", WRAPPED.values(), ids=WRAPPED.keys())
def test_peft_model_is_measured_through_its_live_weights(make) -> None:
    data, ref = _data()
    base = measure_plasticity(TINY_MODELS["vit"](), data, ref, **KW)
    peft_model = get_peft_model(TINY_MODELS["vit"](), make())
    report = measure_plasticity(peft_model, data, ref, **KW)
    # freshly created adapters compute what the base model computes (LoRA's B is zero)
    np.testing.assert_allclose(report.mean, base.mean, rtol=1e-6)
    assert report.module_paths == base.module_paths


def test_peft_model_measures_the_trained_weights_not_the_original() -> None:
    data, ref = _data()
    peft_model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(keep_original=True))
    before = measure_plasticity(peft_model, data, ref, **KW)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "plasticity_modules" in name and name.endswith("v_proj.weight"):
                p.mul_(3.0)  # the adapter's copy of the value projection: attention output triples
    after = measure_plasticity(peft_model, data, ref, **KW)
    mha = after.components.index("mha")
    np.testing.assert_allclose(after.mean[:, mha], 3 * before.mean[:, mha], rtol=1e-4)
    with peft_model.disable_adapter():  # the original, untouched
        original = measure_plasticity(peft_model, data, ref, **KW)
    np.testing.assert_allclose(original.mean, before.mean, rtol=1e-6)


def test_unknown_wrapper_error_points_to_the_inner_model() -> None:
    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner_model = inner
            self.model = inner

    data, ref = _data()
    with pytest.raises(UnsupportedModelError, match=r"wraps a supported ViTForImageClassification.*model\.model"):
        measure_plasticity(Wrapper(TINY_MODELS["vit"]()), data, ref, **KW)


# ----------------------------------------------------------------------------- two real processes
def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen, what: str) -> None:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers: its whole process group
        out, _ = proc.communicate()
        pytest.fail(f"{what} timed out after {TIMEOUT_S}s:\n{out[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers, if a worker outlived the launcher
    assert proc.returncode == 0, f"{what} failed:\n{out[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    model_dir = root / "tiny-vit"
    TINY_MODELS["vit"]().save_pretrained(model_dir)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(model_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    env.pop("WORLD_SIZE", None)
    two, one = root / "two", root / "one"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(WORKER), "--out", str(two), "--model", str(model_dir), "--batch", "4",
    ]  # fmt: skip
    single = [sys.executable, str(WORKER), "--out", str(one), "--model", str(model_dir), "--batch", "8"]
    procs = [(_run(launch, env), "accelerate launch (2 processes)"), (_run(single, env), "one process")]
    for proc, what in procs:
        _finish(proc, what)
    return {"two": two, "one": one, "model": model_dir}


@pytest.mark.parametrize("kind", ["auto", "prepared"], ids=["automatic-sharding", "accelerator-prepared-model"])
@pytest.mark.parametrize("rank", [0, 1], ids=["rank0", "rank1"])
def test_two_process_measurement_equals_one_process(runs: dict[str, Path], kind: str, rank: int) -> None:
    report = PlasticityReport.load(runs["two"] / f"measure-{kind}-rank{rank}.json")
    single = PlasticityReport.load(runs["two"] / f"measure-single-rank{rank}.json")  # same process, no sharding
    np.testing.assert_array_equal(report.count, single.count)
    np.testing.assert_array_equal(report.sum, single.sum)  # exact: the same additions in the same order
    np.testing.assert_array_equal(report.sum_sq, single.sum_sq)
    np.testing.assert_array_equal(report.rates, single.rates)
    assert report.coverage == single.coverage and report.coverage["ranges"] == [[0, 21]]
    other = PlasticityReport.load(runs["one"] / "measure-single-rank0.json")  # a separate one-process run
    np.testing.assert_allclose(report.mean, other.mean, rtol=1e-12)


@pytest.mark.parametrize("rank", [0, 1], ids=["rank0", "rank1"])
def test_two_process_text_measurement_equals_one_process(runs: dict[str, Path], rank: int) -> None:
    report = PlasticityReport.load(runs["two"] / f"measure-text-rank{rank}.json")
    single = PlasticityReport.load(runs["two"] / f"measure-text-single-rank{rank}.json")
    np.testing.assert_array_equal(report.count, single.count)
    np.testing.assert_array_equal(report.sum, single.sum)  # token pairs shard and gather like pixel pairs
    np.testing.assert_array_equal(report.rates, single.rates)
    assert report.coverage == single.coverage and report.coverage["ranges"] == [[0, 21]]


def test_prepared_model_was_ddp_wrapped(runs: dict[str, Path]) -> None:
    assert torch.load(runs["two"] / "measure-prepared-type-rank0.pt") == "DistributedDataParallel"


CASES = [f"cli-{mode}" for mode in ("full", "keep_original")] + [
    f"example-{mode}" for mode in ("full", "keep_original", "lora")
]  # the example's lora: PEFT LoRA from plasticity_lora_config


def _trained(folder: Path, case: str, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(folder / f"{case}-rank{rank}.pt")


@pytest.mark.parametrize("case", CASES)
def test_ranks_end_bit_identical(runs: dict[str, Path], case: str) -> None:
    a, b = _trained(runs["two"], case, 0), _trained(runs["two"], case, 1)
    assert a.keys() == b.keys() and len(a) > 2
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("case", CASES)
def test_two_processes_equal_one_process_with_the_same_global_batch(runs: dict[str, Path], case: str) -> None:
    two, one = _trained(runs["two"], case, 0), _trained(runs["one"], case, 0)
    assert two.keys() == one.keys()
    for key in two:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=ONE_PROCESS_ATOL)


@pytest.mark.parametrize("case", CASES)
def test_training_changed_the_selected_attention(runs: dict[str, Path], case: str) -> None:
    trained = _trained(runs["two"], case, 0)
    if case.endswith("lora"):
        lora_b = [v for k, v in trained.items() if "lora_B" in k]
        assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero
        return
    original = TINY_MODELS["vit"]().state_dict()["vit.layers.0.attention.q_proj.weight"]  # what was saved
    (key,) = [k for k in trained if "layers.0.attention" in k and k.endswith("q_proj.weight")]
    assert not torch.equal(trained[key], original)


@pytest.mark.parametrize("mode", ["full", "keep_original"])
def test_finetune_ranks_chose_from_the_same_report(runs: dict[str, Path], mode: str) -> None:
    reports = [PlasticityReport.load(runs["two"] / f"cli-{mode}-report-rank{r}.json") for r in (0, 1)]
    single = PlasticityReport.load(runs["one"] / f"cli-{mode}-report-rank0.json")
    for report in reports:
        np.testing.assert_array_equal(report.count, single.count)
        np.testing.assert_allclose(report.mean, single.mean, rtol=1e-12)
    assert (runs["two"] / f"cli-{mode}" / "adapter" / "adapter_config.json").is_file()
    assert (runs["two"] / f"cli-{mode}" / "metrics.json").is_file()
