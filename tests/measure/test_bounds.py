"""The paper's theoretical bounds, each against a direct computation from its definition (paper notes, s.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hf_plasticity import COMPONENTS, PlasticityReport, measure_plasticity
from tests.conftest import TINY, pixels, scale_embedding
from tests.measure.test_estimator import loader, paper_modules


def spectral(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().double(), ord=2))


def embedding_outputs(model: nn.Module, *batches: torch.Tensor) -> torch.Tensor:
    embeddings, _ = paper_modules(model)
    with torch.no_grad():
        return torch.cat([embeddings(b) for b in batches]).double()


def radius_of(z: torch.Tensor) -> float:
    """The paper's r: mean over images of sqrt(mean over tokens of ||token||^2)."""
    return float(z.pow(2).sum(-1).mean(-1).sqrt().mean())


def attention_bound_of(attention: nn.Module, heads: int, r: float, n: int) -> float:
    """sum_h ||O_h|| ||V_h|| sqrt(3n + (12n + 3) r^4 ||Q_h K_h^T / sqrt(d_h)||^2), head blocks sliced by hand."""
    wq, wk, wv, wo = (getattr(attention, f"{p}_proj").weight.detach().double() for p in "qkvo")
    dh = wq.shape[0] // heads
    total = 0.0
    for h in range(heads):
        rows = slice(h * dh, (h + 1) * dh)
        q, k, v = wq[rows].T, wk[rows].T, wv[rows].T  # d x d_h: token -> query, key, value of head h
        o = wo[:, rows]  # d x d_h: the output projection's block for head h
        qk = spectral(q @ k.T / math.sqrt(dh))
        total += spectral(o) * spectral(v) * math.sqrt(3 * n + (12 * n + 3) * r**4 * qk**2)
    return total


@pytest.fixture
def measured(any_tiny_model: nn.Module) -> tuple[nn.Module, PlasticityReport, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    for m in any_tiny_model.modules():  # gains away from 1, so max |gamma| is a real check
        if isinstance(m, nn.LayerNorm):
            nn.init.uniform_(m.weight, -2.0, 1.5)
    x, y = pixels(10, seed=31), pixels(10, seed=32)
    report = measure_plasticity(any_tiny_model, loader(y), reference=loader(x), progress=False)
    return any_tiny_model, report, x, y


WEIGHT_BOUNDS = {  # the paper's bound of each weight-only component, from its module's weight (notes, s.2)
    "attn_norm": lambda w: float(w.detach().abs().max()),  # a LayerNorm: its largest |gain|
    "ffn_norm": lambda w: float(w.detach().abs().max()),
    "ffn_fc1": spectral,  # an MLP linear: its spectral norm
    "ffn_fc2": spectral,
}


@pytest.mark.parametrize("comp", list(WEIGHT_BOUNDS))
def test_weight_only_bound_matches_its_definition(measured, comp: str) -> None:
    model, report, _, _ = measured
    _, layers = paper_modules(model)
    for layer, modules in enumerate(layers):
        expected = WEIGHT_BOUNDS[comp](modules[COMPONENTS.index(comp)].weight)
        assert report.bounds[layer, COMPONENTS.index(comp)] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "shape", [(48, 20), (20, 48), (900, 300), (300, 900)], ids=["dense", "dense-wide", "lanczos", "lanczos-wide"]
)
def test_spectral_norm_matches_torch_at_every_size(shape: tuple[int, int]) -> None:
    """Small Gram matrices are solved densely, large ones by Lanczos: both must give ||W||_2."""
    from hf_plasticity.measure.bounds import spectral_norm

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))) / math.sqrt(shape[1])
    w[:, 0] *= 1.02  # random matrices have clustered top singular values; Lanczos must still find the largest
    assert spectral_norm(w) == pytest.approx(spectral(w.float()), rel=1e-6)


def _blocks(rows: tuple[int, ...], cols: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(r, cols, generator=g) / math.sqrt(cols) for r in rows]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
def test_gram_of_stacked_blocks_is_the_gram_of_the_stacked_matrix(dtype: torch.dtype) -> None:
    """Gate and up are never concatenated: W^T W of W = [W_1; W_2] is summed block by block, in float32 for
    half-precision blocks (float64 kept)."""
    from hf_plasticity.measure.bounds import gram

    parts = [p.to(dtype) for p in _blocks((50, 30), 20, seed=5)]
    stacked = torch.cat(parts).double()  # the definition: the stacked matrix
    got = gram(parts)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(got.double(), stacked.T @ stacked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gram(parts[0]).double(), parts[0].double().T @ parts[0].double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("rows", "cols"), [((340, 300), 300), ((40, 60), 300)], ids=["tall-lanczos", "wide-dense"])
def test_spectral_norm_of_stacked_blocks_is_that_of_the_stacked_matrix(rows: tuple[int, ...], cols: int) -> None:
    """Tall (W^T W, summed per block) and wide (W W^T, assembled from W_i W_j^T blocks) stacks alike."""
    from hf_plasticity.measure.bounds import spectral_norm

    parts = _blocks(rows, cols, seed=sum(rows))
    parts[0][:, 0] *= 1.05  # a top singular value apart from the cluster
    assert spectral_norm(parts) == pytest.approx(spectral(torch.cat(parts)), rel=1e-6)


def test_top_eigenvalues_of_matrices_of_several_sizes() -> None:
    """Dense and Lanczos sizes in one call, each matrix's own largest eigenvalue, in the order given."""
    from hf_plasticity.measure.bounds import top_eigenvalues

    g = torch.Generator().manual_seed(9)
    mats = [(w := torch.randn(n, n + 7, generator=g, dtype=torch.float64)) @ w.T for n in (12, 300, 20, 270)]
    expected = torch.stack([torch.linalg.eigvalsh(m)[-1] for m in mats])
    torch.testing.assert_close(top_eigenvalues(mats), expected, rtol=1e-10, atol=0)


