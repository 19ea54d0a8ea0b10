"""Model cards that carry the plasticity ranking: built from a report, a config or a PEFT model.

A finetuned model's Hub page should say which components were measured as most plastic, which were
trained, with what result and how to load it. The card's metadata holds all of it in a ``plasticity:``
block (machine-readable: ``ModelCard.load(...).data.plasticity``) beside the standard keys
(``library_name: peft``, ``base_model``, ``tags``, ``model-index``); the body renders the same facts from the
Jinja templates in ``hf_plasticity/integrations/templates`` (documented in the top-level ``model_cards/`` folder).

Writing never clobbers: an existing README keeps its own metadata and text; only our metadata keys and
the section between our markers are replaced. Importing this module makes PEFT's ``save_pretrained`` of a
plasticity model write this card (and the report and figure beside it) instead of PEFT's generic one; the
Trainer's ``save_model``/``push_to_hub`` go through the same hook (Trainer calls it after writing its own
summary, which is then kept below our section).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..components import rank_components
from ..errors import InvalidInputError, PlasticityError
from ..io import atomic_write_text
from ..report.report import PlasticityReport

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from ..tuner.config import PlasticityConfig

BEGIN = "<!-- hf_plasticity:begin"
END = "<!-- hf_plasticity:end -->"
CARD_NAME = "README.md"
REPORT_NAME = "plasticity_report.json"
FIGURE_NAME = "plasticity.png"
PAPER = "arXiv:2602.06883"
CITATION = """@inproceedings{odonnat2026plasticity,
  title     = {Vision Transformer Finetuning Benefits from Non-Smooth Components},
  author    = {Odonnat, Ambroise and Chapel, Laetitia and Tavenard, Romain and Redko, Ievgen},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2026},
  note      = {arXiv:2602.06883}
}"""
# Keys of the metadata this package owns: replaced on every write; every other key is the user's and kept.
OWNED_KEYS = ("library_name", "base_model", "pipeline_tag", "plasticity")
# Data set names of hf_plasticity's own loaders that have a Hub id (the ``datasets`` metadata wants Hub ids).
HUB_DATASETS = {
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "mnist5k": "ylecun/mnist",
}
# Trainer evaluation keys that describe the run, not the model's quality.
_NOT_METRICS = {"epoch", "runtime", "samples_per_second", "steps_per_second", "total_flos"}


class ModelCardError(PlasticityError, ValueError):
    """A card cannot be built or merged (no plasticity information, or an unreadable existing README)."""


# ---------------------------------------------------------------------------------------- templates
def template_path(name: str) -> Path:
    """Path of a bundled Jinja template (``adapter_card.md.j2``, ``base_model_card.md.j2``).

    The templates are package data (``hf_plasticity/integrations/templates``) so that a wheel or an editable install
    renders the same cards as a source checkout; ``model_cards/README.md`` documents them.
    """
    path = Path(str(resources.files("hf_plasticity.integrations") / "templates" / name))
    if not path.is_file():
        raise ModelCardError(f"no card template {name!r} in {path.parent}; reinstall hf-plasticity")
    return path


# ---------------------------------------------------------------------------------------- metadata
def plasticity_metadata(
    report: PlasticityReport | None = None,
    config: PlasticityConfig | None = None,
    model: Any = None,
    adapter_name: str = "default",
) -> dict[str, Any]:
    """The ``plasticity:`` metadata block: measurement, ranking, per-layer modules, selection, training.

    Any of the three may be missing: a report alone gives the measurement; a config adds the rule and the
    trained modules (and its stored scores stand in for a missing report); a PEFT model adds the
    parameter counts and its own module paths.
    """
    if config is None and model is not None:
        config = plasticity_config_of(model, adapter_name)
    if report is None and config is not None:
        report = kept_report(config, model, adapter_name)
    if report is None and config is None:
        raise ModelCardError("a plasticity card needs a PlasticityReport, a PlasticityConfig or a plasticity model")
    block: dict[str, Any] = {"paper": PAPER, "library": f"hf-plasticity {_version()}"}
    if report is not None:
        block.update(_measurement(report, model))
    else:
        block.update(_stored_scores(config))
    if config is not None:
        block["selection"] = _selection(config)
        block["trained_modules"] = list(config.selected_modules or [])
        block["modules_to_save"] = list(config.modules_to_save or [])
    if model is not None and hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        block["trainable_parameters"] = int(trainable)
        block["total_parameters"] = int(total)
        block["trainable_share"] = _num(trainable / total) if total else None
    return block


def _measurement(report: PlasticityReport, model: Any) -> dict[str, Any]:
    stats = report.summary()
    paths = _module_paths(report, model)
    mean, ci = report.mean, report.ci95
    layers = []
    for layer in range(report.num_layers):
        cells = [
            {
                "module": paths[comp][layer],
                "component": comp,
                "score": _num(mean[layer, ci_]),
                "ci95": _num(ci[layer, ci_]),
            }
            for ci_, comp in enumerate(report.components)
        ]
        order = rank_components({c["component"]: c["score"] for c in cells})
        cells.sort(key=lambda c: order.index(c["component"]))
        layers.append({"layer": layer, "modules": cells})
    out: dict[str, Any] = {
        "protocol": report.protocol,
        "pairs": int(report.num_pairs),
        "excluded_pairs": int(report.excluded_pairs),
        "data": {"downstream": report.data_name, "reference": report.reference_name, "seed": report.seed},
        "measured_model": {k: report.model.get(k) for k in ("model_id", "model_type", "config_hash")},
        "score_source": "report",
        "ranking": [
            {"component": c, "score": _num(s.mean), "ci95": _num(s.ci95), "n": int(s.n)} for c, s in stats.items()
        ],
        "layers": layers,
    }
    if report.bounds is not None:  # the paper's theoretical upper bounds, and the data they depend on
        out["bounds"] = _bounds(report.bounds, report)
    if report.tokens:
        out["embedding"] = {
            "radius": _num(report.radius),
            "token_spread": _num(report.token_spread),
            "tokens": report.seq_len,
        }
    return out


def _stored_scores(config: PlasticityConfig) -> dict[str, Any]:
    """What a config alone knows: the scores it was given and where they came from (no intervals)."""
    scores = config.component_scores()
    ranked = rank_components(scores)
    out: dict[str, Any] = {
        "score_source": config.resolved_score_source(),
        "ranking": [{"component": c, "score": _num(scores[c])} for c in ranked],
    }
    provenance = config.resolved_scores().get("report") or {}
    if provenance:
        out["protocol"] = provenance.get("protocol")
        out["pairs"] = provenance.get("num_pairs")
        out["data"] = {"downstream": provenance.get("data"), "reference": provenance.get("reference")}
        out["measured_model"] = {k: provenance.get(k) for k in ("model_id", "model_type", "config_hash")}
    per_layer = config.resolved_scores().get("layers") or {}
    if per_layer:
        n = max(len(v) for v in per_layer.values())
        out["layers"] = [
            {
                "layer": layer,
                "modules": sorted(
                    ({"component": c, "score": _num(v[layer])} for c, v in per_layer.items() if layer < len(v)),
                    key=lambda m: -_finite(m["score"]),
                ),
            }
            for layer in range(n)
        ]
    return out


def _selection(config: PlasticityConfig) -> dict[str, Any]:
    rule = config.rule
    out: dict[str, Any] = {"rule": rule, "value": _plain(getattr(config, rule)), "mode": config.mode}
    out["layers"] = list(config.layers) if config.layers is not None else "all"
    if config.mode == "full":
        out["keep_original"] = bool(config.keep_original)
    else:
        out["lora"] = {"r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout}
    return out


def _bounds(bounds: Any, report: PlasticityReport) -> dict[str, list[Any]]:
    """The report's (layer, component) bounds as one JSON-ready list per component."""
    return {comp: [_num(v) for v in bounds[:, i]] for i, comp in enumerate(report.components)}


