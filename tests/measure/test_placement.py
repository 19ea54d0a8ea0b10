"""Models dispatched by Accelerate: device maps, CPU and disk offload, measured where the weights are, streamed.

The reference of every equality is the definition's own measurement: the same checkpoint loaded whole in
memory, measured on the same pairs with the same seed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from accelerate import cpu_offload, init_empty_weights
from accelerate.utils import has_offloaded_params
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

from hf_plasticity import NonFiniteError, UnsupportedPlacementError, measure_plasticity
from hf_plasticity.compat import accelerate_hook
from tests.text_data import save_with_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-5
N, L = 27, 12
OPTIONS: dict[str, Any] = {"num_pairs": N, "batch_size": 4, "progress": False}
PAIR_BYTES = {"shared": 3 * L * 32 * 4, "in_situ": 4 * L * 32 * 4}  # per pair: the chunk's activations
"""A chunk of 8 pairs (2 batches): the 27 pairs stream in 4 chunks."""


def _tokens(seed: int) -> torch.Tensor:
    return torch.randint(4, 400, (40, L), generator=torch.Generator().manual_seed(seed))


DATA, REFERENCE = _tokens(1), _tokens(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_with_tokenizer(tiny_llama(), tmp_path_factory.mktemp("llama") / "tiny-llama")


def _offloaded(folder: Path, tmp: Path, device_map: Any = "auto") -> Any:
    kwargs: dict[str, Any] = {"device_map": device_map, "offload_folder": str(tmp / "offload")}
    if device_map == "auto":
        kwargs["max_memory"] = {"cpu": 20_000}  # under one layer: every block goes to disk
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    return model


def _assert_same(streamed: Any, reference: Any) -> None:
    np.testing.assert_array_equal(streamed.count, reference.count)
    np.testing.assert_allclose(streamed.mean, reference.mean, rtol=RTOL)
    np.testing.assert_allclose(streamed.std, reference.std, rtol=RTOL)
    np.testing.assert_allclose(streamed.rates, reference.rates, rtol=RTOL)
    assert (streamed.bounds is None) == (reference.bounds is None)
    if reference.bounds is not None:
        np.testing.assert_allclose(streamed.bounds, reference.bounds, rtol=RTOL, equal_nan=True)
    assert streamed.model == reference.model  # id, type, class, configuration hash, parameter count
    assert streamed.tokens.keys() == reference.tokens.keys()
    for key, value in reference.tokens.items():
        np.testing.assert_allclose(streamed.tokens[key], value, rtol=RTOL)


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_disk_offloaded_model_measures_as_in_memory(checkpoint: Path, tmp_path: Path, protocol: str) -> None:
    reference = measure_plasticity(
        AutoModelForCausalLM.from_pretrained(checkpoint), DATA, REFERENCE, protocol=protocol, **OPTIONS
    )
    model = _offloaded(checkpoint, tmp_path)
    assert set(model.hf_device_map.values()) == {"disk"}
    assert model.model.layers[1].mlp.down_proj.weight.is_meta  # offloaded: no values in the module
    report = measure_plasticity(
        model, DATA, REFERENCE, protocol=protocol, max_memory=8 * PAIR_BYTES[protocol], **OPTIONS
    )
    _assert_same(report, reference)
    assert model.model.layers[1].mlp.down_proj.weight.is_meta  # released after measuring
    assert all(accelerate_hook(m).offload for m in model.modules() if has_offloaded_params(m))


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_mixed_memory_and_disk_map_measures_as_in_memory(checkpoint: Path, tmp_path: Path, protocol: str) -> None:
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    model = _offloaded(checkpoint, tmp_path, device_map)
    assert not model.model.layers[0].self_attn.q_proj.weight.is_meta
    assert model.model.layers[1].self_attn.q_proj.weight.is_meta
    reference = measure_plasticity(
        AutoModelForCausalLM.from_pretrained(checkpoint), DATA, REFERENCE, protocol=protocol, **OPTIONS
    )
    _assert_same(measure_plasticity(model, DATA, REFERENCE, protocol=protocol, **OPTIONS), reference)


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_cpu_offloaded_model_measures_as_in_memory(checkpoint: Path, protocol: str) -> None:
    reference = measure_plasticity(
        AutoModelForCausalLM.from_pretrained(checkpoint), DATA, REFERENCE, protocol=protocol, **OPTIONS
    )
    model = cpu_offload(AutoModelForCausalLM.from_pretrained(checkpoint), execution_device=torch.device("cpu"))
    assert model.model.layers[0].mlp.up_proj.weight.is_meta  # kept in Accelerate's CPU weights map
    _assert_same(measure_plasticity(model, DATA, REFERENCE, protocol=protocol, **OPTIONS), reference)


class _Counting(Mapping):
    """A hook's weights map that counts how often each tensor is read."""

    def __init__(self, inner: Mapping) -> None:
        self.inner: Mapping = inner
        self.reads: dict[str, int] = {}

    def __getitem__(self, key: str) -> Any:
        self.reads[key] = self.reads.get(key, 0) + 1
        return self.inner[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_each_offloaded_layer_is_read_once_per_chunk(checkpoint: Path, tmp_path: Path, protocol: str) -> None:
    model = _offloaded(checkpoint, tmp_path)
    counters = {}
    for name in ("layers.0.self_attn.q_proj", "layers.1.mlp.down_proj", "layers.1.post_attention_layernorm"):
        hook = accelerate_hook(model.model.get_submodule(name))
        hook.weights_map = counters[name] = _Counting(hook.weights_map)
    measure_plasticity(model, DATA, REFERENCE, protocol=protocol, max_memory=8 * PAIR_BYTES[protocol], **OPTIONS)
    chunks = 4  # 27 pairs, 8 per chunk (two batches of 4)
    for name, counter in counters.items():
        assert counter.reads == {"weight": chunks}, name


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_the_embedding_is_read_for_its_check_and_once_per_chunk(
    checkpoint: Path, tmp_path: Path, protocol: str
) -> None:
    model = _offloaded(checkpoint, tmp_path)
    embedding, head = (accelerate_hook(m) for m in (model.model.embed_tokens, model.lm_head))
    embedding.weights_map = reads = _Counting(embedding.weights_map)
    head.weights_map = head_reads = _Counting(head.weights_map)
    measure_plasticity(model, DATA, REFERENCE, protocol=protocol, max_memory=8 * PAIR_BYTES[protocol], **OPTIONS)
    assert reads.reads == {"weight": 1 + 4}  # the weight check, then the 4 chunks' block-0 inputs
    assert head_reads.reads == {}  # the base model is measured: the LM head is never loaded


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_one_block_is_resident_at_a_time(checkpoint: Path, tmp_path: Path, protocol: str) -> None:
    """While a block computes, no other block's weights and not the embedding's are loaded."""
    model = _offloaded(checkpoint, tmp_path)
    resident: list[tuple[int, list[str]]] = []

    def record(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
            resident.append((layer, [n for n, p in model.named_parameters() if not p.is_meta]))

        return hook

    for layer, block in enumerate(model.model.layers):
        block.self_attn.register_forward_pre_hook(record(layer), with_kwargs=True)
    measure_plasticity(model, DATA, REFERENCE, protocol=protocol, max_memory=8 * PAIR_BYTES[protocol], **OPTIONS)
    assert [layer for layer, _ in resident] == [0, 0, 1, 1] * 3 + [0, 1]  # chunks of 2, 2, 2 and 1 batches
    for layer, names in resident:
        assert names and all(n.startswith(f"model.layers.{layer}.") for n in names), (layer, names)


def test_default_allowance_measures_in_one_chunk(checkpoint: Path, tmp_path: Path) -> None:
    model = _offloaded(checkpoint, tmp_path)
    hook = accelerate_hook(model.model.layers[0].mlp.gate_proj)
    hook.weights_map = counter = _Counting(hook.weights_map)
    report = measure_plasticity(model, DATA, REFERENCE, **OPTIONS)  # half the machine's free memory: one chunk
    assert counter.reads == {"weight": 1}
    assert report.num_pairs == N


def test_non_finite_offloaded_weight_is_named(checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    model = tiny_llama()
    save_with_tokenizer(model, broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    offloaded = _offloaded(broken, tmp_path)
    with pytest.raises(NonFiniteError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        measure_plasticity(offloaded, DATA, REFERENCE, **OPTIONS)


def test_meta_weights_without_a_hook_are_refused(checkpoint: Path) -> None:
    with init_empty_weights():
        model = LlamaForCausalLM(AutoConfig.from_pretrained(checkpoint))
    with pytest.raises(UnsupportedPlacementError, match="load_checkpoint_and_dispatch"):
        measure_plasticity(model, DATA, REFERENCE, **OPTIONS)


def test_device_for_a_dispatched_model_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    model = _offloaded(checkpoint, tmp_path)
    with pytest.raises(UnsupportedPlacementError, match="omit device="):
        measure_plasticity(model, DATA, REFERENCE, device="cpu", **OPTIONS)
    assert model.model.layers[0].self_attn.q_proj.weight.is_meta  # nothing moved


@pytest.mark.parametrize("max_memory", ["lots", -1, {"cuda": "1GB"}], ids=["not-a-size", "negative", "no-entry"])
def test_bad_memory_allowance_is_refused(checkpoint: Path, tmp_path: Path, max_memory: Any) -> None:
    from hf_plasticity import InvalidInputError

    with pytest.raises(InvalidInputError, match="max_memory"):
        measure_plasticity(_offloaded(checkpoint, tmp_path), DATA, REFERENCE, max_memory=max_memory, **OPTIONS)


# ----------------------------------------------------------------------------- two processes, accelerate launch
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def launched(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("offload-launch")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    env.pop("WORLD_SIZE", None)
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(ROOT / "tests" / "offload_worker.py"), "--out", str(out), "--model", str(checkpoint),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        log, _ = proc.communicate()
        pytest.fail(f"accelerate launch timed out after {TIMEOUT_S}s:\n{log[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"accelerate launch failed:\n{log[-6000:]}"
    return out


@pytest.mark.parametrize("rank", [0, 1], ids=["rank0", "rank1"])
@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_two_processes_stream_as_one_in_memory(launched: Path, checkpoint: Path, protocol: str, rank: int) -> None:
    from hf_plasticity import PlasticityReport

    report = PlasticityReport.load(launched / f"offload-{protocol}-rank{rank}.json")
    reference = measure_plasticity(
        AutoModelForCausalLM.from_pretrained(checkpoint), DATA, REFERENCE, protocol=protocol, **OPTIONS
    )
    _assert_same(report, reference)
    assert report.coverage["ranges"] == [[0, N]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_half_precision_streams_with_float32_rates(
    checkpoint: Path, tmp_path: Path, protocol: str, dtype: torch.dtype
) -> None:
    whole = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    reference = measure_plasticity(whole, DATA, REFERENCE, protocol=protocol, **OPTIONS)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=dtype, device_map="auto", max_memory={"cpu": 20_000}, offload_folder=str(tmp_path / "o")
    )
    assert model.model.layers[0].mlp.up_proj.weight.dtype == dtype
    report = measure_plasticity(model, DATA, REFERENCE, protocol=protocol, max_memory=4000, **OPTIONS)
    _assert_same(report, reference)
    assert report.rates.dtype == np.float32
    single = measure_plasticity(
        AutoModelForCausalLM.from_pretrained(checkpoint), DATA, REFERENCE, protocol=protocol, **OPTIONS
    )
    np.testing.assert_allclose(report.mean, single.mean, rtol=0.05)  # half precision rounds, float32 rates add up
