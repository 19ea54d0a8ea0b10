"""Loading models by Hub id or local path, and the small ViT bundled with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, MissingDataError
from .lookup import check_hub, reject_local_typo

BUNDLED = "bundled"
"""The model name that means the package's own Fashion-MNIST ViT (see ``examples/pretrain_vit.py``)."""
BUNDLED_MODEL_ID = "hf-plasticity/vit-fashion-mnist"
"""How reports and cards name the bundled model, whatever folder it was installed in."""


def bundled_model_path() -> Path:
    """Directory of the bundled ViT pretrained on Fashion-MNIST, in Hugging Face format."""
    path = Path(str(resources.files("hf_plasticity") / "assets" / "vit-fashion-mnist"))
    if not (path / "config.json").is_file():
        raise MissingDataError(
            f"the bundled model is missing from {path}; reinstall hf-plasticity or rebuild it with "
            "`python examples/pretrain_vit.py`"
        )
    return path


def pretraining_reference() -> tuple[Any, str]:
    """The bundled model's pretraining data, as the reference (x) of measured pairs, and its name.

    Fashion-MNIST's test split from Debian's ``dataset-fashion-mnist`` when installed, else the 2,000-image
    sample shipped with the package. The demo and ``hf-plasticity finetune`` of the bundled model both pair
    it with their downstream data, as the paper pairs pretraining data with downstream data.
    """
    from .data.loaders import load_fashion_mnist, load_fashion_mnist_sample

    try:
        return load_fashion_mnist("test"), "fashion-mnist (test split)"
    except MissingDataError:
        return load_fashion_mnist_sample(), "fashion-mnist-sample (bundled)"


def resolve_model_name(name_or_path: str) -> str:
    """``"bundled"`` → the bundled model's directory; anything else unchanged."""
    return str(bundled_model_path()) if name_or_path == BUNDLED else name_or_path


def load_model(name_or_path: str, **kwargs: Any) -> Any:
    """Load an image model by Hub id or local directory (``"bundled"`` for the bundled ViT).

    Task models (``AutoModelForImageClassification``) are tried first so heads are kept; encoders
    without a classification head fall back to ``AutoModel``.
    """
    from transformers import AutoModel, AutoModelForImageClassification

    name = resolve_model_name(name_or_path)
    local = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not local.exists():
        raise MissingDataError(f"no model directory at {name!r}; pass a local checkpoint folder or a Hub id")
    if not local.exists():  # a Hub id: typos of local names stay local, an unreachable Hub fails in seconds
        reject_local_typo(name, [BUNDLED], "model")
        if not check_hub(name, "model"):
            kwargs = {"local_files_only": True, **kwargs}
    elif local.is_dir() and not (local / "config.json").is_file():
        raise MissingDataError(
            f"{name!r} is a folder without config.json, so not a transformers checkpoint; pass the folder "
            "written by model.save_pretrained(...)"
        )
    errors = []
    for auto in (AutoModelForImageClassification, AutoModel):
        try:
            return auto.from_pretrained(str(local) if local.exists() else name, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            errors.append(f"{auto.__name__}: {exc}")
    raise InvalidInputError(
        f"could not load a model from {name_or_path!r} (a local folder with config.json and weights, or a "
        "Hub id reachable from here):\n  " + "\n  ".join(errors)
    )


def load_image_processor(name_or_path: str, required: bool = False) -> Any:
    """The model's own image processor, or None when it ships none.

    ``required``: the user named this processor explicitly (``--image-processor``), so failing to load
    it is an error rather than a quiet None.
    """
    from transformers import AutoImageProcessor

    name = resolve_model_name(name_or_path)
    local = Path(name).expanduser()
    kwargs: dict[str, Any] = {}
    if not local.exists():
        if required:
            reject_local_typo(name, [BUNDLED], "image processor")
        if not check_hub(name, "model"):
            kwargs["local_files_only"] = True
    try:
        return AutoImageProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if required:
            raise InvalidInputError(
                f"could not load an image processor from {name_or_path!r} ({exc}); pass a folder holding "
                "preprocessor_config.json, or the Hub id of a model whose preprocessing matches yours"
            ) from exc
        return None
