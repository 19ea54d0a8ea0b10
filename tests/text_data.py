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
