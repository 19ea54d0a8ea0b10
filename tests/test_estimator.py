"""The estimator against a brute-force per-pair computation, known properties, and bad inputs."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertModel, ViTImageProcessor

from hf_plasticity import (
    COMPONENTS,
    EmptyDataError,
    InvalidInputError,
    NotEnoughPairsError,
    UnknownComponentError,
    UnsupportedModelError,
    measure_plasticity,
    resolve_components,
)

from .conftest import IMAGE_SIZE, TINY, pixels


def loader(t: torch.Tensor, batch_size: int = 4) -> torch.utils.data.DataLoader:
    """A DataLoader keeps pair order, so pair i is (reference[i], data[i]) for the brute force."""
    return torch.utils.data.DataLoader(t, batch_size=batch_size)


def frob(t: torch.Tensor) -> float:
    return float(torch.linalg.norm(t.reshape(-1).double()))


def brute_force_shared(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per pair, per layer, per component: every component applied to the pair's embedding outputs."""
    rc = resolve_components(model)
    out = np.zeros((len(x), rc.num_layers, len(COMPONENTS)))
    with torch.no_grad():
        for i in range(len(x)):
            zx = rc.embeddings()(x[i : i + 1])
            zy = rc.embeddings()(y[i : i + 1])
            for layer in range(rc.num_layers):
                for c, comp in enumerate(COMPONENTS):
                    fx, fy = zx, zy
                    modules = rc.chain(layer, comp)
                    width = getattr(modules[0], "in_features", zx.shape[-1])
                    fx, fy = F.pad(fx, (0, width - zx.shape[-1])), F.pad(fy, (0, width - zy.shape[-1]))
                    for m in modules:
                        fx, fy = m(fx), m(fy)
                        fx = fx[0] if isinstance(fx, tuple) else fx
                        fy = fy[0] if isinstance(fy, tuple) else fy
                    out[i, layer, c] = frob(fx - fy) / frob(zx - zy)
    return out


