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


TASK_AUTO_CLASSES: dict[str, str] = {
    "IMAGE_CLS": "AutoModelForImageClassification",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
}
"""The transformers auto class that loads a model for each task type (PEFT's names; images have none in PEFT)."""


def task_of(model: Any) -> tuple[str, str] | None:
    """The transformers auto class that loads ``model`` with its head, and the pipeline task it serves.

    ``model`` is a model, a model class, or a class name (``config.architectures``' entries, what
    ``adapter_config.json`` records as ``auto_mapping.base_model_class``). Read from transformers' own tables:
    the pipeline tasks (in their order) and, for each, the auto class whose mapping from config class to model
    class holds this one; a task of the model's own modality (``main_input_name``) wins a tie, so a ``ViTModel``
    is ``image-feature-extraction`` and a ``BertModel`` ``feature-extraction``. None: no auto class loads it.
    """
    import transformers
    from transformers.pipelines import SUPPORTED_TASKS

    from .compat import auto_model_mapping

    cls = getattr(transformers, model, None) if isinstance(model, str) else model
    cls = cls if isinstance(cls, type) or cls is None else type(cls)
    config_cls = getattr(cls, "config_class", None)
    if cls is None or config_cls is None:
        return None
    modality = "image" if getattr(cls, "main_input_name", None) == "pixel_values" else "text"
    found: list[tuple[str, str, str]] = []
    tasks: dict[str, Any] = dict(SUPPORTED_TASKS)
    for task, spec in tasks.items():
        for auto in spec.get("pt", ()):
            try:
                held = auto_model_mapping(auto)[config_cls]
            except (KeyError, ValueError, ImportError, AttributeError):
                continue
            if cls in (held if isinstance(held, tuple | list) else (held,)):
                found.append((auto.__name__, task, spec.get("type", "")))
    if not found:
        return None
    own = [f for f in found if f[2] == modality]
    auto_name, task, _ = (own or found)[0]
    return auto_name, task


def load_model(name_or_path: str, task: str | None = None, **kwargs: Any) -> Any:
    """Load a model by Hub id or local directory (``"bundled"`` for the bundled ViT).

    ``task`` (a key of :data:`TASK_AUTO_CLASSES`) loads that task's model, head included. Without it,
    image-classification models are tried first so heads are kept, then the class a local folder's
    ``config.json`` names (``architectures``: a causal LM or a text classifier keeps its head), then
    ``AutoModel`` (encoders).
    """
    import transformers
    from transformers import AutoModel, AutoModelForImageClassification

    if task is not None and task not in TASK_AUTO_CLASSES:
        raise InvalidInputError(f"unknown task {task!r}; choose one of {sorted(TASK_AUTO_CLASSES)}")
    autos = [getattr(transformers, TASK_AUTO_CLASSES[task])] if task else [AutoModelForImageClassification, AutoModel]

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
    if task is None and local.is_dir():  # a text model keeps the head it was saved with (e.g. its LM head)
        autos.insert(1, _saved_architecture(local))
    errors = []
    for auto in filter(None, autos):
        try:
            return auto.from_pretrained(str(local) if local.exists() else name, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            errors.append(f"{auto.__name__}: {exc}")
    raise InvalidInputError(
        f"could not load a model from {name_or_path!r} (a local folder with config.json and weights, or a "
        "Hub id reachable from here):\n  " + "\n  ".join(errors)
    )


def _saved_architecture(folder: Path) -> Any:
    """The transformers class named first in a checkpoint's ``config.json`` ``architectures``, or None."""
    import json

    import transformers

    try:
        names = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    cls = getattr(transformers, str(names[0]), None) if names else None
    return cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else None


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


def load_tokenizer(name_or_path: str, required: bool = False) -> Any:
    """The tokenizer saved with a model (a local folder or a Hub id in the cache), or None when it has none.

    ``required``: the user named this tokenizer explicitly (``--tokenizer``), so failing to load it is an
    error rather than a quiet None.
    """
    from transformers import AutoTokenizer

    name = resolve_model_name(name_or_path)
    local = Path(name).expanduser()
    kwargs: dict[str, Any] = {}
    if not local.exists():
        if name.startswith((".", "/", "~")):
            if required:
                raise MissingDataError(f"no tokenizer folder at {name!r}; pass a folder with tokenizer files")
            return None
        if required:
            reject_local_typo(name, [BUNDLED], "tokenizer")
        if not check_hub(name, "model"):
            kwargs["local_files_only"] = True
    try:
        return AutoTokenizer.from_pretrained(str(local) if local.exists() else name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if required:
            raise InvalidInputError(
                f"could not load a tokenizer from {name_or_path!r} ({exc}); pass a folder holding tokenizer.json "
                "or tokenizer_config.json (tokenizer.save_pretrained(folder)), or the model's Hub id"
            ) from exc
        return None
