"""What a plain ``pip install hf-plasticity`` must do, run inside such an install (scripts/plain_install_check.sh).

Checks, in a venv holding only the wheel and its declared dependencies (no extras):
  1. hf_plasticity is the installed copy (not a source tree) and no extra came along (scikit-learn, mlxtend);
  2. the demo's report (``hf-plasticity demo``, run by the shell script) is complete;
  3. a random ViT of hidden size 768 is measured with its theoretical bounds (the Gram matrices above
     256 x 256 go to scipy's Lanczos, which a plain install once lacked);
  4. a ``PlasticityConfig`` adapter is built, changed, saved (with its model card), and reloaded with
     ``PeftModel.from_pretrained`` onto a fresh base model, giving the changed model's outputs.

    python plain_install_check.py --demo-report plasticity-demo/report.json

Exits non-zero, with the reason, on the first check that fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import sysconfig
import tempfile
from pathlib import Path


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"plain-install check FAILED: {message}")
    print(f"ok: {message}")


def check_installation() -> None:
    import hf_plasticity

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(hf_plasticity.__file__).resolve()
    check(site in where.parents, f"hf_plasticity is imported from the installed wheel ({where.parent})")
    for module in ("sklearn", "mlxtend"):
        check(importlib.util.find_spec(module) is None, f"{module} is not installed (no extras)")


def check_demo_report(path: Path) -> None:
    from hf_plasticity import PlasticityReport

    report = PlasticityReport.load(path)
    check(report.num_pairs == 1797, f"the demo measured 1797 pairs on the bundled digits ({path})")
    check(
        sorted(report.ranking()) == sorted(["attn_norm", "mha", "ffn_norm", "ffn_fc1", "ffn_fc2"]),
        "the demo ranked all five components",
    )
    check(report.bounds is not None, "the demo's report carries the theoretical bounds")


def tiny_vit_768(seed: int):
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    return ViTForImageClassification(config).eval()


def check_measurement_with_bounds() -> None:
    import torch

    from hf_plasticity import measure_plasticity

    model = tiny_vit_768(seed=0)
    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = measure_plasticity(model, images, num_pairs=8, batch_size=4, progress=False)
    bounds = report.bounds
    check(bounds is not None and bounds.shape == (2, 5), "a hidden-768 ViT is measured with its bounds (2 x 5)")
    check(all(math.isfinite(b) and b > 0 for b in bounds.ravel().tolist()), "every bound is finite and positive")
    check(len(report.ranking()) == 5, f"ranking: {' > '.join(report.ranking())}")


def check_adapter_round_trip() -> None:
    import torch
    from peft import PeftModel, get_peft_model

    import hf_plasticity  # registers the PLASTICITY method with PEFT
    from hf_plasticity import PlasticityConfig

    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = get_peft_model(tiny_vit_768(seed=0), PlasticityConfig())
    with torch.no_grad():  # stand-in for training: change every trainable weight
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
        trained = model(pixel_values=pixels).logits
        untouched = tiny_vit_768(seed=0)(pixel_values=pixels).logits
    check(not torch.allclose(trained, untouched), "the adapter changes the model's outputs")
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        names = sorted(p.name for p in Path(folder).iterdir())
        check(
            {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(names),
            f"save_pretrained wrote the adapter and its model card ({', '.join(names)})",
        )
        loaded = PeftModel.from_pretrained(tiny_vit_768(seed=0), folder).eval()
        with torch.no_grad():
            reloaded = loaded(pixel_values=pixels).logits
    check(
        torch.allclose(reloaded, trained, atol=1e-6, rtol=0),
        f"PeftModel.from_pretrained gives the saved model's outputs (max diff "
        f"{(reloaded - trained).abs().max().item():.1e}; hf_plasticity {hf_plasticity.__version__})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-report", type=Path, required=True, help="report.json written by hf-plasticity demo")
    args = parser.parse_args(argv)
    check_installation()
    check_demo_report(args.demo_report)
    check_measurement_with_bounds()
    check_adapter_round_trip()
    print("plain-install check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
