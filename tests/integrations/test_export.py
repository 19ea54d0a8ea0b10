"""Export for people without hf_plasticity: the merged model, in process.

(Loading the exports in a process that never imports hf_plasticity, through the Hub, is in ``test_hub.py``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import ViTForImageClassification

import hf_plasticity
from hf_plasticity import ExportError, PlasticityConfig, export_merged
from tests.conftest import TINY_MODELS, pixels


def trained(**kwargs: object) -> PeftModel:
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(**kwargs))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        model(pixel_values=pixels(4, seed=1)).logits.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


@pytest.mark.parametrize(
    "kwargs",
    [{"components": ["mha"]}, {"components": ["mha"], "keep_original": True}],
    ids=["full-in-place", "full-keep-original"],
)
def test_merged_export_is_a_plain_model_and_keeps_the_adapter(kwargs: dict, tmp_path: Path) -> None:
    model, x = trained(**kwargs), pixels(3, seed=5)
    before = logits(model, x)
    export_merged(model, tmp_path)
    plain = ViTForImageClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(plain, x), before, rtol=1e-5, atol=1e-6)
    assert isinstance(model, PeftModel) and torch.equal(logits(model, x), before)  # the adapter is still there


def test_a_model_without_a_plasticity_adapter_is_refused_naming_peft_merge(tmp_path: Path) -> None:
    plain_lora = get_peft_model(TINY_MODELS["vit"](), LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ExportError, match=r"no plasticity adapter named 'default'.*merge_and_unload\(\)"):
        export_merged(plain_lora, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_lora_is_gone_with_mode_lora() -> None:
    """One LoRA implementation, PEFT's: its adapters need no export (``plasticity_lora_config`` makes them)."""
    assert "export_lora" not in hf_plasticity.__all__ and not hasattr(hf_plasticity, "export_lora")


SERVE = """
import json, sys
from transformers import pipeline
task, folder, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if task == "image-classification":
    import numpy as np
    from PIL import Image
    inputs = Image.fromarray(np.asarray(inputs, dtype=np.uint8))
    out = pipeline(task, model=folder)(inputs)
else:
    out = pipeline(task, model=folder)(inputs, max_new_tokens=3, do_sample=False)
assert "hf_plasticity" not in sys.modules
print(json.dumps(out))
"""


def _serve(task: str, folder: Path, inputs: object) -> list:
    """Run ``transformers.pipeline`` on the export in a process that never imports hf_plasticity."""
    done = subprocess.run(
        [sys.executable, "-c", SERVE, task, str(folder), json.dumps(inputs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_merged_bundled_vit_serves_through_the_image_pipeline(tmp_path: Path) -> None:
    from hf_plasticity.models import BUNDLED, load_model

    model = get_peft_model(load_model(BUNDLED), PlasticityConfig(components=["mha"]))
    export_merged(model, tmp_path / "merged")
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "mha" in card and "image-classification" in card
    image = (np.arange(28 * 28).reshape(28, 28) % 256).tolist()
    out = _serve("image-classification", tmp_path / "merged", image)
    labels = model.base_model.model.config.id2label.values()
    assert out and out[0]["label"] in labels and 0 <= out[0]["score"] <= 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no staging folder left behind


def test_merged_causal_lm_serves_through_the_text_pipeline(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_plasticity.data.text import build_word_tokenizer

    texts = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song"]
    tokenizer = build_word_tokenizer(texts, vocab_size=40)
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(tokenizer), n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    base = GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    model = get_peft_model(base, PlasticityConfig(components=["ffn_fc1"], task_type="CAUSAL_LM"))
    export_merged(model, tmp_path / "merged")
    assert (tmp_path / "merged" / "tokenizer.json").is_file() and (tmp_path / "merged" / "README.md").is_file()
    out = _serve("text-generation", tmp_path / "merged", "the cat")
    assert out[0]["generated_text"].startswith("the cat")
