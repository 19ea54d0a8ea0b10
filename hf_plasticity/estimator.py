"""The plasticity estimator: per (layer, component) rates ||f(a) - f(b)|| / ||a - b|| over pairs of inputs.

Two protocols. ``"shared"`` is the paper's: every component of every layer is applied to the same pair of
embedding outputs (z_x, z_y), so what is compared is each component's *function*. ``"in_situ"`` feeds each
component the input it really receives at its depth, read by hooks during one forward pass over x and y.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from .components import ResolvedComponents, resolve_components, validate_components
from .data.pairs import is_hf_dataset, make_pair_batches
from .distributed import resolve_shard, unwrap_model, wrapper_hint
from .errors import InvalidInputError, UnsupportedModelError
from .report import PlasticityReport, model_metadata
from .stats import RateStats

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
        progress: show a tqdm progress bar.
        data_name, reference_name: names recorded in the report (default: taken from the data).
        accelerator, rank, world_size: who measures which pairs (see ``hf_plasticity.distributed``). By
            default, under ``accelerate launch`` or any initialised process group, every process measures a
            disjoint shard of the same seeded pairs and every process returns the whole report. An
            ``Accelerator`` (or ``PartialState``), or ``rank``/``world_size``, set the shard explicitly; without
            a process group of that size the call returns its shard's report, to combine with ``merge``.

    ``model`` may be a ``PeftModel``, DDP-wrapped or ``accelerator.prepare``d: its live weights are measured
    (see :func:`hf_plasticity.distributed.unwrap_model`).
    """
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    shard = resolve_shard(accelerator, rank, world_size)
    progress = progress and shard.is_main
    model = unwrap_model(model)
    resolved = _resolve(model)
    comps = validate_components(components)
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
    dev = torch.device(device) if device is not None else _model_device(model)
    if device is not None:
        model.to(dev)
    dtype = _model_dtype(model)
    stats = RateStats.zeros(resolved.num_layers, len(comps), dev, keep_rates)
    run = _shared_batch if protocol == "shared" else _InSitu(resolved, comps)
    total = None if pairs.num_pairs is None else math.ceil(pairs.num_pairs / batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _closing(run):
            bar = tqdm(
                pairs.batches,
                total=total,
                desc=f"plasticity ({protocol})",
                unit="batch",
                disable=not progress,
            )
            for x, y in bar:
                x = x.to(dev, dtype, non_blocking=True)
                y = y.to(dev, dtype, non_blocking=True)
                _check_pixels(x, resolved)
                _check_pixels(y, resolved)
                rates, valid = run(resolved, comps, x, y)
                stats.update(rates, valid)
    finally:
        model.train(was_training)
    stats, coverage = shard.combine(stats, pairs)
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
        coverage=coverage,
    )


def component_fn(resolved: ResolvedComponents, layer: int, component: str) -> Any:
    """The component as a function of a token tensor (B, n, d), as the shared protocol applies it."""
    chain = resolved.chain(layer, component)

    def f(z: torch.Tensor) -> torch.Tensor:
        out = _fit_width(z, chain[0])
        for module in chain:
            out = module(out)
            if isinstance(out, tuple):
                out = out[0]
        return out

    return f


def _shared_batch(
    resolved: ResolvedComponents, comps: tuple[str, ...], x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All components of all layers on one pair of embedding outputs: rates (B, L, C) and valid mask."""
    b = x.shape[0]
    z = resolved.embeddings()(torch.cat([x, y]))
    dz = z[:b] - z[b:]
    in_norm = _norm(dz)
    rates = torch.empty(b, resolved.num_layers, len(comps), dtype=torch.float32, device=z.device)
    for layer in range(resolved.num_layers):
        for ci, comp in enumerate(comps):
            chain = resolved.chain(layer, comp)
            if len(chain) == 1 and isinstance(chain[0], nn.Linear):
                # A linear map's difference is the map of the difference (the bias cancels), and a
                # zero-padded input only meets the first d columns: one (d x d_out) product on dz.
                out_diff = dz @ chain[0].weight[:, : dz.shape[-1]].T
            else:
                out = component_fn(resolved, layer, comp)(z)
                out_diff = out[:b] - out[b:]
            rates[:, layer, ci] = _norm(out_diff)
    valid = (in_norm > 0)[:, None, None].expand_as(rates)
    return rates / in_norm.clamp_min(torch.finfo(torch.float32).tiny)[:, None, None], valid


class _InSitu:
    """Hooks that read each component's real input and output during one forward pass over [x; y]."""

    def __init__(self, resolved: ResolvedComponents, comps: tuple[str, ...]) -> None:
        self.base = resolved.module(resolved.base_prefix) if resolved.base_prefix else resolved.model
        self.half = 0
        self.rates: torch.Tensor | None = None
        self.in_norms: torch.Tensor | None = None
        self.handles: list[Any] = []
        for layer in range(resolved.num_layers):
            for ci, comp in enumerate(comps):
                chain = resolved.chain(layer, comp)
                self.handles.append(chain[0].register_forward_pre_hook(self._enter(layer, ci), with_kwargs=True))
                self.handles.append(chain[-1].register_forward_hook(self._leave(layer, ci)))

    def _enter(self, layer: int, ci: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            assert self.in_norms is not None
            self.in_norms[:, layer, ci] = _norm(h[: self.half] - h[self.half :])

        return hook

    def _leave(self, layer: int, ci: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            assert self.rates is not None
            self.rates[:, layer, ci] = _norm(out[: self.half] - out[self.half :])

        return hook

    def __call__(
        self, resolved: ResolvedComponents, comps: tuple[str, ...], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        self.half = b
        shape = (b, resolved.num_layers, len(comps))
        self.rates = torch.empty(shape, dtype=torch.float32, device=x.device)
        self.in_norms = torch.empty(shape, dtype=torch.float32, device=x.device)
        self.base(pixel_values=torch.cat([x, y]))
        valid = self.in_norms > 0
        return self.rates / self.in_norms.clamp_min(torch.finfo(torch.float32).tiny), valid

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


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