def brute_force_in_situ(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per pair: run x and y separately, record each component's real input and output with hooks."""
    rc = resolve_components(model)
    seen: dict[tuple[int, int, str], torch.Tensor] = {}
    handles = []
    for layer in range(rc.num_layers):
        for c, comp in enumerate(COMPONENTS):
            chain = rc.chain(layer, comp)

            def pre(mod, args, kwargs, key=(layer, c)):
                seen[(*key, "in")] = (args[0] if args else kwargs["hidden_states"]).clone()

            def post(mod, args, output, key=(layer, c)):
                seen[(*key, "out")] = (output[0] if isinstance(output, tuple) else output).clone()

            handles.append(chain[0].register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(chain[-1].register_forward_hook(post))
    out = np.zeros((len(x), rc.num_layers, len(COMPONENTS)))
    try:
        with torch.no_grad():
            for i in range(len(x)):
                model(pixel_values=x[i : i + 1])
                sx = dict(seen)
                model(pixel_values=y[i : i + 1])
                for layer in range(rc.num_layers):
                    for c in range(len(COMPONENTS)):
                        num = frob(sx[(layer, c, "out")] - seen[(layer, c, "out")])
                        out[i, layer, c] = num / frob(sx[(layer, c, "in")] - seen[(layer, c, "in")])
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_matches_brute_force_on_every_architecture(any_tiny_model: nn.Module, protocol: str) -> None:
    x, y = pixels(6, seed=1), pixels(6, seed=2)
    report = measure_plasticity(any_tiny_model, loader(y), reference=loader(x), protocol=protocol, progress=False)
    expected = (brute_force_shared if protocol == "shared" else brute_force_in_situ)(any_tiny_model, x, y)
    assert report.rates is not None
    np.testing.assert_allclose(report.rates, expected, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(report.mean, expected.mean(0), rtol=2e-4)
    np.testing.assert_allclose(report.std, expected.std(0, ddof=1), rtol=2e-3, atol=1e-7)
    assert report.num_pairs == 6 and report.excluded_pairs == 0
    assert report.count.tolist() == [[6] * 5] * TINY["num_hidden_layers"]


def test_every_registered_module_path_exists(any_tiny_model: nn.Module) -> None:
    rc = resolve_components(any_tiny_model)
    names = dict(any_tiny_model.named_modules())
    assert rc.num_layers == TINY["num_hidden_layers"]
    for _, _, path in rc.iter_modules():
        assert path in names
    assert isinstance(names[rc.paths["ffn_fc2"][0]], nn.Linear)
    assert isinstance(names[rc.paths["attn_norm"][1]], nn.LayerNorm)


def test_layernorm_rate_scales_with_its_weight(tiny_vit: nn.Module) -> None:
    x, y = pixels(8, seed=3), pixels(8, seed=4)
    before = measure_plasticity(tiny_vit, loader(y), reference=loader(x), progress=False)
    norm = resolve_components(tiny_vit).module(resolve_components(tiny_vit).paths["attn_norm"][0])
    with torch.no_grad():
        norm.weight.mul_(3.0)
        norm.bias.add_(5.0)  # a shift cancels in f(x) - f(y)
    after = measure_plasticity(tiny_vit, loader(y), reference=loader(x), progress=False)
    a, b = after.rates[:, 0, 0], before.rates[:, 0, 0]
    np.testing.assert_allclose(a / b, 3.0, rtol=1e-5)
    np.testing.assert_allclose(after.rates[:, 1, 0], before.rates[:, 1, 0], rtol=1e-6)  # layer 1 untouched


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_linear_rate_never_exceeds_its_spectral_norm(tiny_vit: nn.Module, protocol: str) -> None:
    rc = resolve_components(tiny_vit)
    report = measure_plasticity(tiny_vit, pixels(40, seed=5), protocol=protocol, progress=False)
    fc2 = COMPONENTS.index("ffn_fc2")
    for layer in range(rc.num_layers):
        w = rc.module(rc.paths["ffn_fc2"][layer]).weight
        bound = float(torch.linalg.matrix_norm(w.detach().double(), ord=2))
        assert report.rates[:, layer, fc2].max() <= bound * (1 + 1e-5)
        assert report.rates[:, layer, fc2].min() > 0


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
def test_identical_pairs_are_excluded_and_counted(tiny_vit: nn.Module, protocol: str) -> None:
    x, y = pixels(8, seed=6), pixels(8, seed=7)
    y[:3] = x[:3]
    report = measure_plasticity(tiny_vit, loader(y), reference=loader(x), protocol=protocol, progress=False)
    assert report.excluded_pairs == 3
    assert (report.count == 5).all() and (report.excluded == 3).all()
    assert np.isnan(report.rates[:3]).all() and np.isfinite(report.rates[3:]).all()
    assert np.isfinite(report.mean).all()
    np.testing.assert_allclose(report.mean, report.rates[3:].astype(np.float64).mean(0), rtol=1e-5)


def test_pairs_are_seeded_and_disjoint(tiny_vit: nn.Module) -> None:
    data = pixels(30, seed=8)
    a = measure_plasticity(tiny_vit, data, num_pairs=15, batch_size=4, seed=1, progress=False)
    b = measure_plasticity(tiny_vit, data, num_pairs=15, batch_size=7, seed=1, progress=False)
    c = measure_plasticity(tiny_vit, data, num_pairs=15, seed=2, progress=False)
    np.testing.assert_allclose(a.rates, b.rates, rtol=1e-5)  # batch size does not change the pairs
    assert not np.allclose(np.sort(a.rates[:, 0, 1]), np.sort(c.rates[:, 0, 1]))
    # 30 distinct images in 15 disjoint pairs: no image is paired with itself.
    assert a.excluded_pairs == 0 and a.num_pairs == 15


def test_reference_supplies_x_and_data_supplies_y(tiny_vit: nn.Module) -> None:
    ref, data = pixels(10, seed=9), pixels(10, seed=10)
    report = measure_plasticity(tiny_vit, data, reference=ref, progress=False)
    assert report.num_pairs == 10
    same = measure_plasticity(tiny_vit, data, reference=data, num_pairs=10, progress=False)
    # Pairing data with itself under independent shuffles hits some identical pairs far less often
    # than never: the reference is really used (its own rates differ).
    assert not np.allclose(report.mean, same.mean)


def test_component_subset(tiny_vit: nn.Module) -> None:
    report = measure_plasticity(tiny_vit, pixels(8), components=["ffn_fc2", "mha"], progress=False)
    assert report.components == ("mha", "ffn_fc2")
    assert report.rates.shape == (4, 2, 2)


def test_hf_dataset_with_image_processor(tiny_vit: nn.Module) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(12)]
    ds = datasets.Dataset.from_dict({"image": images}).cast_column("image", datasets.Image())
    proc = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    report = measure_plasticity(tiny_vit, ds, image_processor=proc, progress=False, data_name="toy")
    assert report.num_pairs == 6 and report.data_name == "toy"
    assert np.isfinite(report.mean).all()


def test_model_mode_and_weights_are_left_as_they_were(tiny_vit: nn.Module) -> None:
    tiny_vit.train()
    before = {k: v.clone() for k, v in tiny_vit.state_dict().items()}
    measure_plasticity(tiny_vit, pixels(8), protocol="in_situ", progress=False)
    assert tiny_vit.training
    assert all(torch.equal(before[k], v) for k, v in tiny_vit.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_vit.modules())


# ----------------------------------------------------------------------------------------- bad inputs
def test_unsupported_model_names_supported_types_and_the_fix() -> None:
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(UnsupportedModelError, match=r"'bert'.*vit.*register_component_map"):
        measure_plasticity(bert, pixels(4), progress=False)
    with pytest.raises(UnsupportedModelError, match=r"no config\.model_type"):
        measure_plasticity(nn.Linear(3, 3), pixels(4), progress=False)


def test_wrong_image_size(tiny_vit: nn.Module) -> None:
    with pytest.raises(InvalidInputError, match=r"16x16 images but got 24x24.*image processor"):
        measure_plasticity(tiny_vit, pixels(4, size=24), progress=False)


def test_wrong_channel_count(tiny_vit: nn.Module) -> None:
    with pytest.raises(InvalidInputError, match=r"3-channel images but got 1 channels"):
        measure_plasticity(tiny_vit, pixels(4, channels=1), progress=False)


def test_empty_data(tiny_vit: nn.Module) -> None:
    with pytest.raises(EmptyDataError, match="empty"):
        measure_plasticity(tiny_vit, torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE), progress=False)
    with pytest.raises(EmptyDataError):
        measure_plasticity(tiny_vit, loader(torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE)), progress=False)


