"""``PlasticityCallback``: watch the components while ``transformers.Trainer`` finetunes them.

Per component type it logs, into the Trainer's log history (so ``trainer_state.json`` and the ``report_to``
targets get them), the gradient norm the optimizer sees and the relative change of the trained weights
``||W_t - W_0|| / ||W_0||``; optionally, every ``every`` steps, it re-measures plasticity on a fixed set of
held-out pairs (sharded over processes like :func:`measure_plasticity`). The whole series is kept as a
:class:`PlasticitySeries` (``callback.series``), written with its figure at the end of training.

Resuming is exact: every checkpoint the Trainer saves gets the callback's state beside its weights
(``plasticity_callback.safetensors``: the starting weights ``W_0``; ``plasticity_callback.json``: the series so
far), and ``trainer.train(resume_from_checkpoint=...)`` reads them back, so the weight change is still measured
from the pretrained weights and the series continues where the checkpoint left it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..components import validate_components
from ..errors import InvalidInputError, PlasticityWarning, ReportFormatError
from ..io import atomic_write, atomic_write_text
from ..measure.distributed import unwrap_model
from ..report.series import PlasticitySeries

PREFIX = "plasticity"
STATE_WEIGHTS = "plasticity_callback.safetensors"
STATE_JSON = "plasticity_callback.json"


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
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kw: Any,
    ) -> None:
        from ..components import resolve_components

        _check_every(self.every, self.pairs)
        if model is None:
            raise InvalidInputError("PlasticityCallback needs the Trainer's model; it received none")
        base = unwrap_model(model)
        resolved = resolve_components(base)  # UnsupportedModelError, naming the fix, for a model without a map
        if self.pairs is not None:
            self.pairs = _check_pairs(self.pairs, base, resolved.main_input)
        self._groups = {}
        for comp in self.components:
            tracked = [
                t
                for name in resolved.paths[comp]
                for path in resolved.modules_of(name)
                for t in _tracked(base.get_submodule(path))
            ]
            if tracked:
                self._groups[comp] = tracked
        self.series.meta.update(
            {
                "trained_components": sorted(self._groups),
                "num_pairs": None if self.pairs is None else len(self.pairs[0]),
            }
        )
        if state.global_step > 0 and self._resume(args, state):
            return
        if self.pairs is not None:
            self._measure(model, state.global_step)

    # ----------------------------------------------------------------- checkpoints
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Write the starting weights and the series so far beside the checkpoint the Trainer just saved."""
        from safetensors.torch import save_file
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not state.is_world_process_zero or not folder.is_dir():
            return
        starts = {
            f"{comp}.{i}": t.start.contiguous()
            for comp, tracked in self._groups.items()
            for i, t in enumerate(tracked)
        }
        atomic_write(folder / STATE_WEIGHTS, lambda tmp: save_file(starts, str(tmp)))
        doc = {"series": self.series.to_dict(), "pending": self._pending, "measured_at": self._measured_at}
        atomic_write_text(folder / STATE_JSON, json.dumps(doc, allow_nan=True))

    def _resume(self, args: TrainingArguments, state: TrainerState) -> bool:
        """Take back the starting weights and series saved with the checkpoint being resumed; False if none."""
        from safetensors.torch import load_file
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        candidates = [Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"]
        if isinstance(args.resume_from_checkpoint, str):
            candidates.insert(0, Path(args.resume_from_checkpoint))
        folder = next((c for c in candidates if (c / STATE_WEIGHTS).is_file() and (c / STATE_JSON).is_file()), None)
        if folder is None:
            warnings.warn(
                f"resuming at step {state.global_step} without the PlasticityCallback state of that checkpoint "
                f"(looked in {', '.join(str(c) for c in candidates)}): weight change is measured from the "
                "checkpoint's weights and the series restarts; pass the checkpoint folder as "
                "TrainingArguments(resume_from_checkpoint=...) too, or keep checkpoints under output_dir",
                PlasticityWarning,
                stacklevel=2,
            )
            return False
        starts = load_file(str(folder / STATE_WEIGHTS))
        expected = {f"{comp}.{i}": t for comp, tracked in self._groups.items() for i, t in enumerate(tracked)}
        if set(starts) != set(expected) or any(starts[k].shape != t.start.shape for k, t in expected.items()):
            raise InvalidInputError(
                f"{folder / STATE_WEIGHTS} was saved while training other weights than this run trains; resume with "
                "the same model, adapter config and PlasticityCallback(components=...) as the checkpoint's run"
            )
        try:
            doc = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
            series = PlasticitySeries.from_dict(doc["series"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ReportFormatError(
                f"{folder / STATE_JSON} is damaged ({exc}); resume from another checkpoint"
            ) from exc
        for key, tracked in expected.items():
            tracked.start = starts[key].to(device=tracked.start.device, dtype=tracked.start.dtype)
            tracked.start_norm_sq = float(tracked.start.double().pow(2).sum())
        series.meta.update(self.series.meta)
        self.series = series
        self._pending = dict(doc.get("pending") or {})
        self._measured_at = doc.get("measured_at")
        return True

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
            out = Path(self.output_dir or str(args.output_dir))
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

            def current(sub: Any = sub, base: Any = base, adapters: list[str] = adapters) -> torch.Tensor:
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


def _check_pairs(pairs: Any, model: nn.Module, main_input: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pairs, tuple | list) or len(pairs) != 2:
        raise InvalidInputError(
            "pairs must be (x, y): two pixel tensors of shape (N, channels, height, width), or two input_ids (N, L)"
        )
    x, y = (torch.as_tensor(t) for t in pairs)
    if (x.ndim == 2) != (main_input == "input_ids"):
        takes = "token ids (N, L)" if main_input == "input_ids" else "pixels (N, channels, height, width)"
        raise InvalidInputError(
            f"pairs hold tensors of shape {tuple(x.shape)} but {type(model).__name__} takes {takes} (its "
            f"main_input_name is {main_input!r}); pass held-out pairs of what the model reads"
        )
    if x.ndim == 2:  # token windows (N, L): a text model's held-out pairs
        from ..data.text import check_same_length, check_token_ids

        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        x, y = check_token_ids(x, "reference", vocab), check_token_ids(y, "downstream", vocab)
        check_same_length(x.shape[1], y.shape[1])
        if len(x) != len(y) or len(x) < 1:
            raise InvalidInputError(f"pairs must hold as many x as y sequences, at least 1; got {len(x)} and {len(y)}")
        return x, y
    if x.ndim != 4 or y.shape != x.shape or len(x) < 1:
        raise InvalidInputError(
            f"pairs must be two pixel tensors of the same shape (N, channels, height, width) with N >= 1; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    from ..components import get_component_map
    from ..measure.estimator import check_pixels

    check_pixels(x, model, get_component_map(model).fixed_image_size)
    return x.float(), y.float()
