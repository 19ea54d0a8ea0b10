"""The plasticity estimator: per (layer, component) rates ||f(a) - f(b)|| / ||a - b|| over pairs of inputs.

Two protocols. ``"shared"`` is the paper's: every component of every layer is applied to the same pair of
embedding outputs (z_x, z_y), so what is compared is each component's *function*. ``"in_situ"`` feeds each
component the input it really receives at its depth, read by hooks during one forward pass over x and y.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..components import ResolvedComponents, resolve_components, validate_components
from ..data.pairs import is_hf_dataset, make_pair_batches
from ..errors import InvalidInputError, NonFiniteError, NotEnoughPairsError, SmallSampleWarning, UnsupportedModelError
from ..report.report import PlasticityReport, model_metadata
from ..stats import RateStats, TokenStats
from .bounds import gram, weight_bounds
from .distributed import resolve_shard, unwrap_model, wrapper_hint

Protocol = Literal["shared", "in_situ"]
PROTOCOLS: tuple[str, ...] = ("shared", "in_situ")


def measure_plasticity(
    model: nn.Module,
    data: Any,
    reference: Any = None,
    *,
    protocol: Protocol = "shared",
    num_pairs: int | None = None,
    batch_size: int = 64,
    components: list[str] | tuple[str, ...] | None = None,
    device: str | torch.device | None = None,
    image_processor: Any = None,
    seed: int = 0,
    keep_rates: bool = True,
    bounds: bool = True,
    progress: bool = True,
    data_name: str | None = None,
    reference_name: str | None = None,
    accelerator: Any = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> PlasticityReport:
    """Measure the plasticity of every component of every layer of ``model``.

    Args:
        model: a transformers model with a registered component map (ViT, DeiT, Dinov2, ...).
        data: the downstream data: pixel tensor (N, C, H, W), torch DataLoader, or ``datasets.Dataset``
            with an image column (decoded with ``image_processor``).
        reference: pretraining-like data supplying x of each pair (y comes from ``data``). Without it,
            pairs are disjoint draws from ``data``.
        protocol: ``"shared"`` (the paper's) or ``"in_situ"``.
        num_pairs: pairs to measure; None takes as many as the data allow, at most 12,800.
        batch_size: pairs per batch (DataLoaders keep their own batches).
        components: component types to measure; None measures all five.
        device: where to compute; None uses the model's device. The model is moved there.
        image_processor: decodes ``datasets.Dataset`` images; None loads the model's own when needed.
        seed: seeds the choice of pairs.
        keep_rates: keep every per-pair rate (needed for distribution plots) besides the statistics.
        bounds: compute the paper's theoretical upper bounds from the weights (exact spectral norms; a
            re-measurement during training may skip them).
        progress: show a tqdm progress bar.
        data_name, reference_name: names recorded in the report (default: taken from the data).
        accelerator, rank, world_size: who measures which pairs (see ``hf_plasticity.measure.distributed``). By
            default, under ``accelerate launch`` or any initialised process group, every process measures a
            disjoint shard of the same seeded pairs and every process returns the whole report. An
            ``Accelerator`` (or ``PartialState``), or ``rank``/``world_size``, set the shard explicitly; without
            a process group of that size the call returns its shard's report, to combine with ``merge``.

    ``model`` may be a ``PeftModel``, DDP-wrapped or ``accelerator.prepare``d: its live weights are measured
    (see :func:`hf_plasticity.measure.distributed.unwrap_model`).
    """
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    shard = resolve_shard(accelerator, rank, world_size)
    progress = progress and shard.is_main
    model = unwrap_model(model)
    resolved = _resolve(model)
    comps = validate_components(components)
    dev = _resolve_device(device, model)
    config = getattr(model, "config", None)
    num_channels = int(getattr(config, "num_channels", 3))
    if image_processor is None and (_needs_processor(data) or _needs_processor(reference)):
        image_processor = _load_processor(model)
    pairs = make_pair_batches(
        data,
        reference,
        num_pairs=num_pairs,
        batch_size=batch_size,
        seed=seed,
        image_processor=image_processor,
        num_channels=num_channels,
        data_name=data_name,
        reference_name=reference_name,
        rank=shard.rank,
        world_size=shard.world_size,
    )
    if device is not None:
        model.to(dev)
    _check_weights(resolved, comps)
    dtype = _model_dtype(model)
    stats = RateStats.zeros(resolved.num_layers, len(comps), dev, keep_rates)
    tokens = TokenStats.zeros(dev)
    total = None  # this process's batches: every world_size-th one, from its rank
    if pairs.num_pairs is not None:
        total = len(range(shard.rank, math.ceil(pairs.num_pairs / batch_size), shard.world_size))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            run = _Shared(resolved, comps) if protocol == "shared" else _InSitu(resolved, comps)
            with _closing(run):
                bar = tqdm(
                    pairs.batches,
                    total=total,
                    desc=f"plasticity ({protocol})",
                    unit="batch",
                    disable=not progress,
                )
                seen = 0
                for x, y in bar:
                    x = x.to(dev, dtype, non_blocking=True)
                    y = y.to(dev, dtype, non_blocking=True)
                    _check_pixels(x, resolved)
                    _check_pixels(y, resolved)
                    rates, in_norms, z = run(x, y)
                    if not bool(torch.isfinite(rates.sum() + in_norms.sum())):
                        raise _non_finite_error(resolved, comps, x, y, rates, in_norms, seen)
                    stats.update(rates, in_norms > 0)
                    seen += x.shape[0]
                    tokens.update(z)
            weight_part = weight_bounds(resolved, comps) if bounds else None
    finally:
        model.train(was_training)
    stats, coverage, token_sums = shard.combine(stats, pairs, tokens.as_dict())
    if int(stats.count.max().item()) == 0:
        raise NotEnoughPairsError(
            f"no pair had a non-zero distance between its two inputs (all {int(stats.excluded.max().item())} "
            "pairs were identical at the embedding output), so no rate of change is defined; pass distinct "
            "images (e.g. a reference data set, or data that is not constant)"
        )
    if int(stats.count.min().item()) < 2:
        warnings.warn(
            f"only {int(stats.count.min().item())} pair(s) with distinct inputs were measured: the spread and the "
            "95% intervals need at least 2 (they are reported as n/a); measure more pairs",
            SmallSampleWarning,
            stacklevel=2,
        )
    measured = int(stats.count.max().item() + stats.excluded.max().item())
    return PlasticityReport.from_stats(
        stats,
        components=comps,
        module_paths={c: resolved.paths[c] for c in comps},
        protocol=protocol,
        num_pairs=measured,
        data_name=pairs.data_name,
        reference_name=pairs.reference_name,
        seed=seed,
        model_info=model_metadata(model),
        tokens=token_sums,
        weight_bounds=weight_part,
        coverage=coverage,
    )


def component_fn(resolved: ResolvedComponents, layer: int, component: str) -> Any:
    """The component as a function of a token tensor (B, n, d), as the shared protocol applies it."""
    module = resolved.component(layer, component)

    def f(z: torch.Tensor) -> torch.Tensor:
        out = module(_fit_width(z, module))
        return out[0] if isinstance(out, tuple) else out

    return f


class _Shared:
    """The paper's protocol: every component of every layer applied to one pair of embedding outputs.

    Only the embedding, attention and the LayerNorms are non-linear and need both inputs. A linear map's
    difference is the map of the difference (the bias cancels), so ``ffn_fc1`` and ``ffn_fc2`` work on
    dz = z_x - z_y alone: ||W1 dz||^2 = sum(dz * (dz G)) with the d x d Gram matrix G = W1^T W1, computed
    once (a quarter of the d x 4d product), and ``ffn_fc2``'s zero-padded input only meets W2's first d
    columns (one d x d product).
    """

    def __init__(self, resolved: ResolvedComponents, comps: tuple[str, ...]) -> None:
        self.resolved, self.comps = resolved, comps
        self.diff = _PairDiff()
        self.linear: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}
        width = _hidden_width(resolved)
        for layer in range(resolved.num_layers):
            for ci, comp in enumerate(comps):
                module = resolved.component(layer, comp)
                if not isinstance(module, nn.Linear):
                    continue
                if module.in_features == width and module.out_features > width:
                    self.linear[layer, ci] = ("gram", gram(module.weight))
                else:
                    self.linear[layer, ci] = ("map", module.weight[:, :width].T)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        resolved, b = self.resolved, x.shape[0]
        z = resolved.embeddings()(torch.cat([x, y]))
        dz = z[:b] - z[b:]
        in_norm = _norm(dz)
        out = torch.empty(b, resolved.num_layers, len(self.comps), dtype=torch.float32, device=z.device)
        for layer in range(resolved.num_layers):
            for ci, comp in enumerate(self.comps):
                linear = self.linear.get((layer, ci))
                if linear is None:
                    out[:, layer, ci] = self.diff.norm(component_fn(resolved, layer, comp)(z), b)
                elif linear[0] == "gram":
                    d = dz.float()
                    out[:, layer, ci] = (d * (d @ linear[1])).sum((1, 2)).clamp_min(0).sqrt()
                else:
                    out[:, layer, ci] = _norm(dz @ linear[1])
        in_norms = in_norm[:, None, None].expand_as(out)
        return out / in_norms.clamp_min(torch.finfo(torch.float32).tiny), in_norms, z

    def close(self) -> None:
        self.linear.clear()
        self.diff.buffers.clear()


class _InSitu:
    """Hooks that read each component's real input and output during one forward pass over [x; y]."""

    def __init__(self, resolved: ResolvedComponents, comps: tuple[str, ...]) -> None:
        self.resolved = resolved
        self.num_comps = len(comps)
        self.base = resolved.module(resolved.base_prefix) if resolved.base_prefix else resolved.model
        self.half = 0
        self.rates: torch.Tensor | None = None
        self.in_norms: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.diff = _PairDiff()
        self.handles: list[Any] = [resolved.embeddings().register_forward_hook(self._embedded)]
        for layer in range(resolved.num_layers):
            for ci, comp in enumerate(comps):
                module = resolved.component(layer, comp)
                self.handles.append(module.register_forward_pre_hook(self._enter(layer, ci), with_kwargs=True))
                self.handles.append(module.register_forward_hook(self._leave(layer, ci)))

    def _embedded(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.tokens = output[0] if isinstance(output, tuple) else output

    def _enter(self, layer: int, ci: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            assert self.in_norms is not None
            self.in_norms[:, layer, ci] = self._half_diff_norm(h)

        return hook

    def _leave(self, layer: int, ci: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            assert self.rates is not None
            self.rates[:, layer, ci] = self._half_diff_norm(out)

        return hook

    def _half_diff_norm(self, t: torch.Tensor) -> torch.Tensor:
        """||t_x - t_y|| per pair, once per tensor: in a pre-norm block a LayerNorm's output is the very tensor
        attention (or fc1) receives, so the next component's input norm is the last output norm."""
        if self.last is not None and self.last[0] is t:
            return self.last[1]
        value = self.diff.norm(t, self.half)
        self.last = (t, value)
        return value

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        self.half = b
        shape = (b, self.resolved.num_layers, self.num_comps)
        self.rates = torch.empty(shape, dtype=torch.float32, device=x.device)
        self.in_norms = torch.empty(shape, dtype=torch.float32, device=x.device)
        try:
            self.base(pixel_values=torch.cat([x, y]))
        finally:
            self.last = None  # holds a batch's activation: never keep it past the batch
        assert self.tokens is not None
        return self.rates / self.in_norms.clamp_min(torch.finfo(torch.float32).tiny), self.in_norms, self.tokens

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.diff.buffers.clear()


def _check_weights(resolved: ResolvedComponents, comps: tuple[str, ...]) -> None:
    """Refuse NaN or infinite weights in the measured modules before measuring (one cheap pass).

    Rates alone cannot be trusted to show them: attention kernels may mask a NaN query into finite outputs.
    """
    modules = [("the embedding", resolved.embeddings_path)]
    modules += [(f"layer {layer}, component {c}", path) for layer, c, path in resolved.iter_modules(comps)]
    for where, path in modules:
        for name, param in resolved.module(path).named_parameters():
            if not _all_finite(param):
                raise NonFiniteError(
                    f"{where}: the weight {path}.{name} holds NaN or infinite values, so its plasticity is "
                    "undefined; reload or repair the checkpoint"
                )


def _all_finite(t: torch.Tensor) -> bool:
    """One reduction instead of a full boolean mask: a NaN or inf anywhere makes the sum non-finite, and only
    then (or when a finite sum overflows) is the exact elementwise check paid."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _non_finite_error(
    resolved: ResolvedComponents,
    comps: tuple[str, ...],
    x: torch.Tensor,
    y: torch.Tensor,
    rates: torch.Tensor,
    in_norms: torch.Tensor,
    first_pair: int,
) -> NonFiniteError:
    """Name what made a rate NaN or infinite: the pixels, the embedding, or one (layer, component)."""
    for side, pixels in (("reference (x)", x), ("downstream (y)", y)):
        bad = ~torch.isfinite(pixels).flatten(1).all(1)
        if bad.any():
            i = first_pair + int(bad.nonzero()[0, 0])
            return NonFiniteError(
                f"pair {i}: the {side} image has NaN or infinite pixel values; clean or drop such images "
                "(e.g. torch.nan_to_num, or filter with torch.isfinite(pixels).all()) before measuring"
            )
    mask = ~(torch.isfinite(rates) & torch.isfinite(in_norms))
    layer, ci = (int(v) for v in mask.nonzero()[0, 1:])
    comp = comps[ci]
    if bool(torch.isfinite(in_norms[:, layer, ci]).all()):
        where, suspects = f"the output of {comp}", [resolved.paths[comp][layer]]
    else:  # its input was already broken: look upstream, in call order
        where = f"the input of {comp}"
        suspects = [resolved.embeddings_path, *(resolved.paths[c][i] for i in range(layer + 1) for c in comps)]
    for path in suspects:
        for name, param in resolved.module(path).named_parameters():
            if not bool(torch.isfinite(param).all()):
                return NonFiniteError(
                    f"layer {layer}, component {comp}: {where} is not finite because the weight "
                    f"{path}.{name} holds NaN or infinite values; reload or repair the checkpoint"
                )
    return NonFiniteError(
        f"layer {layer}, component {comp}: {where} is NaN or infinite although the pixels and weights are "
        f"finite (an overflow in {x.dtype}?); measure in float32: model.float()"
    )


def _resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """The device to compute on, refusing unknown or absent ones with the fix (torch only asserts)."""
    if device is None:
        return _model_device(model)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"device={device!r} is not a torch device ({exc}); pass 'cpu', 'cuda', 'cuda:1', 'mps' or None "
            "(the model's own device)"
        ) from None
    if dev.type in ("cpu", "meta"):
        if dev.type == "meta":
            raise InvalidInputError("device='meta' holds no data to measure; pass 'cpu' or a GPU")
        return dev
    backend = getattr(torch, dev.type, None)
    available = bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())
    if not available:
        raise InvalidInputError(
            f"device={device!r} but this machine has no {dev.type} device available to torch "
            f"{torch.__version__}; pass device='cpu' (or omit device to use the model's)"
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise InvalidInputError(
            f"device={device!r} but this machine has {count()} {dev.type} device(s) (0..{count() - 1}); "
            f"pass a valid index"
        )
    return dev


def _hidden_width(resolved: ResolvedComponents) -> int:
    config = getattr(resolved.model, "config", None)
    return int(config.hidden_size)


class _PairDiff:
    """||t[:half] - t[half:]|| per pair, the difference written into a buffer kept per shape.

    On CPU a fresh difference tensor (10-40 MB per component on ViT-Base) costs an mmap and its page faults
    every time: reusing one makes the norm about 4x faster, which is most of what measuring adds to a forward.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def norm(self, t: torch.Tensor, half: int) -> torch.Tensor:
        a, b = t[:half], t[half:]
        key = (tuple(a.shape), a.dtype, a.device)
        buffer = self.buffers.get(key)
        if buffer is None:
            buffer = self.buffers[key] = torch.empty_like(a, memory_format=torch.contiguous_format)
        return _norm(torch.sub(a, b, out=buffer))


def _norm(t: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each sample's token matrix, in float32 whatever the model's dtype."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), dtype=torch.float32)


def _fit_width(z: torch.Tensor, first: nn.Module) -> torch.Tensor:
    """Zero-pad tokens to a linear layer's input width, as the paper does for ``ffn_fc2``."""
    width = getattr(first, "in_features", None)
    if width is None or width == z.shape[-1]:
        return z
    if width < z.shape[-1]:
        raise InvalidInputError(f"cannot feed width-{z.shape[-1]} tokens to a linear layer of width {width}")
    return torch.nn.functional.pad(z, (0, width - z.shape[-1]))


def _check_pixels(pixels: torch.Tensor, resolved: ResolvedComponents) -> None:
    config = getattr(resolved.model, "config", None)
    channels = getattr(config, "num_channels", None)
    if channels is not None and pixels.shape[1] != channels:
        raise InvalidInputError(
            f"the model takes {channels}-channel images but got {pixels.shape[1]} channels "
            f"(pixel batch {tuple(pixels.shape)}); convert the images (e.g. PIL .convert('RGB')) or use the "
            "model's image processor"
        )
    size = getattr(config, "image_size", None)
    if resolved.map.fixed_image_size and size is not None:
        want = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(pixels.shape[-2:]) != want:
            raise InvalidInputError(
                f"the model takes {want[0]}x{want[1]} images but got {pixels.shape[-2]}x{pixels.shape[-1]}; "
                "resize them with the model's image processor (AutoImageProcessor.from_pretrained(model id))"
            )


def _resolve(model: nn.Module) -> ResolvedComponents:
    """The component map bound to the model; a wrapper we could not unwrap gets told to pass the inner model."""
    try:
        return resolve_components(model)
    except UnsupportedModelError as exc:
        hint = wrapper_hint(model)
        if hint is None:
            raise
        raise UnsupportedModelError(hint) from exc


def _needs_processor(obj: Any) -> bool:
    return is_hf_dataset(obj) and "pixel_values" not in obj.column_names


def _load_processor(model: nn.Module) -> Any:
    from transformers import AutoImageProcessor

    name = getattr(getattr(model, "config", None), "_name_or_path", "")
    if not name:
        return None
    try:
        return AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        return None


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


@contextlib.contextmanager
def _closing(run: Any) -> Iterator[None]:
    try:
        yield
    finally:
        if hasattr(run, "close"):
            run.close()
