"""The estimator against a brute-force per-pair computation, known properties, and bad inputs."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from transformers import SwinConfig, SwinModel, ViTImageProcessor

from hf_plasticity import (
    COMPONENTS,
    EmptyDataError,
    InvalidInputError,
    NonFiniteError,
    NotEnoughPairsError,
    SmallSampleWarning,
    UnknownComponentError,
    UnsupportedModelError,
    measure_plasticity,
    resolve_components,
)
from hf_plasticity.measure.estimator import model_inputs
from tests.conftest import IMAGE_SIZE, TINY, pixels


def loader(t: torch.Tensor, batch_size: int = 4) -> torch.utils.data.DataLoader:
    """A DataLoader keeps pair order, so pair i is (reference[i], data[i]) for the brute force."""
    return torch.utils.data.DataLoader(t, batch_size=batch_size)


def frob(t: torch.Tensor) -> float:
    return float(torch.linalg.norm(t.reshape(-1).double()))


# The paper's five components, by module path inside one block (the paper's definition, docs/architectures.md),
# written out here rather than read from the registry under test: ffn_fc1 is the linear map ALONE.
PAPER_BLOCKS = {
    "vit": ("layers", ("layernorm_before", "attention", "layernorm_after", "mlp.fc1", "mlp.fc2")),
    "deit": ("layers", ("layernorm_before", "attention", "layernorm_after", "mlp.fc1", "mlp.fc2")),
    "dinov2": ("encoder.layer", ("norm1", "attention", "norm2", "mlp.fc1", "mlp.fc2")),
}


def paper_modules(model: nn.Module) -> tuple[nn.Module, list[list[nn.Module]]]:
    """The embedding and, per layer, the five component modules in COMPONENTS order."""
    base = model.base_model
    layers_path, names = PAPER_BLOCKS[model.config.model_type]
    blocks = base.get_submodule(layers_path)
    return base.embeddings, [[block.get_submodule(n) for n in names] for block in blocks]


def call(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    out = module(z)
    return out[0] if isinstance(out, tuple) else out


def brute_force_shared(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per pair, per layer, per component: ||f(z_x) - f(z_y)|| / ||z_x - z_y||, one pair at a time.

    Every component receives the pair's embedding outputs; ffn_fc2 (4E inputs) receives them zero-padded.
    """
    embeddings, layers = paper_modules(model)
    out = np.zeros((len(x), len(layers), len(COMPONENTS)))
    with torch.no_grad():
        for i in range(len(x)):
            zx, zy = embeddings(x[i : i + 1]), embeddings(y[i : i + 1])
            for layer, modules in enumerate(layers):
                for c, module in enumerate(modules):
                    width = getattr(module, "in_features", zx.shape[-1])
                    fx = call(module, F.pad(zx, (0, width - zx.shape[-1])))
                    fy = call(module, F.pad(zy, (0, width - zy.shape[-1])))
                    out[i, layer, c] = frob(fx - fy) / frob(zx - zy)
    return out


def brute_force_in_situ(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per pair: run x and y separately, record each component's real input and output with hooks."""
    _, layers = paper_modules(model)
    seen: dict[tuple[int, int, str], torch.Tensor] = {}
    handles = []
    for layer, modules in enumerate(layers):
        for c, module in enumerate(modules):

            def pre(mod, args, kwargs, key=(layer, c)):
                seen[(*key, "in")] = (args[0] if args else kwargs["hidden_states"]).clone()

            def post(mod, args, output, key=(layer, c)):
                seen[(*key, "out")] = (output[0] if isinstance(output, tuple) else output).clone()

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post))
    out = np.zeros((len(x), len(layers), len(COMPONENTS)))
    try:
        with torch.no_grad():
            for i in range(len(x)):
                model(pixel_values=x[i : i + 1])
                sx = dict(seen)
                model(pixel_values=y[i : i + 1])
                for layer in range(len(layers)):
                    for c in range(len(COMPONENTS)):
                        num = frob(sx[(layer, c, "out")] - seen[(layer, c, "out")])
                        out[i, layer, c] = num / frob(sx[(layer, c, "in")] - seen[(layer, c, "in")])
    finally:
        for h in handles:
            h.remove()
    return out


