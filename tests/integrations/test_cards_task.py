"""Card snippets load the adapter with the auto class of the task it was trained for, and they run.

The class is read from transformers' own tables (``hf_plasticity.models.task_of``), not a list of ours: a
causal LM card says ``AutoModelForCausalLM``, a BERT classifier's ``AutoModelForSequenceClassification``, a
ViT classifier's ``AutoModelForImageClassification``. Each card's "How to load it" snippet is executed with
the base model and the adapter saved in a temporary folder (the only substitution: those two paths for the
Hub ids the card cannot know), and must give back the trained model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import ModelCard
from peft import get_peft_model

from hf_plasticity import PlasticityConfig
from hf_plasticity.integrations.cards.build import BASE_PLACEHOLDER
from hf_plasticity.models import task_of
from tests.conftest import TINY_MODELS, pixels
from tests.text_data import tiny_bert_classifier, tiny_llama

IDS = torch.tensor([[5, 9, 17, 4, 33, 12]])
CASES: dict[str, tuple[Callable[[], Any], str, str, dict[str, torch.Tensor]]] = {
    "llama-causal-lm": (tiny_llama, "AutoModelForCausalLM", "text-generation", {"input_ids": IDS}),
    "bert-classifier": (
        tiny_bert_classifier,
        "AutoModelForSequenceClassification",
        "text-classification",
        {"input_ids": IDS},
    ),
    "vit-classifier": (
        TINY_MODELS["vit"],
        "AutoModelForImageClassification",
        "image-classification",
        {"pixel_values": pixels(2, seed=5)},
    ),
}


def _outputs(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _load_snippet(card: str) -> str:
    section = card.split("## How to load it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "the card has no python snippet to load it"
    return match.group(1)


@pytest.mark.parametrize("case", CASES, ids=CASES.keys())
def test_card_names_the_task_auto_class_and_its_snippet_loads_the_adapter(case: str, tmp_path: Path) -> None:
    make, auto_class, task, inputs = CASES[case]
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    make().save_pretrained(base_dir)
    model = get_peft_model(make(), PlasticityConfig(components=["mha"]))
    with torch.no_grad():  # a trained adapter: its weights differ from the base model's
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(adapter_dir)

    card = ModelCard.load(adapter_dir / "README.md")
    assert card.data.pipeline_tag == task
    assert f"from transformers import {auto_class}\n" in card.text
    others = {c for _, c, _, _ in CASES.values()} - {auto_class}
    assert not any(other in card.text for other in others)

    snippet = _load_snippet(card.text)
    repo_ref = re.search(r'PeftModel\.from_pretrained\(base, "([^"]+)"\)', snippet)
    assert repo_ref, snippet
    code = snippet.replace(f'"{BASE_PLACEHOLDER}"', repr(str(base_dir))).replace(
        f'"{repo_ref.group(1)}"', repr(str(adapter_dir))
    )
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<{case} card>", "exec"), namespace)
    loaded = namespace["model"]
    assert type(loaded.get_base_model()).__name__ == type(model.get_base_model()).__name__
    assert torch.allclose(_outputs(loaded, inputs), _outputs(model, inputs), atol=1e-6)
    assert not torch.allclose(_outputs(loaded, inputs), _outputs(make(), inputs), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("GPT2LMHeadModel", ("AutoModelForCausalLM", "text-generation")),
        ("BertForSequenceClassification", ("AutoModelForSequenceClassification", "text-classification")),
        ("ViTForImageClassification", ("AutoModelForImageClassification", "image-classification")),
        ("ViTModel", ("AutoModel", "image-feature-extraction")),
        ("BertModel", ("AutoModel", "feature-extraction")),
        ("NoSuchModel", None),
    ],
)
def test_task_of_reads_transformers_tables(name: str, expected: tuple[str, str] | None) -> None:
    assert task_of(name) == expected
