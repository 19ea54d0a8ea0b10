"""Run by tests/measure/test_placement.py under `accelerate launch` (2 processes): a disk-offloaded causal LM.

Each process reloads the checkpoint with ``device_map="auto"`` and disk offload (into its own folder), measures
its shard of the pairs in both protocols (streamed, a few pairs per chunk), and writes the gathered report named
by protocol and rank.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def main() -> None:
    from transformers import AutoModelForCausalLM

    from hf_plasticity import measure_plasticity
    from tests.measure.test_placement import DATA, OPTIONS, PAIR_BYTES, REFERENCE

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            args.model, device_map="auto", max_memory={"cpu": 20_000}, offload_folder=str(args.out / f"off{rank}")
        )
        assert model.model.layers[0].self_attn.q_proj.weight.is_meta
        for protocol in ("shared", "in_situ"):
            chunk = 8 * PAIR_BYTES[protocol]  # 8 pairs per chunk: each process streams its shard in 2 chunks
            report = measure_plasticity(model, DATA, REFERENCE, protocol=protocol, max_memory=chunk, **OPTIONS)
            report.save(args.out / f"offload-{protocol}-rank{rank}.json")
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