def test_ffn_fc1_is_the_linear_map_alone(tiny_vit: nn.Module) -> None:
    """Pair by pair, ffn_fc1 = ||W1 dz|| / ||dz|| (the paper), and not the rate of GELU(fc1)."""
    x, y = pixels(6, seed=21), pixels(6, seed=22)
    report = measure_plasticity(tiny_vit, loader(y), reference=loader(x), progress=False)
    fc1 = COMPONENTS.index("ffn_fc1")
    state = tiny_vit.state_dict()
    with torch.no_grad():
        for i in range(len(x)):
            zx, zy = tiny_vit.vit.embeddings(x[i : i + 1]), tiny_vit.vit.embeddings(y[i : i + 1])
            dz = (zx - zy).double()
            for layer in range(TINY["num_hidden_layers"]):
                w1 = state[f"vit.layers.{layer}.mlp.fc1.weight"].double()
                b1 = state[f"vit.layers.{layer}.mlp.fc1.bias"].double()
                linear = frob(dz @ w1.T) / frob(dz)
                gelu = frob(F.gelu(zx.double() @ w1.T + b1) - F.gelu(zy.double() @ w1.T + b1)) / frob(dz)
                assert report.rates[i, layer, fc1] == pytest.approx(linear, rel=1e-4)
                assert abs(report.rates[i, layer, fc1] - gelu) > 1e-2 * gelu  # the old (wrong) definition


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
    swin = SwinModel(SwinConfig(embed_dim=8, depths=[1], num_heads=[2], image_size=16, patch_size=4, window_size=2))
    with pytest.raises(UnsupportedModelError, match=r"'swin'.*hierarchical.*vit.*register_component_map"):
        measure_plasticity(swin, pixels(4), progress=False)
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


# ----------------------------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("side", ["reference", "data"])
def test_non_finite_pixels_name_the_pair(tiny_vit: nn.Module, protocol: str, value: float, side: str) -> None:
    x, y = pixels(8, seed=41), pixels(8, seed=42)
    (x if side == "reference" else y)[5, 0, 3, 3] = value
    which = "reference \\(x\\)" if side == "reference" else "downstream \\(y\\)"
    with pytest.raises(NonFiniteError, match=rf"pair 5: the {which} image has NaN or infinite pixel"):
        measure_plasticity(tiny_vit, loader(y), reference=loader(x), protocol=protocol, progress=False)


@pytest.mark.parametrize("protocol", ["shared", "in_situ"])
@pytest.mark.parametrize("comp", ["mha", "ffn_fc1", "ffn_norm"])
def test_non_finite_weight_names_layer_component_and_weight(tiny_vit: nn.Module, protocol: str, comp: str) -> None:
    path = resolve_components(tiny_vit).paths[comp][1]
    module = tiny_vit.get_submodule(path)
    param_name, param = next((n, p) for n, p in module.named_parameters() if p.ndim >= 1)
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteError, match=rf"layer 1, component {comp}: the weight {path}\.{param_name} holds NaN"):
        measure_plasticity(tiny_vit, pixels(8), protocol=protocol, progress=False)


def test_all_pairs_identical_is_refused(tiny_vit: nn.Module) -> None:
    with pytest.raises(NotEnoughPairsError, match="no pair had a non-zero distance"):
        measure_plasticity(tiny_vit, torch.ones(8, 3, IMAGE_SIZE, IMAGE_SIZE), progress=False)


def test_one_pair_warns_and_reports_no_interval(tiny_vit: nn.Module, tmp_path) -> None:
    with pytest.warns(SmallSampleWarning, match="at least 2"):
        report = measure_plasticity(tiny_vit, pixels(2), progress=False)
    assert np.isnan(report.ci95).all() and np.isnan(report.stat("mha", layer=0).ci95)
    rows = report.to_markdown(per_layer=True).split("| layer |")[1].splitlines()[2:]
    assert all(row.count("± n/a") == 5 for row in rows) and not any("± 0.0000" in row for row in rows)
    json.loads(report.save(tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize(
    ("device", "match"),
    [("cuda", r"no cuda device .*device='cpu'"), ("cuda:0", r"no cuda device"), ("tpu", r"not a torch device")],
)
def test_unavailable_or_unknown_device(tiny_vit: nn.Module, device: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        measure_plasticity(tiny_vit, pixels(4), device=device, progress=False)


@pytest.mark.parametrize(
    "values, finite",
    [([1.0, -2.0], True), ([3e38, 3e38], True), ([1.0, float("nan")], False), ([float("inf"), -1.0], False)],
    ids=["finite", "finite-sum-overflows", "nan", "inf"],
)
def test_weight_check_is_exact_even_when_the_fast_sum_overflows(values: list[float], finite: bool) -> None:
    from hf_plasticity.measure.estimator import _all_finite

    assert _all_finite(torch.tensor(values, dtype=torch.float32)) is finite


@pytest.mark.parametrize(
    ("x", "key", "dtype"),
    [
        (torch.zeros(2, 3, 4, 4), "pixel_values", torch.float32),
        (torch.zeros(2, 5, dtype=torch.long), "input_ids", torch.long),
        ({"input_ids": torch.zeros(2, 5, dtype=torch.long)}, "input_ids", torch.long),
    ],
    ids=["pixels", "token-ids", "dict"],
)
def test_model_inputs_contract(x: object, key: str, dtype: torch.dtype) -> None:
    """A pair batch side is pixels (float), token ids (integer) or a dict of forward keywords; [x; y] joins them."""
    inputs = model_inputs(x, x)
    assert list(inputs) == [key]
    assert inputs[key].dtype == dtype and inputs[key].shape[0] == 4
