"""Measuring on several processes: which process measures which pairs, and how the shards come back together.

The pairs are planned once, from the seed, identically on every process (``data/pairs.py``); process ``r`` of
``w`` measures the batches ``b`` with ``b % w == r``. Every batch's statistics are kept apart, gathered with
Accelerate's ``gather_object`` and re-added in the order of the batches, so the merged count, sum and sum of
squares are the very floating-point numbers one process gets on the same pairs (it adds the same batch sums
in the same order), and the per-pair rates come back in the order of the pairs.

Under a process group the measurement is a collective: every process must make the same call.

Also here: taking a model out of its training wrappers (``PeftModel``, DDP, ``accelerator.prepare``) so the
estimator measures the weights that are live in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..compat import COMPILED_ATTRIBUTE
from ..errors import InvalidInputError, UnsupportedModelError
from ..stats import RateStats, merge_ranges

if TYPE_CHECKING:
    from ..data.pairs import PairBatches


@dataclass(frozen=True)
class Shard:
    """This process's share of a measurement: process ``rank`` of ``world_size``.

    ``gather`` says whether the shards are combined by a collective at the end (an initialised process
    group of ``world_size`` processes), so every process returns the whole report; without it a process
    returns its own shard's report, to merge later with :meth:`PlasticityReport.merge`.
    """

    rank: int = 0
    world_size: int = 1
    gather: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def combine(
        self, stats: RateStats, pairs: PairBatches, tokens: dict[str, Any] | None = None
    ) -> tuple[RateStats, dict[str, Any], dict[str, Any] | None]:
        """The statistics of every shard added in batch order, the pairs they cover, and the shards' summed
        embedding statistics (:class:`~hf_plasticity.stats.TokenStats` sums, added in rank order)."""
        if len(stats.batch_sums) != len(pairs.batch_ranges):
            raise InvalidInputError(
                f"internal: {len(stats.batch_sums)} batch statistics for {len(pairs.batch_ranges)} batches of pairs"
            )
        local: dict[str, Any] = {
            "ids": list(pairs.batch_ids),
            "ranges": [list(r) for r in pairs.batch_ranges],
            "sums": [b.cpu().numpy() for b in stats.batch_sums],
            "rates": [r.cpu().numpy() for r in stats.batch_rates] if stats.keep_rates else None,
            "tokens": tokens,
        }
        shards = _gather([local]) if self.gather else [local]
        batches = sorted(
            (
                (bid, rng, sums, None if shard["rates"] is None else shard["rates"][i])
                for shard in shards
                for i, (bid, rng, sums) in enumerate(zip(shard["ids"], shard["ranges"], shard["sums"], strict=True))
            ),
            key=lambda item: item[0],
        )
        shape = tuple(stats.count.shape)
        acc = np.zeros((4, *shape), dtype=np.float64)
        for _, _, sums, _ in batches:
            acc += sums  # the same additions, in the same order, as one process makes
        device = stats.count.device
        count, total, total_sq, excluded = (torch.from_numpy(acc[i].copy()).to(device) for i in range(4))
        out = RateStats(count, total, total_sq, excluded, keep_rates=stats.keep_rates)
        if stats.keep_rates:
            out.batch_rates = [torch.from_numpy(np.asarray(r)) for _, _, _, r in batches]
        out.batch_sums = [torch.from_numpy(np.asarray(s)) for _, _, s, _ in batches]
        ranges = merge_ranges(r for _, r, _, _ in batches)
        coverage = {"plan": pairs.plan, "planned_pairs": pairs.num_pairs, "ranges": ranges}
        return out, coverage, _sum_tokens([shard["tokens"] for shard in shards])


def resolve_shard(accelerator: Any = None, rank: int | None = None, world_size: int | None = None) -> Shard:
    """Who measures what: explicit arguments first, then the running process group or ``accelerate launch``.

    ``accelerator`` is an ``Accelerator`` or a ``PartialState``; ``rank``/``world_size`` set the shard by
    hand (both, or neither). Without either, an initialised ``torch.distributed`` process group, or the
    ``WORLD_SIZE``/``RANK`` variables ``accelerate launch`` and ``torchrun`` set, make the call shard by itself.
    """
    if (rank is None) != (world_size is None):
        raise InvalidInputError("pass both rank= and world_size= (or neither): a shard needs both")
    if accelerator is not None and rank is not None:
        raise InvalidInputError("pass either accelerator= or rank=/world_size=, not both")
    if accelerator is not None:
        rank, world_size = int(accelerator.process_index), int(accelerator.num_processes)
        return _checked(rank, world_size, gather=world_size > 1)
    if rank is not None:
        assert world_size is not None
        shard = _checked(int(rank), int(world_size), gather=False)
        return Shard(shard.rank, shard.world_size, gather=world_size > 1 and _group_size() == world_size)
    if _group_size() > 1:
        dist = torch.distributed
        return Shard(dist.get_rank(), dist.get_world_size(), gather=True)
    env_world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if env_world > 1:
        state = _partial_state()  # initialises the process group accelerate launch prepared
        return _checked(int(state.process_index), int(state.num_processes), gather=state.num_processes > 1)
    return Shard()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model whose live weights are measured: out of DDP/``accelerator.prepare`` and ``PeftModel`` wrappers.

    A PEFT model is measured through its base model with the adapters injected, so each component computes
    what it computes in training: an in-place plasticity adapter *is* the module's weights, a
    ``keep_original`` adapter runs its trained copy, a LoRA layer runs base weight plus its low-rank update
    (the active adapter's effective module; ``disable_adapter()`` measures the original).
    """
    if _is_fsdp(model):
        raise UnsupportedModelError(
            "this model is sharded by FSDP, so no process holds whole weights to measure; measure the model "
            "before accelerator.prepare(...), or measure a full copy (e.g. after "
            "accelerator.get_state_dict(model) loaded into an unwrapped model)"
        )
    from accelerate.utils import extract_model_from_parallel

    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        model = extract_model_from_parallel(model)
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base) and _is_peft_model(model):
            model = get_base()
    return model


