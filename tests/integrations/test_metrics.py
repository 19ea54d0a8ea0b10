"""The bundled metric loads through ``evaluate`` by local path and computes accuracy by its definition."""

from __future__ import annotations

import pytest

from hf_plasticity import InvalidInputError
from hf_plasticity.integrations.metrics import load_metric


def test_accuracy_loads_offline_and_counts_matches() -> None:
    metric = load_metric("accuracy")
    preds, refs = [0, 1, 2, 2, 1], [0, 1, 1, 2, 0]
    expected = sum(p == r for p, r in zip(preds, refs, strict=True)) / len(refs)
    assert metric.compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(expected)


def test_accuracy_accumulates_batches() -> None:
    metric = load_metric("accuracy")
    metric.add_batch(predictions=[1, 1], references=[1, 0])
    metric.add_batch(predictions=[3], references=[3])
    assert metric.compute()["accuracy"] == pytest.approx(2 / 3)


def test_unknown_metric_names_the_fix() -> None:
    with pytest.raises(InvalidInputError, match=r"evaluate\.load"):
        load_metric("bleu")
