"""Text for tests, from the standard library's own docstrings (never the network), and a tokenizer trained on it."""

from __future__ import annotations

import argparse
import collections
import csv
import difflib
import functools
import heapq
import json
import textwrap
import zipfile
from pathlib import Path
from typing import Any

from hf_plasticity.data.text import build_word_tokenizer


def _paragraphs(*modules: object) -> list[str]:
    return [p.strip() for m in modules for p in (m.__doc__ or "").split("\n\n") if p.strip()]


REFERENCE_TEXT: list[str] = _paragraphs(argparse, json, collections, functools)
"""Pretraining-like text (x of each pair)."""
DOWNSTREAM_TEXT: list[str] = _paragraphs(csv, difflib, heapq, textwrap, zipfile)
"""Downstream text (y of each pair)."""


@functools.cache
def word_tokenizer() -> object:
    """One word-level tokenizer for every text test (trained once per session on both corpora)."""
    return build_word_tokenizer(REFERENCE_TEXT + DOWNSTREAM_TEXT, vocab_size=500)


def tiny_llama(max_positions: int = 64) -> Any:
    """A random 2-layer Llama (grouped key/value heads) over the test tokenizer's vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(word_tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM(config).eval()


def tiny_bert_classifier(num_labels: int = 2) -> Any:
    """A random 2-layer BERT sequence classifier over the test tokenizer's vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(word_tokenizer()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
        initializer_range=0.3,  # spread weights: random features that tell paragraphs apart, so 30 steps can learn
    )
    return BertForSequenceClassification(config).eval()


def save_with_tokenizer(model: Any, folder: Path, tokenizer: bool = True) -> Path:
    """``save_pretrained`` the model (and the test tokenizer beside it): a local checkpoint folder."""
    model.save_pretrained(folder)
    if tokenizer:
        word_tokenizer().save_pretrained(folder)
    return folder


def tiny_llama_classifier(num_labels: int = 2) -> Any:
    """A random 2-layer Llama sequence classifier (its head is ``score``), same weights as :func:`tiny_llama`."""
    import torch
    from transformers import LlamaForSequenceClassification

    config = tiny_llama().config
    config.num_labels = num_labels
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config).eval()
