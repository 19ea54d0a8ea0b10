"""``PlasticityCallback``: watch the components while ``transformers.Trainer`` finetunes them.

Per component type it logs, into the Trainer's log history (so ``trainer_state.json`` and the ``report_to``
targets get them), the gradient norm the optimizer sees and the relative change of the trained weights
``||W_t - W_0|| / ||W_0||``; optionally, every ``every`` steps, it re-measures plasticity on a fixed set of
held-out pairs (sharded over processes like :func:`measure_plasticity`). The whole series is kept as a
:class:`PlasticitySeries` (``callback.series``), written with its figure at the end of training.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..components import validate_components
from ..errors import InvalidInputError
from ..measure.distributed import unwrap_model
from ..report.series import PlasticitySeries

PREFIX = "plasticity"


class PlasticityCallback(TrainerCallback):
    """Log gradient norms, weight change and (optionally) re-measured plasticity per component type.

    Args:
        pairs: ``(x, y)``, two pixel tensors of the same shape ``(N, C, H, W)``: the held-out pairs re-measured
            every ``every`` steps (``x``: reference, pretraining-like images; ``y``: downstream images). The
            same seeded pairing is used each time, so the series follows the same pairs.
        every: re-measure plasticity every this many optimizer steps (and at steps 0 and the last); None
            logs only gradient norms and weight change.
        protocol, batch_size, seed, components: passed to :func:`measure_plasticity`.
        output_dir: where ``plasticity_series.json`` and ``plasticity_series.png`` go at the end of training
            (default: the Trainer's ``output_dir``; the main process writes them).

    Settings are checked at ``on_train_begin`` (and ``every`` at construction), before any step runs.
    To have ``report_to`` integrations receive the values, put this callback first:
    ``trainer.callback_handler.callbacks.insert(0, callback)``
    (:func:`hf_plasticity.integrations.training.finetune` does).
    """

    def __init__(
        self,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        every: int | None = None,
        protocol: str = "shared",
        batch_size: int = 64,
        seed: int = 0,
        components: list[str] | tuple[str, ...] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_every(every, pairs)
        self.pairs = pairs
        self.every = every
        self.protocol = protocol
        self.batch_size = batch_size
        self.seed = seed
        self.components = validate_components(components)
        self.output_dir = output_dir
        self.series = PlasticitySeries(meta={"protocol": protocol, "every": every, "seed": seed})
        self._groups: dict[str, list[_Tracked]] = {}
        self._pending: dict[str, float] = {}
        self._measured_at: int | None = None

    # ----------------------------------------------------------------- checks and setup
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: nn.Module = None, **kw: Any
    ) -> None:
        from ..components import resolve_components

        _check_every(self.every, self.pairs)
        if model is None:
            raise InvalidInputError("PlasticityCallback needs the Trainer's model; it received none")
        base = unwrap_model(model)
        resolved = resolve_components(base)  # UnsupportedModelError, naming the fix, for a model without a map
        if self.pairs is not None:
            self.pairs = _check_pairs(self.pairs, base)
        self._groups = {}
        for comp in self.components:
            tracked = [t for path in resolved.paths[comp] for t in _tracked(base.get_submodule(path))]
            if tracked:
                self._groups[comp] = tracked
        self.series.meta.update(
            {
                "trained_components": sorted(self._groups),
                "num_pairs": None if self.pairs is None else len(self.pairs[0]),
            }
        )
        if self.pairs is not None:
            self._measure(model, state.global_step)

    # ----------------------------------------------------------------- per step
    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any):
        if not self._will_log(args, state, state.global_step + 1):
            return
        row = {}
        for comp, tracked in self._groups.items():
            grads = [p.grad for t in tracked for p in t.params if p.grad is not None]
            if grads:
                row[comp] = math.sqrt(sum(float(g.detach().float().pow(2).sum()) for g in grads))
        if row:
            self.series.grad_norm.append({"step": state.global_step + 1, **row})
            self._pending.update({f"{PREFIX}/grad_norm/{c}": v for c, v in row.items()})

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.pairs is not None and self.every and state.global_step % self.every == 0:
            self._measure(kw.get("model"), state.global_step)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if logs is None or "loss" not in logs:  # training logs only, not evaluation's
            return
        row = {comp: _relative_change(tracked) for comp, tracked in self._groups.items()}
        if row:
            self.series.weight_change.append({"step": state.global_step, **row})
            self._pending.update({f"{PREFIX}/weight_change/{c}": v for c, v in row.items()})
        extra, self._pending = self._pending, {}
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.pairs is not None and self._measured_at != state.global_step:
            self._measure(kw.get("model"), state.global_step)
        if state.is_world_process_zero:
            out = Path(self.output_dir or args.output_dir)
            self.series.save(out / "plasticity_series.json")
            self.series.plot(out / "plasticity_series.png")

    # ----------------------------------------------------------------- helpers
    def _measure(self, model: nn.Module | None, step: int) -> None:
        from ..measure.estimator import measure_plasticity

        assert self.pairs is not None and model is not None
        x, y = self.pairs
        report = measure_plasticity(
            model,
            y,
            x,
            protocol=self.protocol,  # type: ignore[arg-type]
            num_pairs=len(x),
            batch_size=self.batch_size,
            components=self.components,
            seed=self.seed,
            keep_rates=False,
            progress=False,
        )
        scores = report.scores()
        self.series.plasticity.append({"step": step, **scores})
        self._pending.update({f"{PREFIX}/{c}": v for c, v in scores.items()})
        self._measured_at = step

    @staticmethod
    def _will_log(args: TrainingArguments, state: TrainerState, step: int) -> bool:
        if step == 1 and args.logging_first_step:
            return True
        every = state.logging_steps or 0
        return (
            str(getattr(args.logging_strategy, "value", args.logging_strategy)) == "steps"
            and every > 0
            and (step % every == 0)
        )


class _Tracked:
    """One trained weight of a component: its current effective value, its start, and the parameters it uses.

    A LoRA layer's effective weight is its base weight plus ``B @ A`` (scaled), so its change is the LoRA
    update itself; any other trainable parameter is its own weight.
    """

    def __init__(self, params: list[nn.Parameter], current: Any) -> None:
        self.params = params
        self.current = current
        with torch.no_grad():
            self.start = current().detach().clone()
        self.start_norm_sq = float(self.start.double().pow(2).sum())


def _tracked(module: nn.Module) -> list[_Tracked]:
    from peft.tuners.lora.layer import LoraLayer

    out: list[_Tracked] = []
    in_lora: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, LoraLayer) and hasattr(sub, "get_delta_weight"):
            adapters = [a for a in sub.active_adapters if a in sub.lora_A]
            params = [p for a in adapters for p in (*sub.lora_A[a].parameters(), *sub.lora_B[a].parameters())]
            in_lora.update(id(p) for p in sub.parameters())
            if not adapters or not any(p.requires_grad for p in params):
                continue
            base = sub.get_base_layer().weight

            def current(sub: Any = sub, base: torch.Tensor = base, adapters: list[str] = adapters) -> torch.Tensor:
                w = base.detach()
                for a in adapters:
                    w = w + sub.get_delta_weight(a).detach()
                return w

            out.append(_Tracked(params, current))
    for p in module.parameters():
        if p.requires_grad and id(p) not in in_lora:
            out.append(_Tracked([p], lambda p=p: p))
    return out


def _relative_change(tracked: list[_Tracked]) -> float:
    with torch.no_grad():
        diff = sum(float((t.current().detach() - t.start).double().pow(2).sum()) for t in tracked)
    start = sum(t.start_norm_sq for t in tracked)
    return math.sqrt(diff) / math.sqrt(start) if start > 0 else math.nan


def _check_every(every: int | None, pairs: Any) -> None:
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every <= 0):
        raise InvalidInputError(f"every={every!r}: re-measure every N steps needs a positive integer N (or None)")
    if every is not None and pairs is None:
        raise InvalidInputError("every= is set but no pairs= to re-measure; pass pairs=(x, y) of held-out images")


def _check_pairs(pairs: Any, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pairs, tuple | list) or len(pairs) != 2:
        raise InvalidInputError("pairs must be (x, y): two pixel tensors of shape (N, channels, height, width)")
    x, y = (torch.as_tensor(t) for t in pairs)
    if x.ndim != 4 or y.shape != x.shape or len(x) < 1:
        raise InvalidInputError(
            f"pairs must be two pixel tensors of the same shape (N, channels, height, width) with N >= 1; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    from ..components import get_component_map

    config = getattr(model, "config", None)
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if not get_component_map(model).fixed_image_size:
        size = None  # the family interpolates positions: any size goes
    if channels is not None and x.shape[1] != channels:
        raise InvalidInputError(f"the model takes {channels}-channel images but the pairs have {x.shape[1]} channels")
    if isinstance(size, int) and tuple(x.shape[-2:]) != (size, size):
        raise InvalidInputError(
            f"the model takes {size}x{size} images but the pairs are {x.shape[-2]}x{x.shape[-1]}; process them with "
            "the model's image processor"
        )
    return x.float(), y.float()