def wrapper_hint(model: nn.Module) -> str | None:
    """If ``model`` looks like a wrapper around a supported model, how to pass the inner one instead."""
    from ..components import get_component_map

    for attr in ("module", "model", "base_model", COMPILED_ATTRIBUTE):
        inner = getattr(model, attr, None)
        own = getattr(getattr(model, "config", None), "model_type", None)
        if own is not None and own == getattr(getattr(inner, "config", None), "model_type", None):
            continue  # the task model's own base model: the model is supported, one of its modules is not
        if isinstance(inner, nn.Module) and inner is not model:
            try:
                get_component_map(inner)
            except UnsupportedModelError:
                continue
            return (
                f"{type(model).__name__} wraps a supported {type(inner).__name__} (as .{attr}); measure the "
                f"wrapped model (model.{attr}), or unwrap it with accelerator.unwrap_model(model) / "
                "peft_model.get_base_model()"
            )
    return None


def _is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _is_fsdp(model: nn.Module) -> bool:
    if not torch.distributed.is_available():
        return False
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FullyShardedDataParallel | FSDPModule)


def _checked(rank: int, world_size: int, gather: bool) -> Shard:
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(f"rank={rank}, world_size={world_size}: need world_size >= 1, 0 <= rank < world_size")
    return Shard(rank, world_size, gather)


def _group_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _partial_state() -> Any:
    """Accelerate's process state, told to use the CPU when accelerate launch was (a bare one ignores it)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def _gather(objects: list[Any]) -> list[Any]:
    """Every process's objects, on every process, in rank order (Accelerate's ``gather_object``)."""
    from accelerate.utils import DistributedType, gather_object

    state = _partial_state()
    if state.distributed_type != DistributedType.NO and state.num_processes == _group_size():
        return list(gather_object(objects))
    # a process group accelerate does not manage (e.g. created by hand): torch's own collective
    out: list[Any] = [None] * _group_size()
    torch.distributed.all_gather_object(out, objects)
    return [x for part in out for x in part]


def _sum_tokens(shards: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    present = [t for t in shards if t and t.get("images")]
    if not present:
        return shards[0] if shards else None
    return {
        "images": sum(t["images"] for t in present),
        "radius_sum": sum(t["radius_sum"] for t in present),
        "spread_sum": sum(t["spread_sum"] for t in present),
        **({"rms_sum": sum(t["rms_sum"] for t in present)} if all("rms_sum" in t for t in present) else {}),
        "seq_len": present[0]["seq_len"],
    }
