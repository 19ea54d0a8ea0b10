"""The forced-choice benchmark's measurements: calibration error, forgetting, and the shift tasks' data."""

from __future__ import annotations

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
