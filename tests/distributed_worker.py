"""Run by tests/measure/test_distributed.py, once under `accelerate launch` (2 processes) and once as one process.

Each process writes what it ended with to --out, named by its rank: the measurement reports (automatic
sharding, an explicit one-process measurement, a DDP-prepared model) and, for `hf-plasticity finetune` and
examples/finetune_accelerate.py in every mode, the trained parameters and the plasticity report.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import torch

MODES = {"full": [], "keep_original": ["--keep_original"]}
EXAMPLE_MODES = {"full": [], "keep_original": ["--keep-original"], "lora": ["--lora-budget", "0.1"]}
ROOT = Path(__file__).resolve().parents[1]


def trained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def measure(out: Path, rank: int, model_dir: str) -> None:
    from accelerate import Accelerator

    from hf_plasticity import measure_plasticity
    from hf_plasticity.models import load_model

    g = torch.Generator().manual_seed(0)
    data, reference = torch.randn(24, 3, 16, 16, generator=g), torch.randn(24, 3, 16, 16, generator=g)
    model = load_model(model_dir)
    kw = {"num_pairs": 21, "batch_size": 4, "progress": False}
    measure_plasticity(model, data, reference, **kw).save(out / f"measure-auto-rank{rank}.json")
    measure_plasticity(model, data, reference, rank=0, world_size=1, **kw).save(
        out / f"measure-single-rank{rank}.json"
    )
    accelerator = Accelerator()
    prepared = accelerator.prepare(load_model(model_dir))
    measure_plasticity(prepared, data, reference, **kw).save(out / f"measure-prepared-rank{rank}.json")
    torch.save(type(prepared).__name__, out / f"measure-prepared-type-rank{rank}.pt")
    measure_text(out, rank)


def measure_text(out: Path, rank: int) -> None:
    """A causal LM on text: every process cuts the same windows, then measures its shard of the pairs."""
    from hf_plasticity import measure_plasticity
    from tests.text_data import DOWNSTREAM_TEXT, REFERENCE_TEXT, tiny_llama, word_tokenizer

    kw = {"num_pairs": 21, "batch_size": 4, "progress": False, "tokenizer": word_tokenizer(), "seq_len": 16}
    model = tiny_llama()
    measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, **kw).save(out / f"measure-text-rank{rank}.json")
    measure_plasticity(model, DOWNSTREAM_TEXT, REFERENCE_TEXT, rank=0, world_size=1, **kw).save(
        out / f"measure-text-single-rank{rank}.json"
    )


def cli_finetune(out: Path, rank: int, model_dir: str, batch: int) -> None:
    from hf_plasticity.cli import finetune_parser
    from hf_plasticity.integrations.training import run_finetune

    for mode, flags in MODES.items():
        argv = [
            "--model", model_dir, "--output_dir", str(out / f"cli-{mode}"), "--num_pairs", "16",
            "--eval_fraction", "0.05", "--max_steps", "3", "--per_device_train_batch_size", str(batch),
            "--per_device_eval_batch_size", "32", "--eval_strategy", "no", "--logging_steps", "1",
            "--disable_tqdm", "true", "--seed", "0", "--learning_rate", "1e-2", "--optim", "sgd",
            "--rule", "components=mha", *flags,
        ]  # fmt: skip
        ft_args, training_args = finetune_parser().parse_args_into_dataclasses(argv)
        result = run_finetune(ft_args, training_args, progress=False)
        torch.save(trained(result.model), out / f"cli-{mode}-rank{rank}.pt")
        result.report.save(out / f"cli-{mode}-report-rank{rank}.json")


def example_finetune(out: Path, rank: int, model_dir: str, batch: int) -> None:
    spec = importlib.util.spec_from_file_location("finetune_accelerate", ROOT / "examples" / "finetune_accelerate.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for mode, flags in EXAMPLE_MODES.items():
        argv = [
            "--model", model_dir, "--output-dir", str(out / f"example-{mode}"), "--num-pairs", "16",
            "--eval-fraction", "0.05", "--steps", "3", "--batch-size", str(batch), "--lr", "1e-2",
            "--optimizer", "sgd", "--rule", "components=mha", *flags,
        ]  # fmt: skip
        model, _, _ = example.train(example.parse_args(argv))
        torch.save(trained(model), out / f"example-{mode}-rank{rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, required=True, help="per-process training batch")
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        measure(args.out, rank, args.model)
        cli_finetune(args.out, rank, args.model, args.batch)
        example_finetune(args.out, rank, args.model, args.batch)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
