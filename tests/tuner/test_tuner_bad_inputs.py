"""Bad configs and bad adapters: one row each, a typed error naming the fix, fast and offline."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import ViTConfig, ViTForImageClassification

from hf_plasticity import AdapterLoadError, InvalidInputError, PlasticityConfig, PlasticityError, load_adapter
from tests.conftest import TINY, TINY_MODELS

CONFIG_CASES = [
    ({"scores": {"mha": "high"}}, r"scores\['mha'\]='high' is not a finite number.*e\.g\. \{'mha': 2\.0\}"),
    ({"scores": {"mha": math.nan, "ffn_fc1": 1.0}}, r"scores\['mha'\]=nan is not a finite number"),
    ({"top_k": "2"}, r"top_k='2' must be an integer, e\.g\. top_k=2"),
    ({"top_k": True}, r"top_k=True must be an integer"),
    ({"layers": 1}, r"layers=1 must be a list of layer indices, e\.g\. layers=\[1\]"),
    ({"budget": "0.1"}, r"budget='0.1' must be a finite number, e\.g\. budget=0\.3"),
    ({"modules_to_save": "classifier"}, r"must be a list of module names, e\.g\. \['classifier'\]"),
]


@pytest.mark.parametrize(
    "kwargs, match", CONFIG_CASES, ids=[f"config-{next(iter(k))}={next(iter(k.values()))!r}" for k, _ in CONFIG_CASES]
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        PlasticityConfig(**kwargs)


def _vit(**overrides: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**{**TINY, **overrides})).eval()


def _saved(tmp_path: Path, **config: object) -> Path:
    get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(**config)).save_pretrained(tmp_path)
    return tmp_path


def _write(path: Path, name: str, data: bytes) -> Path:
    (path / name).write_bytes(data)
    return path


# (what is wrong, how the adapter folder is made, the model it loads onto, the loader, the message)
ADAPTER_CASES: dict[str, tuple[Callable[[Path], Path], Callable[[], torch.nn.Module], str]] = {
    "modules_to_save-matches-nothing": (
        None,
        lambda: TINY_MODELS["vit"](),
        r"\['head'\] match no module.*this model's head is \['classifier'\]",
    ),
    "two-layer-adapter-on-four-layers": (
        lambda p: _saved(p),
        lambda: _vit(num_hidden_layers=4),
        r"trained on a model with hidden_size=32, num_layers=2 but this model has hidden_size=32, num_layers=4",
    ),
    "hidden-size-mismatch": (
        lambda p: _saved(p),
        lambda: _vit(hidden_size=48, num_attention_heads=2, intermediate_size=64),
        r"hidden_size=32, num_layers=2 but this model has hidden_size=48, num_layers=2",
    ),
    "num-labels-mismatch": (
        lambda p: _saved(p),
        lambda: _vit(num_labels=5),
        r"classifier.*saved \(3, 32\), model \(5, 32\).*num_labels=.*ignore_mismatched_sizes=True",
    ),
    "folder-without-weights": (
        lambda p: (_saved(p) / "adapter_model.safetensors").unlink() or p,
        lambda: TINY_MODELS["vit"](),
        r"holds adapter_config.json but no adapter_model.safetensors.*save the adapter again",
    ),
    "empty-folder": (
        lambda p: p,
        lambda: TINY_MODELS["vit"](),
        r"holds no adapter_config.json, so it is not a saved adapter",
    ),
    "corrupt-safetensors": (
        lambda p: _write(_saved(p), "adapter_model.safetensors", b"\x00garbage"),
        lambda: TINY_MODELS["vit"](),
        r"adapter_model.safetensors is not a readable safetensors file.*save or copy the adapter again",
    ),
    "corrupt-adapter-config": (
        lambda p: _write(_saved(p), "adapter_config.json", b'{"peft_type": "PLASTICITY",'),
        lambda: TINY_MODELS["vit"](),
        r"adapter_config.json is not valid JSON.*re-save the adapter",
    ),
}


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_bad_adapter_through_load_adapter(case: str, tmp_path: Path) -> None:
    make, model, match = ADAPTER_CASES[case]
    if make is None:  # a config that matches nothing fails when the adapter is created
        with pytest.raises(InvalidInputError, match=match):
            get_peft_model(model(), PlasticityConfig(modules_to_save=["head"]))
        return
    folder = make(tmp_path)
    with pytest.raises(AdapterLoadError, match=match):
        load_adapter(model(), folder)


@pytest.mark.parametrize("case", ["two-layer-adapter-on-four-layers", "hidden-size-mismatch", "num-labels-mismatch"])
def test_bad_adapter_through_peft(case: str, tmp_path: Path) -> None:
    """PEFT's own loader reaches the same checks (they live in the tuner, not in our wrapper)."""
    make, model, match = ADAPTER_CASES[case]
    with pytest.raises(AdapterLoadError, match=match):
        PeftModel.from_pretrained(model(), make(tmp_path))


def test_ignore_mismatched_sizes_keeps_the_new_head(tmp_path: Path) -> None:
    folder = _saved(tmp_path)
    model = _vit(num_labels=5)
    with pytest.warns(UserWarning, match="ignore_mismatched_sizes"):
        loaded = load_adapter(model, folder, ignore_mismatched_sizes=True)
    assert loaded.base_model.model.classifier.modules_to_save["default"].out_features == 5


@pytest.mark.parametrize(
    "path, match",
    [
        ("does/not/exist", r"no adapter folder at does/not/exist"),
        ("./missing", r"no adapter folder at missing"),
        ("tests/missing", r"no adapter folder at tests/missing"),  # first part is a local folder: not a Hub id
    ],
    ids=["nested-relative", "dot-relative", "under-a-local-folder"],
)
def test_missing_relative_paths_fail_fast_offline(path: str, match: str) -> None:
    start = time.monotonic()
    with pytest.raises(AdapterLoadError, match=match):
        load_adapter(TINY_MODELS["vit"](), path)
    assert time.monotonic() - start < 5


def test_absolute_missing_path(tmp_path: Path) -> None:
    with pytest.raises(AdapterLoadError, match="no adapter folder at"):
        load_adapter(TINY_MODELS["vit"](), tmp_path / "nothing")


def test_peft_from_pretrained_without_import_names_the_fix(tmp_path: Path) -> None:
    """Without ``import hf_plasticity`` PEFT cannot know the type (KeyError: 'PLASTICITY'); with it, it loads."""
    folder = _saved(tmp_path)
    root = Path(__file__).resolve().parents[2]
    script = (
        "import torch, sys\nfrom peft import PeftModel\n"
        "from transformers import ViTConfig, ViTForImageClassification\n"
        "from tests.conftest import TINY\nm = ViTForImageClassification(ViTConfig(**TINY))\n"
        "try:\n"
        f"    PeftModel.from_pretrained(m, {str(folder)!r})\n"
        "except Exception as e:\n    print(type(e).__name__, e); sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, env=env)
    assert done.returncode == 3 and "PLASTICITY" in done.stdout, done.stdout + done.stderr
    with_import = script.replace("import torch, sys", "import torch, sys, hf_plasticity")
    done = subprocess.run([sys.executable, "-c", with_import], capture_output=True, text=True, cwd=root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_all_adapter_errors_are_plasticity_errors() -> None:
    assert issubclass(AdapterLoadError, PlasticityError) and issubclass(AdapterLoadError, ValueError)