def _module_paths(report: PlasticityReport, model: Any) -> dict[str, list[str]]:
    """The trained model's own module paths when known (a report of ``ViTModel`` lacks the ``vit.`` prefix)."""
    if model is None:
        return report.module_paths
    from ..components import resolve_components

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        resolved = resolve_components(base)
    except PlasticityError:
        return report.module_paths
    if resolved.num_layers != report.num_layers:
        return report.module_paths
    return {c: list(resolved.paths[c]) for c in report.components}


# ---------------------------------------------------------------------------------------- the card
def build_model_card(
    source: PlasticityReport | PlasticityConfig | Any | str | os.PathLike[str] | None = None,
    *,
    report: PlasticityReport | str | os.PathLike[str] | None = None,
    config: PlasticityConfig | None = None,
    metrics: Mapping[str, float] | str | os.PathLike[str] | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    pipeline_tag: str = "image-classification",
    figure: str | None = FIGURE_NAME,
    license: str | None = None,
    summary: str | None = None,
    training_text: str | None = None,
    adapter_name: str = "default",
    metrics_dataset: str | None = None,
) -> ModelCard:
    """A ``ModelCard`` for a plasticity adapter (or, from a report alone, for the measured model).

    ``source`` is a report, a config, a PEFT model, or a path (a report JSON, or a saved adapter folder
    whose ``adapter_config.json`` and ``plasticity_report.json`` are read). ``metrics`` (a mapping, or a
    JSON file such as the Trainer's ``eval_results.json``) become the ``model-index`` results.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model = None
    if isinstance(source, PlasticityReport):
        report = report or source
    elif source is not None and _is_plasticity_config(source):
        config = source
    elif isinstance(source, str | os.PathLike):
        found_report, found_config = _read_folder_or_report(Path(source))
        report, config = report or found_report, config or found_config
    elif source is not None:
        model = source
        config = config or plasticity_config_of(model, adapter_name)
        if config is None:
            raise ModelCardError(
                f"{type(source).__name__} carries no PlasticityConfig adapter named {adapter_name!r}; pass a "
                "plasticity PEFT model, a PlasticityConfig or a PlasticityReport"
            )
    if isinstance(report, str | os.PathLike):
        report = PlasticityReport.load(report)
    block = plasticity_metadata(report, config, model, adapter_name)
    report = report or (kept_report(config, model, adapter_name) if config is not None else None)
    values = _read_metrics(metrics)

    is_adapter = config is not None
    if is_adapter:  # a base model's own card has no base_model unless one is given
        base_model = base_model or _base_model_of(config, model, report)
    datasets = datasets if datasets is not None else _hub_datasets(report, config)
    name = model_name or (Path(repo_id).name if repo_id else None) or _default_name(base_model, is_adapter)
    dataset_name = (
        metrics_dataset
        or (report.data_name if report is not None else None)
        or (datasets[0] if datasets else "unknown")
    )
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=datasets[0] if datasets else _slug(dataset_name),
            dataset_name=dataset_name,
            metric_type=key,
            metric_value=value,
        )
        for key, value in values.items()
    ]
    tags = ["plasticity", "hf-plasticity", "vision"]
    if block.get("selection"):
        tags.append(f"plasticity-{block['selection']['mode']}")
    data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        base_model=_valid_repo_id(base_model),
        datasets=datasets or None,
        tags=tags,
        pipeline_tag=pipeline_tag,
        license=license,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
        plasticity=block,
    )
    if is_adapter and data.base_model:
        data.tags.append(f"base_model:adapter:{data.base_model}")
    base_model_ref = base_model or "path/or/id-of-the-base-model"
    kwargs = {
        "model_name": name,
        "summary": summary or _summary(block, base_model, is_adapter),
        "pairs_text": _pairs_text(block),
        "ranking_table": _ranking_table(block),
        "layer_table": _layer_table(block),
        "has_bounds": "bounds" in block,
        "figure": figure if report is not None else None,
        "score_source": block.get("score_source") or "the paper's theoretical ranking",
        "training_text": training_text if training_text is not None else _training_text(block),
        "trained_modules": block.get("trained_modules", []),
        "metrics_table": _metrics_table(values, dataset_name),
        "mode": (block.get("selection") or {}).get("mode"),
        "base_model_ref": base_model_ref,
        "base_kwargs": _base_kwargs(model),
        "repo_ref": repo_id or f"path/to/{name}",
        "citation": CITATION,
    }
    template = "adapter_card.md.j2" if is_adapter else "base_model_card.md.j2"
    card = ModelCard.from_template(data, template_path=str(template_path(template)), **kwargs)
    card.text = _tidy(card.text)
    return card


# ---------------------------------------------------------------------------------------- merging & writing
def merge_model_card(card: ModelCard, existing: str | None) -> ModelCard:
    """Our card merged into an existing README: our metadata keys and section replaced, the rest kept.

    Tags and data sets are united (existing first); ``model-index`` is ours when we have results, else
    the existing one. An untouched generic template (PEFT's or transformers', full of "[More Information
    Needed]") is dropped rather than kept below ours.
    """
    from huggingface_hub import ModelCard

    if not existing or not existing.strip():
        return card
    try:
        old = ModelCard(existing, ignore_metadata_errors=True)
    except Exception as exc:  # a README with YAML the Hub cannot parse: say so instead of overwriting it
        raise ModelCardError(
            f"the existing README cannot be parsed ({type(exc).__name__}: {exc}); fix or move it, then write again"
        ) from exc
    meta = old.data.to_dict()
    ours = card.data.to_dict()
    for key in OWNED_KEYS:
        if ours.get(key) is not None:
            meta[key] = ours[key]
    for key in ("tags", "datasets"):
        merged = list(dict.fromkeys([*(_as_list(meta.get(key))), *(_as_list(ours.get(key)))]))
        if merged:
            meta[key] = merged
    if ours.get("model-index"):
        meta["model-index"] = ours["model-index"]
    for key in ("license",):
        if ours.get(key) and not meta.get(key):
            meta[key] = ours[key]
    rest = _strip_section(old.text)
    if rest.count("[More Information Needed]") >= 5:
        rest = ""
    ours_section = _section(card.text)
    body = ours_section if not rest.strip() else f"{ours_section}\n\n{rest.strip()}\n"
    merged_card = ModelCard(_compose(meta, body))
    return merged_card


def write_model_card(card: ModelCard, path: str | os.PathLike[str]) -> Path:
    """Write ``card`` to ``path`` (a README or its folder), merged into what is there, atomically."""
    target = Path(path)
    if target.is_dir() or not target.suffix:
        target = target / CARD_NAME
    existing = target.read_text(encoding="utf-8") if target.is_file() else None
    merged = merge_model_card(card, existing)
    return atomic_write_text(target, str(merged))


def save_card_files(
    model: Any,
    folder: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    metrics: Mapping[str, float] | str | os.PathLike[str] | None = None,
    adapter_name: str | None = None,
) -> Path:
    """Write the card, the report (``plasticity_report.json``) and the figure of a plasticity model into ``folder``."""
    folder = Path(folder)
    name = adapter_name or plasticity_adapter_name(model)
    config = plasticity_config_of(model, name)
    report = kept_report(config, model, name)
    if report is not None:
        report.save(folder / REPORT_NAME)
        report.plot(folder / FIGURE_NAME)
    card = build_model_card(model, metrics=metrics, repo_id=repo_id, adapter_name=name)
    return write_model_card(card, folder)


def attach_report(
    model: Any, report: PlasticityReport | str | os.PathLike[str], adapter_name: str = "default"
) -> None:
    """Attach the measured report to a plasticity model, so its card shows the intervals and the figure.

    A config built from a report keeps it already; this is for one built from a mapping or a saved
    adapter, or for a report measured later.
    """
    config = plasticity_config_of(model, adapter_name)
    if config is None:
        raise ModelCardError(f"the model has no plasticity adapter named {adapter_name!r}")
    from ..tuner.model import PlasticityModel

    tuner = model if isinstance(model, PlasticityModel) else getattr(model, "base_model", None)
    kept = report if isinstance(report, PlasticityReport) else PlasticityReport.load(report)
    tuner.__dict__.setdefault("plasticity_reports", {})[adapter_name] = kept


def kept_report(config: Any, model: Any = None, adapter_name: str = "default") -> PlasticityReport | None:
    """The measured report behind a config: the one its tuner model kept, or a not-yet-resolved config's own."""
    from ..tuner.model import report_of

    report = report_of(model, adapter_name) if model is not None else None
    if report is None and config is not None and isinstance(config.scores, PlasticityReport):
        report = config.scores
    return report


