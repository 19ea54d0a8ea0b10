"""The forced-choice benchmark's selection signals, each against a hand computation from its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hf_plasticity import measure_plasticity
from hf_plasticity.reproduce.scorers import SCORERS, ScoreContext, score, select
from hf_plasticity.tuner.targets import plasticity_linear_scores
from tests.conftest import TINY_MODELS, pixels

LINEARS = [
    f"vit.layers.{i}.{name}"
    for i in range(2)
    for name in ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1", "mlp.fc2")
]
BLOCKS = ["vit.layers.0", "vit.layers.1"]


@pytest.fixture(scope="module")
def reports():
    model = TINY_MODELS["vit"]()
    data = pixels(16, seed=7)
    return {p: measure_plasticity(model, data, protocol=p, progress=False) for p in ("shared", "in_situ")}


def batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        {"pixel_values": pixels(4, seed=10 + b), "labels": torch.randint(0, 3, (4,), generator=g)} for b in range(n)
    ]


def ctx(unit: str, reports=None, seed: int = 0) -> ScoreContext:
    return ScoreContext(TINY_MODELS["vit"](), unit, reports or {}, batches(), seed)  # type: ignore[arg-type]


def weight(path: str) -> np.ndarray:
    return TINY_MODELS["vit"]().get_submodule(path).weight.detach().double().numpy()


def test_every_signal_scores_every_unit_it_ranks(reports) -> None:
    for name, spec in SCORERS.items():
        for unit in spec.units:
            got = score(name, ctx(unit, reports))
            assert list(got) == (LINEARS if unit == "linear" else BLOCKS), name


def test_kappa_is_minus_the_condition_number() -> None:
    got = score("kappa", ctx("linear"))
    for lin in LINEARS:
        s = np.linalg.svd(weight(lin), compute_uv=False)
        assert got[lin] == pytest.approx(-s[0] / (s[-1] + 1e-8), rel=1e-4)
    blocks = score("kappa", ctx("block"))
    assert blocks["vit.layers.1"] == pytest.approx(np.mean([got[lin] for lin in LINEARS[6:]]), rel=1e-6)


def test_snr_is_spectrums_iqr_rule() -> None:
    got = score("snr", ctx("linear"))
    for lin in LINEARS:
        w = weight(lin)
        s = np.linalg.svd(w, compute_uv=False)
        sigma = (np.quantile(s, 0.75) - np.quantile(s, 0.25)) / 1.349
        eps = sigma * (1 + np.sqrt(min(w.shape) / max(w.shape)))
        noise = s[s <= eps].sum() if (s <= eps).any() else 1.0
        assert got[lin] == pytest.approx(s[s > eps].sum() / noise / s[0], rel=1e-4)


def _grads() -> list[dict[str, torch.Tensor]]:
    out = []
    for b in batches():
        model = TINY_MODELS["vit"]()
        logits = model(pixel_values=b["pixel_values"]).logits
        loss = nn.functional.cross_entropy(logits, b["labels"])
        names = [n for n, _ in model.named_parameters()]
        out.append(dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True)))
    return out


def test_grad_norm_and_rgn_from_their_definitions() -> None:
    grads = _grads()
    params = dict(TINY_MODELS["vit"]().named_parameters())
    got = score("grad_norm", ctx("linear"))
    for lin in LINEARS:
        expected = np.mean([g[f"{lin}.weight"].norm().item() for g in grads])
        assert got[lin] == pytest.approx(expected, rel=1e-4)
    blocks = score("grad_norm", ctx("block"))
    assert blocks["vit.layers.0"] == pytest.approx(sum(got[lin] ** 2 for lin in LINEARS[:6]), rel=1e-4)
    rgn = score("rgn", ctx("block"))
    for block in BLOCKS:
        names = [n for n in params if n.startswith(block + ".")]
        per = [np.mean([(g[n].norm() / params[n].detach().norm()).item() for g in grads]) for n in names]
        assert rgn[block] == pytest.approx(np.mean(per), rel=1e-4)


def test_inverted_reverses_plasticity_within_each_shape(reports) -> None:
    c = ctx("linear", reports)
    plast = plasticity_linear_scores(c.model, reports["in_situ"])
    inv = score("inverted", c)
    shapes: dict[tuple, list[str]] = {}
    for lin in LINEARS:
        shapes.setdefault(tuple(c.model.get_submodule(lin).weight.shape), []).append(lin)
    for group in shapes.values():
        assert sorted(inv[u] for u in group) == sorted(plast[u] for u in group)  # same values per shape
        most, least = max(group, key=plast.get), min(group, key=plast.get)
        assert inv[least] == max(plast[u] for u in group) and inv[most] == min(plast[u] for u in group)
    for k in (1, 3, 6):  # every count picks as many modules of each shape
        for group in shapes.values():
            assert len(set(select(inv, k)) & set(group)) == len(set(select(plast, k)) & set(group))


def test_shuffled_permutes_within_shapes_and_depends_on_the_seed(reports) -> None:
    plast = plasticity_linear_scores(TINY_MODELS["vit"](), reports["in_situ"])
    runs = [score("shuffled", ctx("linear", reports, seed)) for seed in range(4)]
    for got in runs:
        assert sorted(got.values()) == sorted(plast.values())
    assert len({tuple(r.values()) for r in runs}) > 1
    assert score("shuffled", ctx("linear", reports, 2)) == runs[2]


def test_first_last_and_plasticity_blocks(reports) -> None:
    assert select(score("first", ctx("block")), 1) == ["vit.layers.0"]
    assert select(score("last", ctx("block")), 1) == ["vit.layers.1"]
    assert set(score("plasticity_shared", ctx("block", reports))) == set(BLOCKS)