def test_attention_bound_follows_the_per_head_formula(measured) -> None:
    model, report, x, y = measured
    z = embedding_outputs(model, x, y)
    r, n = radius_of(z), z.shape[1]
    assert report.radius == pytest.approx(r, rel=1e-5) and report.seq_len == n
    _, layers = paper_modules(model)
    for layer, modules in enumerate(layers):
        expected = attention_bound_of(modules[COMPONENTS.index("mha")], TINY["num_attention_heads"], r, n)
        assert report.bounds[layer, COMPONENTS.index("mha")] == pytest.approx(expected, rel=1e-5)


def test_token_spread_is_the_mean_per_token_std(measured) -> None:
    model, report, x, y = measured
    z = embedding_outputs(model, x, y)
    assert report.token_spread == pytest.approx(float(z.std(-1, correction=0).mean()), rel=1e-5)


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_measured_rates_never_exceed_the_linear_and_attention_bounds(any_tiny_model: nn.Module, protocol: str) -> None:
    report = measure_plasticity(any_tiny_model, pixels(30, seed=33), protocol=protocol, progress=False)
    for comp in ("mha", "ffn_fc1", "ffn_fc2"):
        c = COMPONENTS.index(comp)
        assert (report.rates[:, :, c].max(0) <= report.bounds[:, c] * (1 + 1e-5)).all(), comp


def test_layernorm_rate_tracks_gain_over_token_spread(tiny_vit: nn.Module) -> None:
    """Scale the embedding outputs by s and a LayerNorm's gain by g: its rate moves as g / s, like g / spread."""
    x, y = pixels(12, seed=34), pixels(12, seed=35)
    before = measure_plasticity(tiny_vit, loader(y), reference=loader(x), progress=False)
    s, g = 4.0, 2.5
    scale_embedding(tiny_vit, s)
    with torch.no_grad():
        for layer in tiny_vit.vit.layers:
            layer.layernorm_before.weight.mul_(g)
    after = measure_plasticity(tiny_vit, loader(y), reference=loader(x), progress=False)
    assert after.token_spread == pytest.approx(s * before.token_spread, rel=1e-5)
    ln = COMPONENTS.index("attn_norm")
    invariant = lambda r: r.mean[:, ln] * r.token_spread / r.bounds[:, ln]  # noqa: E731
    np.testing.assert_allclose(invariant(after), invariant(before), rtol=2e-2)  # LayerNorm's eps breaks exactness
    # and the measured rate is of the order of gain / spread (within a factor 2 on these random tokens)
    ratio = after.mean[:, ln] / (after.bounds[:, ln] / after.token_spread)
    assert ((ratio > 0.5) & (ratio < 2.0)).all()


def test_bounds_survive_json_and_merging(tiny_vit: nn.Module, tmp_path) -> None:
    x, y = pixels(12, seed=36), pixels(12, seed=37)
    whole = measure_plasticity(tiny_vit, loader(y), reference=loader(x), progress=False)
    a = measure_plasticity(tiny_vit, loader(y[:5]), reference=loader(x[:5]), progress=False)
    b = measure_plasticity(tiny_vit, loader(y[5:]), reference=loader(x[5:]), progress=False)
    merged = PlasticityReport.load(a.merge(b).save(tmp_path / "m.json"))
    # per-batch sums are float32, so another split into batches rounds differently in the 7th digit
    assert merged.radius == pytest.approx(whole.radius, rel=1e-6)
    assert merged.token_spread == pytest.approx(whole.token_spread, rel=1e-6)
    np.testing.assert_allclose(merged.bounds, whole.bounds, rtol=1e-9)
    assert merged.stat("mha").bound == pytest.approx(float(whole.bounds[:, COMPONENTS.index("mha")].max()))


def test_skipping_bounds(tiny_vit: nn.Module) -> None:
    report = measure_plasticity(tiny_vit, pixels(8), bounds=False, progress=False)
    assert report.bounds is None and math.isnan(report.stat("mha").bound)
    assert "upper bound" not in report.to_markdown()


@pytest.mark.parametrize("mode", ["keep_original", "lora"], ids=["plasticity-keep-original", "peft-lora"])
def test_bounds_of_an_adapted_model_read_its_live_weights(tiny_vit: nn.Module, mode: str) -> None:
    """What the measurement runs through: the trained copy, or W + (alpha / r) B A for PEFT's LoRA."""
    from peft import LoraConfig, get_peft_model

    from hf_plasticity import PlasticityConfig

    config = (
        PlasticityConfig(components=["ffn_fc1"], keep_original=True)
        if mode == "keep_original"
        else LoraConfig(r=4, lora_alpha=8, target_modules=["fc1"])
    )
    model = get_peft_model(tiny_vit, config)
    fc1 = model.get_base_model().vit.layers[0].mlp.fc1
    with torch.no_grad():
        if mode == "keep_original":
            live = fc1.plasticity_modules["default"].weight
            live.mul_(3.0)
        else:
            fc1.lora_B["default"].weight.normal_()
            a, b = fc1.lora_A["default"].weight, fc1.lora_B["default"].weight
            live = fc1.base_layer.weight + (8 / 4) * b @ a
    report = measure_plasticity(model, pixels(8), progress=False)
    assert report.bounds[0, COMPONENTS.index("ffn_fc1")] == pytest.approx(spectral(live), rel=1e-6)