# ---------------------------------------------------------------------------------------- the bundled model
BUNDLED_CARD = "model_cards/vit-fashion-mnist.md"
BUNDLED_REPORT = "model_cards/vit-fashion-mnist.report.json"
BUNDLED_FIGURE = "model_cards/vit-fashion-mnist.png"
FASHION_MNIST_CLASSES = "T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot"


def bundled_model_card(report: PlasticityReport, figure: str | None = None) -> ModelCard:
    """The card of the ViT bundled with the package: its pretraining (from its config.json) and plasticity.

    Rendered from committed inputs only (the report in ``model_cards/`` and the bundled ``config.json``),
    so ``hf-plasticity card --bundled`` reproduces the committed card byte for byte.
    """
    from ..models import BUNDLED_MODEL_ID, bundled_model_path

    meta = json.loads((bundled_model_path() / "config.json").read_text(encoding="utf-8"))["hf_plasticity_pretraining"]
    summary = (
        "A small Vision Transformer (6 layers, hidden size 128, 4 heads, patch 4, about 1.2M parameters) trained\n"
        "from scratch on the Fashion-MNIST training split by `examples/pretrain_vit.py` of hf_plasticity. It is the\n"
        "source model hf_plasticity bundles for measuring component plasticity.\n\n"
        f"**Test accuracy: {meta['test_accuracy']:.2%}** on the {meta['test_examples']} Fashion-MNIST test images."
    )
    training = (
        f"Training: {meta['train_examples']} images, {meta['epochs']} epochs ({meta['steps']} steps of batch\n"
        f"{meta['batch_size']}), AdamW (peak lr {meta['lr']}, weight decay {meta['weight_decay']}), cosine schedule\n"
        f"with warmup, seed {meta['seed']}, {meta['train_seconds']:.0f} s on {meta['threads']} CPU thread(s).\n"
        f"Position embeddings start from a {meta['pos_init']} init; no data augmentation, no dropout.\n\n"
        "Inputs: grayscale images converted to RGB, 28x28, normalized with mean = std = 0.5 (see\n"
        f"`preprocessor_config.json`). Labels: {FASHION_MNIST_CLASSES}.\n\n"
        "Fashion-MNIST is © Zalando SE, released under the MIT licence."
    )
    return build_model_card(
        report,
        metrics={"accuracy": meta["test_accuracy"]},
        base_model=None,
        datasets=[HUB_DATASETS["fashion-mnist"]],
        model_name="vit-fashion-mnist",
        repo_id=BUNDLED_MODEL_ID,
        figure=figure,
        license="mit",
        summary=summary,
        training_text=training,
        metrics_dataset="Fashion-MNIST (test split)",
    )


