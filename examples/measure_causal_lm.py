"""Measure the component plasticity of a causal LM on text, then build the PEFT config it suggests.

    # offline, in seconds: a tiny random Llama and a word tokenizer built on the standard library's docstrings
    python examples/measure_causal_lm.py
    # a real model (a local folder saved with save_pretrained, or a Hub id), your own text files:
    python examples/measure_causal_lm.py --model ./my-llama --data downstream.txt --reference pretraining.txt \\
        --seq-len 256 --num-pairs 1024 --protocol in_situ
    python examples/measure_causal_lm.py --model Qwen/Qwen2.5-0.5B --data ./my-data-set-folder --device cuda

Text files are read one paragraph a row; every row is tokenized, the token streams joined and cut into windows
of --seq-len tokens (no padding). x of each pair is a window of the reference text, y one of the downstream text.
Prints the ranking of component types and the modules a ``PlasticityConfig`` built from the report trains,
and writes report.json + a figure.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from hf_plasticity import THEORETICAL_RANKING, PlasticityConfig, measure_plasticity
from hf_plasticity.data.loaders import load_named_dataset
from hf_plasticity.data.text import build_word_tokenizer
from hf_plasticity.models import load_model, load_tokenizer

REFERENCE_MODULES = ("argparse", "json", "collections", "functools", "pathlib")
"""Default reference text: docstrings of these standard-library modules (always installed, never downloaded)."""
DOWNSTREAM_MODULES = ("csv", "difflib", "heapq", "textwrap", "zipfile", "tarfile")
"""Default downstream text."""


def docstring_text(modules: tuple[str, ...]) -> list[str]:
    """The paragraphs of some standard-library modules' docstrings: real English text that is always here."""
    docs = [importlib.import_module(name).__doc__ or "" for name in modules]
    return [p.strip() for doc in docs for p in doc.split("\n\n") if p.strip()]


def build_tiny_llama(folder: Path, texts: list[str]) -> Path:
    """A random 2-layer Llama with a word tokenizer trained on ``texts``, saved to ``folder``: a stand-in for a
    real checkpoint that runs anywhere without downloads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_word_tokenizer(texts, vocab_size=2_000)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local folder or Hub id of a causal LM (default: build a tiny random Llama)")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id (default: the model's own)")
    parser.add_argument("--data", help="downstream text: .txt/.jsonl file or data set folder (default: docstrings)")
    parser.add_argument("--reference", help="pretraining-like text, same forms (default: other docstrings)")
    parser.add_argument("--text-column", help="the data sets' text column, when they have several")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per window (both inputs of a pair)")
    parser.add_argument("--protocol", choices=["shared", "in_situ"], default="shared")
    parser.add_argument("--num-pairs", type=int, default=None, help="default: as many as the text allows, <= 12,800")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=1, help="train the k most plastic component types")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out-dir", type=Path, default=Path("plasticity-causal-lm"))
    args = parser.parse_args()

    reference = load_named_dataset(args.reference) if args.reference else docstring_text(REFERENCE_MODULES)
    data = load_named_dataset(args.data) if args.data else docstring_text(DOWNSTREAM_MODULES)
    model_name = args.model
    if model_name is None:
        texts = list(reference if isinstance(reference, list) else reference[args.text_column or "text"])
        texts += list(data if isinstance(data, list) else data[args.text_column or "text"])
        model_name = str(build_tiny_llama(args.out_dir / "tiny-llama", texts))
        print(f"built a tiny random Llama and its tokenizer in {model_name}")
    model = load_model(model_name, task="CAUSAL_LM")
    tokenizer = load_tokenizer(args.tokenizer or model_name, required=True)

    report = measure_plasticity(
        model,
        data,
        reference,
        tokenizer=tokenizer,
        seq_len=args.seq_len,
        text_column=args.text_column,
        protocol=args.protocol,
        num_pairs=args.num_pairs,
        batch_size=args.batch_size,
        device=args.device,
        data_name=args.data or "docstrings: " + ", ".join(DOWNSTREAM_MODULES),
        reference_name=args.reference or "docstrings: " + ", ".join(REFERENCE_MODULES),
    )
    print(report.to_markdown())
    print(f"\ntheory (ViT):  {' > '.join(THEORETICAL_RANKING)}\nmeasured:      {' > '.join(report.ranking())}")
    report.save(args.out_dir / "report.json")
    report.plot(args.out_dir / "plasticity.png")

    config = PlasticityConfig.from_report(report, top_k=args.top_k, task_type="CAUSAL_LM")
    print(f"\nPlasticityConfig.from_report(report, top_k={args.top_k}, task_type='CAUSAL_LM'):")
    print(f"  ranks by: {config.score_source}")
    from peft import get_peft_model

    peft_model = get_peft_model(model, config)
    chosen = peft_model.peft_config["default"]
    print(f"  trains {len(chosen.selected_modules)} modules, e.g. {', '.join(chosen.selected_modules[:3])}")
    print(f"  and the head(s): {chosen.modules_to_save or 'none'}")
    peft_model.print_trainable_parameters()
    print(f"\nwrote {args.out_dir / 'report.json'} and {args.out_dir / 'plasticity.png'}")


if __name__ == "__main__":
    main()
