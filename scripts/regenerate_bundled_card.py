"""Regenerate the bundled model's cards from the committed report (maintainer tooling, not in the package).

    python scripts/regenerate_bundled_card.py            # from a source checkout's root

Writes ``model_cards/vit-fashion-mnist.md`` with its figure ``model_cards/vit-fashion-mnist.png``, and the
copy shipped in ``hf_plasticity/assets/vit-fashion-mnist/README.md``. After re-measuring the bundled model
(``hf-plasticity demo``), copy the new report to ``model_cards/vit-fashion-mnist.report.json`` and run this
again. ``tests/integrations/test_cards.py`` checks the committed cards equal what :func:`bundled_model_card` renders.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from huggingface_hub import ModelCard

from hf_plasticity import PlasticityReport, build_model_card
from hf_plasticity.data.loaders import FASHION_MNIST_CLASSES
from hf_plasticity.errors import ModelCardError
from hf_plasticity.integrations.cards import CARD_NAME, HUB_DATASETS
from hf_plasticity.io import atomic_write_text
from hf_plasticity.models import BUNDLED_MODEL_ID, bundled_model_path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CARD = "model_cards/vit-fashion-mnist.md"
BUNDLED_REPORT = "model_cards/vit-fashion-mnist.report.json"
BUNDLED_FIGURE = "model_cards/vit-fashion-mnist.png"
SHIPPED_CARD = f"hf_plasticity/assets/vit-fashion-mnist/{CARD_NAME}"


def bundled_model_card(report: PlasticityReport, figure: str | None = None) -> ModelCard:
    """The card of the ViT bundled with the package: its pretraining (from its config.json) and plasticity.

    Rendered from committed inputs only (the report in ``model_cards/`` and the bundled ``config.json``),
    so running this script reproduces the committed card byte for byte.
    """
    config = json.loads((bundled_model_path() / "config.json").read_text(encoding="utf-8"))
    meta = config["hf_plasticity_pretraining"]
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
        f"`preprocessor_config.json`). Labels: {', '.join(FASHION_MNIST_CLASSES)}.\n\n"
        "Fashion-MNIST is © Zalando SE, released under the MIT licence."
    )
    return build_model_card(
        report,
        metrics={"accuracy": meta["test_accuracy"]},
        datasets=[HUB_DATASETS["fashion-mnist"]],
        model_name="vit-fashion-mnist",
        repo_id=BUNDLED_MODEL_ID,
        figure=figure,
        license="mit",
        summary=summary,
        training_text=training,
        metrics_dataset="Fashion-MNIST (test split)",
    )


def regenerate(root: str | os.PathLike[str] = ROOT) -> list[Path]:
    """Rewrite the figure and both cards under ``root`` (a source checkout); returns the files written."""
    root = Path(root)
    report_path = root / BUNDLED_REPORT
    if not report_path.is_file():
        raise ModelCardError(f"no bundled report at {str(report_path)!r}; run this from a source checkout")
    report = PlasticityReport.load(report_path)
    figure = root / BUNDLED_FIGURE
    report.plot(figure)
    written = [atomic_write_text(root / BUNDLED_CARD, str(bundled_model_card(report, figure=figure.name)))]
    written.append(atomic_write_text(root / SHIPPED_CARD, str(bundled_model_card(report))))
    return [figure, *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the source checkout (default: this script's)")
    args = parser.parse_args(argv)
    for path in regenerate(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