def regenerate_bundled_card(root: str | os.PathLike[str] = ".") -> list[Path]:
    """Rewrite the bundled model's cards from the committed report (run from a source checkout).

    Writes ``model_cards/vit-fashion-mnist.md`` (with its figure beside it) and the copy shipped in
    ``hf_plasticity/assets/vit-fashion-mnist/README.md``; after re-measuring the bundled model, save the
    new report to ``model_cards/vit-fashion-mnist.report.json`` and run this again
    (``hf-plasticity card --bundled``).
    """
    from ..models import bundled_model_path

    root = Path(root)
    report_path = root / BUNDLED_REPORT
    if not report_path.is_file():
        raise ModelCardError(f"no bundled report at {str(report_path)!r}; run this from a source checkout's root")
    report = PlasticityReport.load(report_path)
    figure = root / BUNDLED_FIGURE
    report.plot(figure)
    written = [atomic_write_text(root / BUNDLED_CARD, str(bundled_model_card(report, figure=figure.name)))]
    shipped = root / "hf_plasticity" / "assets" / bundled_model_path().name / CARD_NAME
    written.append(atomic_write_text(shipped, str(bundled_model_card(report))))
    return [figure, *written]


# ---------------------------------------------------------------------------------------- helpers
def plasticity_config_of(model: Any, adapter_name: str = "default") -> PlasticityConfig | None:
    """The model's ``PlasticityConfig`` for ``adapter_name`` (None when it is not a plasticity adapter)."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping):
        return None
    config = configs.get(adapter_name)
    return config if _is_plasticity_config(config) else None


def plasticity_adapter_name(model: Any) -> str:
    configs = getattr(model, "peft_config", {}) or {}
    active = getattr(model, "active_adapter", None)
    if isinstance(active, str) and _is_plasticity_config(configs.get(active)):
        return active
    return next((n for n, c in configs.items() if _is_plasticity_config(c)), "default")


def _is_plasticity_config(obj: Any) -> bool:
    from ..tuner.config import PlasticityConfig

    return isinstance(obj, PlasticityConfig)


def _read_folder_or_report(path: Path) -> tuple[PlasticityReport | None, PlasticityConfig | None]:
    if path.is_file():
        return PlasticityReport.load(path), None
    if not (path / "adapter_config.json").is_file():
        raise ModelCardError(
            f"{str(path)!r} is neither a report JSON nor a saved adapter folder (no adapter_config.json)"
        )
    from ..tuner.config import PlasticityConfig

    raw = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    if raw.get("peft_type") != "PLASTICITY":
        raise ModelCardError(f"{str(path)!r} holds a {raw.get('peft_type')} adapter, not a plasticity adapter")
    config = PlasticityConfig.from_pretrained(str(path))
    report = PlasticityReport.load(path / REPORT_NAME) if (path / REPORT_NAME).is_file() else None
    return report, config


def _read_metrics(metrics: Mapping[str, float] | str | os.PathLike[str] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    if isinstance(metrics, str | os.PathLike):
        try:
            metrics = json.loads(Path(metrics).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"cannot read metrics from {str(metrics)!r}: {exc}") from exc
    if not isinstance(metrics, Mapping):
        raise InvalidInputError("metrics must be a mapping name -> number, e.g. {'accuracy': 0.93}")
    out = {}
    for key, value in metrics.items():
        name = str(key).removeprefix("eval_").removeprefix("test_")
        if name in _NOT_METRICS:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidInputError(f"metric {key!r} = {value!r} is not a finite number")
        out[name] = _num(value)
    return out


def _base_model_of(config: Any, model: Any, report: PlasticityReport | None) -> str | None:
    candidates = []
    if config is not None:
        candidates.append(getattr(config, "base_model_name_or_path", None))
    if model is not None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        candidates.append(getattr(getattr(base, "config", None), "_name_or_path", None))
    if report is not None:
        candidates.append(report.model.get("model_id"))
    return next((c for c in candidates if c), None)


def _valid_repo_id(name: str | None) -> str | None:
    """A Hub repo id, or None: a local path is no ``base_model`` for the Hub."""
    if not name or os.path.isabs(name) or name.startswith((".", "~")) or Path(name).exists():
        return None
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) else None


def _hub_datasets(report: PlasticityReport | None, config: Any) -> list[str]:
    names = []
    if report is not None:
        names = [report.data_name, report.reference_name]
    elif config is not None:
        prov = config.resolved_scores().get("report") or {}
        names = [prov.get("data"), prov.get("reference")]
    out = []
    for name in names:
        if not name:
            continue
        key = next((k for k in HUB_DATASETS if name.startswith(k)), None)
        if key:
            out.append(HUB_DATASETS[key])
        elif _valid_repo_id(name) and name not in ("digits",):
            out.append(name)
    return list(dict.fromkeys(out))


def _default_name(base_model: str | None, is_adapter: bool) -> str:
    stem = (base_model or "model").rstrip("/").split("/")[-1]
    return f"{stem}-plasticity" if is_adapter else stem


def _summary(block: dict[str, Any], base_model: str | None, is_adapter: bool) -> str:
    base = f"`{base_model}`" if base_model else "its base model"
    if not is_adapter:
        return f"{base} with the plasticity of its components measured by hf-plasticity."
    sel = block["selection"]
    share = block.get("trainable_share")
    share_text = f", {share:.2%} of the parameters" if share is not None else ""
    return (
        f"A finetune of {base} that trains only its most plastic components, chosen by measuring them "
        f"(Odonnat et al., 2026): {len(block['trained_modules'])} module(s) by the `{sel['rule']}` rule, "
        f"mode `{sel['mode']}`{share_text}."
    )


def _pairs_text(block: dict[str, Any]) -> str:
    data = block.get("data") or {}
    pairs = block.get("pairs")
    what = f"{pairs} pairs of images" if pairs else "pairs of images"
    if data.get("reference"):
        what += f" (x from {data['reference']}, y from {data.get('downstream')})"
    elif data.get("downstream"):
        what += f" from {data['downstream']}"
    if block.get("protocol"):
        what += f", {block['protocol']} protocol"
    return what


def _ranking_table(block: dict[str, Any]) -> str:
    rows = block.get("ranking") or []
    if not rows:
        return ""
    with_ci = any("ci95" in r for r in rows)
    lines = ["| rank | component | plasticity | 95% CI |" if with_ci else "| rank | component | score |"]
    lines.append("|---:|---|---:|---:|" if with_ci else "|---:|---|---:|")
    for i, r in enumerate(rows, start=1):
        cells = [str(i), f"`{r['component']}`", _fmt(r.get("score"))]
        if with_ci:
            cells.append(f"± {_fmt(r.get('ci95'))}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _layer_table(block: dict[str, Any]) -> str:
    layers = block.get("layers") or []
    if not layers:
        return ""
    comps = [r["component"] for r in block.get("ranking", [])]
    bounds = block.get("bounds") if isinstance(block.get("bounds"), dict) else {}
    lines = ["| layer | " + " | ".join(f"`{c}`" for c in comps) + " | most plastic |"]
    lines.append("|---:|" + "---:|" * len(comps) + "---|")
    for entry in layers:
        cells = {m["component"]: m for m in entry["modules"]}
        row = []
        for c in comps:
            m = cells.get(c, {})
            text = _fmt(m.get("score"))
            if m.get("ci95") is not None:
                text += f" ± {_fmt(m['ci95'])}"
            bound = bounds.get(c)
            if isinstance(bound, list) and entry["layer"] < len(bound) and bound[entry["layer"]] is not None:
                text += f" (≤ {_fmt(bound[entry['layer']])})"
            row.append(text)
        top = entry["modules"][0] if entry["modules"] else {}
        row.append(f"`{top.get('module') or top.get('component', '')}`")
        lines.append(f"| {entry['layer']} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _training_text(block: dict[str, Any]) -> str:
    sel = block.get("selection")
    if not sel:
        return ""
    value = sel["value"]
    if sel["rule"] == "top_k":
        rule = f"the {value} most plastic component type(s) in every layer"
    elif sel["rule"] == "budget":
        rule = f"the most plastic modules that fit a budget of {value:.0%} of the parameters"
    elif sel["rule"] == "threshold":
        rule = f"every module with plasticity ≥ {value}"
    else:
        rule = f"the component types {', '.join(f'`{c}`' for c in value)}"
    layers = "all layers" if sel["layers"] == "all" else f"layers {sel['layers']}"
    if sel["mode"] == "full":
        how = "their own weights trained in full" + (
            " (a trained copy beside the frozen original)" if sel.get("keep_original") else ", in place"
        )
    else:
        lora = sel["lora"]
        how = f"LoRA in their linear layers (r = {lora['r']}, alpha = {lora['lora_alpha']})"
        how += "; a selected LayerNorm trained directly"
    text = (
        f"[hf-plasticity](https://pypi.org/project/hf-plasticity/)'s `PlasticityConfig` (a PEFT method) selected "
        f"{rule}, in {layers} ({len(block.get('trained_modules', []))} modules), {how}"
    )
    heads = block.get("modules_to_save") or []
    text += f"; the head ({', '.join(f'`{h}`' for h in heads)}) was trained in full." if heads else "."
    if block.get("trainable_parameters") is not None:
        text += (
            f" Trainable parameters: {block['trainable_parameters']:,} of {block['total_parameters']:,} "
            f"({block['trainable_share']:.2%})."
        )
    return text


def _metrics_table(values: dict[str, float], dataset: str) -> str:
    if not values:
        return ""
    lines = ["| metric | value | data |", "|---|---:|---|"]
    lines += [f"| {k} | {_fmt(v)} | {dataset} |" for k, v in values.items()]
    return "\n".join(lines)


def _base_kwargs(model: Any) -> str:
    base = model.get_base_model() if model is not None and hasattr(model, "get_base_model") else None
    labels = getattr(getattr(base, "config", None), "num_labels", None)
    return f", num_labels={labels}" if labels and hasattr(base, "classifier") else ""


def _section(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        raise ModelCardError("the rendered card has no hf_plasticity section markers; the template is broken")
    return text[start : end + len(END)]


def _strip_section(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return text
    return (text[:start] + text[end + len(END) :]).strip("\n")


def _compose(meta: dict[str, Any], body: str) -> str:
    from huggingface_hub import ModelCardData

    data = ModelCardData(**meta, ignore_metadata_errors=True)
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"


def _tidy(text: str) -> str:
    """Collapse the blank lines Jinja blocks leave behind (3+ newlines -> 2)."""
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _num(x: Any) -> float | None:
    """A plain float with 6 significant digits (YAML-stable), or None for NaN/inf."""
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None


def _finite(x: Any) -> float:
    return x if isinstance(x, int | float) and math.isfinite(x) else -math.inf


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:.4g}"


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "data"


def _plain(value: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy values and tuples converted), for YAML."""
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _num(value)
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    return value if value is None or isinstance(value, str) else str(value)


def _version() -> str:
    from ..version import __version__

    return __version__