def test_fewer_pairs_than_asked(tiny_vit: nn.Module) -> None:
    with pytest.raises(NotEnoughPairsError, match=r"asked for 6 pairs but 10 downstream examples make 5"):
        measure_plasticity(tiny_vit, pixels(10), num_pairs=6, progress=False)
    with pytest.raises(NotEnoughPairsError, match="yielded only 4"):
        measure_plasticity(tiny_vit, loader(pixels(4)), reference=loader(pixels(4)), num_pairs=9, progress=False)


def test_unknown_component(tiny_vit: nn.Module) -> None:
    with pytest.raises(UnknownComponentError, match=r"\['mlp'\].*attn_norm"):
        measure_plasticity(tiny_vit, pixels(4), components=["mha", "mlp"], progress=False)


def test_unknown_protocol_and_bad_sizes(tiny_vit: nn.Module) -> None:
    with pytest.raises(InvalidInputError, match="protocol"):
        measure_plasticity(tiny_vit, pixels(4), protocol="paired", progress=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="batch_size"):
        measure_plasticity(tiny_vit, pixels(4), batch_size=0, progress=False)
    with pytest.raises(InvalidInputError, match=r"shape \(N, channels, height, width\)"):
        measure_plasticity(tiny_vit, torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE), progress=False)


def test_dataset_without_processor_asks_for_one(tiny_vit: nn.Module) -> None:
    ds = datasets.Dataset.from_dict({"image": [Image.new("L", (8, 8))] * 4}).cast_column("image", datasets.Image())
    with pytest.raises(InvalidInputError, match="image_processor="):
        measure_plasticity(tiny_vit, ds, progress=False)
