"""The plasticity estimator: per (layer, component) rates ||f(a) - f(b)|| / ||a - b|| over pairs of inputs.

Two protocols. ``"shared"`` is the paper's: every component of every layer is applied to the same pair of
embedding outputs (z_x, z_y), so what is compared is each component's *function*. ``"in_situ"`` feeds each
component the input it really receives at its depth, read by hooks during one forward pass over x and y.

Both protocols run through one batch loop, so they capture the block-0 input and each layer's attention
arguments (masks, rotary cos/sin, which every family's shared protocol replays) the same way, check pixels and
non-finite values the same way, and produce the per-batch statistics the collectives re-add. The bounds and
the collectives do not depend on the loop and are in :mod:`.bounds` and :mod:`.distributed`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..components import AttentionSpec, LinearSpec, ResolvedComponents, resolve_components, validate_components
from ..data.pairs import holds_images, is_hf_dataset, make_pair_batches, needs_tokenizer
from ..data.text import DEFAULT_SEQ_LEN, is_token_tensor
from ..errors import InvalidInputError, NonFiniteError, NotEnoughPairsError, SmallSampleWarning, UnsupportedModelError
from ..report.bounds import WeightBounds
from ..report.report import PlasticityReport, model_metadata
from ..stats import RateStats, TokenStats
from .arguments import BUILDERS
from .bounds import BoundsBuilder, linear_gram, linear_parts, live_weight, weight_bounds
from .distributed import resolve_shard, unwrap_model, wrapper_hint
from .placement import MemorySpec, Placement

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
    tokenizer: Any = None,
    seq_len: int | None = None,
    text_column: str | None = None,
    seed: int = 0,
    keep_rates: bool = True,
    bounds: bool = True,
    progress: bool = True,
    data_name: str | None = None,
    reference_name: str | None = None,
    accelerator: Any = None,
    rank: int | None = None,
    world_size: int | None = None,
    max_memory: MemorySpec | None = None,
) -> PlasticityReport:
    """Measure the plasticity of every component of every layer of ``model``.

    Args:
        model: a transformers model with a registered component map (``hf-plasticity list``: ViT-like vision
            encoders, the CLIP/SigLIP vision towers, BERT/RoBERTa, GPT-2, Llama, Mistral, Qwen2/3, Gemma).
        data: the downstream data: pixel tensor (N, C, H, W), ``input_ids`` tensor (N, L), torch DataLoader
            (dicts with ``pixel_values`` or ``input_ids``, tuples or tensors), or ``datasets.Dataset`` with an
            image column (decoded with ``image_processor``) or a text column (cut into windows with
            ``tokenizer``); a list of strings is text too.
        reference: pretraining-like data supplying x of each pair (y comes from ``data``). Without it,
            pairs are disjoint draws from ``data``.
        protocol: ``"shared"`` (the paper's) or ``"in_situ"``.
        num_pairs: pairs to measure; None takes as many as the data allow, at most 12,800.
        batch_size: pairs per batch (DataLoaders keep their own batches).
        components: component types to measure; None measures all five.
        device: where to compute; None uses the model's device. The model is moved there.
        image_processor: decodes ``datasets.Dataset`` images; None loads the model's own when needed.
        tokenizer: tokenizes text data; None loads the model's own (from its local folder) when needed.
        seq_len: tokens per window cut from text (default 128, capped by the model's position table); the
            two sequences of a pair always have one length. ``input_ids`` tensors keep their own length.
        text_column: the data sets' text column, when they have several string columns.
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
        max_memory: for a model whose layers Accelerate offloads (``from_pretrained(..., device_map="auto",
            offload_folder=...)``), the memory a chunk of pairs' activations may take on the compute device:
            bytes, a size such as ``"4GiB"``, or Accelerate's ``{0: "10GiB", "cpu": "30GiB"}`` map; None takes
            half of the device's free memory. Such a model is streamed: the block-0 inputs of a chunk are computed,
            then each layer is loaded once, applied to every batch of the chunk and released.

    ``model`` may be a ``PeftModel``, DDP-wrapped or ``accelerator.prepare``d: its live weights are measured
    (see :func:`hf_plasticity.measure.distributed.unwrap_model`). A model Accelerate dispatched (a device map,
    CPU or disk offload) is measured where its weights are (see ``docs/big-models.md``).
    """
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    shard = resolve_shard(accelerator, rank, world_size)
    progress = progress and shard.is_main
    model = unwrap_model(model)
    resolved = _resolve(model)
    comps = validate_components(components)
    placement = Placement.of(resolved, device)
    dev = placement.device if device is None else _resolve_device(device, model)
    config = getattr(resolved.base(), "config", None) or getattr(model, "config", None)
    num_channels = int(getattr(config, "num_channels", 3))
    takes_tokens = resolved.main_input == "input_ids"
    _check_modality(model, takes_tokens, data, reference, text_column)  # before a processor or tokenizer loads
    if image_processor is None and (_needs_processor(data) or _needs_processor(reference)):
        image_processor = _load_processor(model)
    if tokenizer is None and (needs_tokenizer(data, text_column) or needs_tokenizer(reference, text_column)):
        tokenizer = _load_tokenizer(model)
    vocab_size, max_length = _text_limits(config) if takes_tokens else (None, None)
    if seq_len is None and max_length is not None:
        seq_len = min(DEFAULT_SEQ_LEN, max_length)
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
        tokenizer=tokenizer,
        seq_len=seq_len,
        text_column=text_column,
        vocab_size=vocab_size,
        max_length=max_length,
    )
    if device is not None:
        model.to(dev)
    streamed = placement.offloaded
    if not streamed:  # a streamed model's weights are checked layer by layer, as they are read
        _check_weights(resolved, comps, placement)
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
                builder = BoundsBuilder(resolved, comps) if bounds and streamed else None
                if streamed:
                    results = _streamed(run, bar, placement, dev, dtype, comps, max_memory, builder, progress)
                else:
                    results = ((run(inputs, b), inputs, b) for inputs, b in _batches(bar, dev, dtype, resolved))
                for (rates, in_norms, z), inputs, b in results:
                    if not bool(torch.isfinite(rates.sum() + in_norms.sum())):
                        raise _non_finite_error(resolved, comps, inputs, b, rates, in_norms, seen, placement)
                    stats.update(rates, in_norms > 0)
                    seen += b
                    tokens.update(z)
                weight_part: WeightBounds | None = None
                if builder is not None:
                    weight_part = builder.result()
                elif bounds:  # in memory, the shared protocol's Gram matrices serve the bounds too
                    weight_part = weight_bounds(resolved, comps, run.grams if isinstance(run, _Shared) else None)
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


def _batches(
    pairs: Iterable[tuple[Any, Any]], dev: torch.device, dtype: torch.dtype, resolved: ResolvedComponents
) -> Iterator[tuple[dict[str, Any], int]]:
    for x, y in pairs:
        yield _pair_inputs(x, y, dev, dtype, resolved)


def _streamed(
    run: _Shared | _InSitu,
    pairs: Iterable[tuple[Any, Any]],
    placement: Placement,
    dev: torch.device,
    dtype: torch.dtype,
    comps: tuple[str, ...],
    max_memory: MemorySpec | None,
    bounds: BoundsBuilder | None,
    progress: bool,
) -> Iterator[tuple[_Measured, dict[str, Any], int]]:
    """Layer-major measurement of a model whose layers Accelerate offloads.

    The block-0 inputs of a chunk of batches (as many pairs as ``max_memory`` holds) are computed with the
    embedding held; then each block is held once, applied to every batch of the chunk (the in-situ protocol
    carries the chunk's hidden states from block to block) and released. On the first chunk each block's
    weights are also checked and its bounds computed, while held. Batches come out in order, so the statistics
    are those of the in-memory measurement.

    The embedding's weight check reads every row, so it holds the embedding on its own, before any chunk:
    from a memory-mapped checkpoint (Accelerate's disk offload of safetensors) the block-0 inputs then page in
    only their tokens' rows. A block's bounds are read after its batches ran and solved after it is released,
    so the resident peak is one block with either its batches' activations or its Gram matrices, never both,
    and never the solver's float64 copies.
    """
    resolved = run.resolved
    batches = iter(_batches(pairs, dev, dtype, resolved))
    pending = next(batches, None)  # known before the embedding is read: no read for an empty last chunk
    per_chunk: int | None = None
    first = True
    grams = run.grams if isinstance(run, _Shared) else None
    _check_weights(resolved, comps, placement, layers=())  # the embedding, in a hold of its own
    while pending is not None:
        chunk: list[tuple[dict[str, Any], int, torch.Tensor]] = []
        with placement.held(resolved.embeddings()):
            while pending is not None and (per_chunk is None or sum(c[1] for c in chunk) < per_chunk):
                inputs, b = pending
                z = run.block0(inputs)
                chunk.append((inputs, b, z))
                if per_chunk is None:
                    pair_bytes = run.pair_copies * z[0].numel() * z.element_size()
                    per_chunk = placement.chunk_pairs(pair_bytes, max_memory)
                pending = next(batches, None)

        def layers(check: bool) -> Iterator[tuple[int, torch.device]]:
            bar = tqdm(range(resolved.num_layers), desc="layers", unit="layer", leave=False, disable=not progress)
            for layer in bar:
                with placement.held(resolved.layers()[layer]):
                    if check:
                        _check_weights(resolved, comps, placement, layers=(layer,), embedding=False)
                    yield layer, placement.layer_device(layer)
                    if check and bounds is not None:  # after the batches: never beside their activations
                        bounds.add(layer, grams)
                    if grams is not None:
                        grams.clear()  # the layer's Gram matrices, shared by the protocol and the bounds
                if check and bounds is not None:
                    bounds.solve()  # the eigen-solves need only the Gram matrices: the block is released

        results = run.chunk([(b, z) for _, b, z in chunk], layers(first))
        first = False
        for (inputs, b, _), measured in zip(chunk, results, strict=True):
            yield measured, inputs, b


def model_inputs(x: Any, y: Any = None) -> dict[str, Any]:
    """The estimator's input contract: what the model's forward receives for a batch (or a pair batch).

    A pair batch side is a float tensor (pixels, ``pixel_values``), an integer tensor (token ids,
    ``input_ids`` of shape (N, L)), or a dict of tensors given to the forward as keywords (``input_ids`` with
    its ``attention_mask``, ...). With ``y``, the two sides are concatenated along the batch, x first: the
    estimator runs one forward over [x; y].
    """
    sides = [x] if y is None else [x, y]
    if isinstance(x, Mapping):
        keys = list(x)
        if y is not None and (not isinstance(y, Mapping) or set(y) != set(keys)):
            raise InvalidInputError(f"the two sides of a pair batch carry different inputs ({keys} and {y!r:.80})")
        return {k: torch.cat([torch.as_tensor(s[k]) for s in sides]) if y is not None else x[k] for k in keys}
    tensors = [torch.as_tensor(s) for s in sides]
    joined = torch.cat(tensors) if y is not None else tensors[0]
    key = "pixel_values" if joined.is_floating_point() else "input_ids"
    return {key: joined}


def _primary(inputs: dict[str, Any]) -> torch.Tensor:
    """The tensor that carries the data: pixels or token ids (the batch size and the pair count come from it)."""
    for key in ("pixel_values", "input_ids", "inputs_embeds"):
        if key in inputs:
            return inputs[key]
    return next(iter(inputs.values()))


_Measured = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""A batch's (rates, input norms, block-0 input), each per pair, layer and component."""


class _Stop(Exception):
    """Raised by a hook to end a forward pass once it has what it needs."""


_CACHE_ARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


class _Block0:
    """The input of the first block in the model's own forward, and the auxiliary arguments of each layer.

    The block-0 input is read by a forward pre-hook on the first block, never re-derived from the embedding
    module (Gemma scales it, CLIP normalises it, GPT-2 adds positions); the forward then stops. ``target`` says
    whose arguments are wanted: each layer's attention module (the shared protocol, for attention that takes
    masks, positions or rotary cos/sin) or each block (a streamed in-situ measurement). A family with a
    builder (:mod:`.arguments`) gets them built from the block-0 input; any other family's are captured by
    pre-hooks during one full forward, cache arguments dropped. They depend on the input's shape and masks,
    not on token values, so inputs of the same shape and keys reuse them; any other batch (a new shape, an
    explicit ``attention_mask``) gets them again.
    """

    def __init__(
        self, resolved: ResolvedComponents, comps: tuple[str, ...], target: Literal["attention", "block"]
    ) -> None:
        self.resolved = resolved
        self.base = resolved.base()
        self.first = resolved.layers()[0]
        spec = resolved.spec("mha")
        aux = "mha" in comps and isinstance(spec, AttentionSpec) and spec.auxiliary_inputs
        self.target: str | None = target if target == "block" or aux else None
        self.builder = BUILDERS.get(resolved.map.block_arguments)
        self.aux: dict[int, tuple[bool, tuple[Any, ...], dict[str, Any]]] = {}
        self.aux_key: Any = None
        self.z: torch.Tensor | None = None
        self.stop = False
        self.extra = _forward_extras(self.base)

    @property
    def needs_aux(self) -> bool:
        return self.target is not None

    def __call__(self, inputs: dict[str, Any]) -> torch.Tensor:
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in inputs.items() if isinstance(v, torch.Tensor))
        fresh = self.target is not None and (self.aux_key != key or len(inputs) > 1)
        capture = fresh and self.builder is None
        handles = [self.first.register_forward_pre_hook(self._block0, with_kwargs=True)]
        if capture:
            self.aux.clear()
            for layer in range(self.resolved.num_layers):
                module = self.resolved.component(layer, "mha") if self.target == "attention" else self.layer(layer)
                handles.append(module.register_forward_pre_hook(self._capture(layer), with_kwargs=True))
        self.stop = not capture
        try:
            self.base(**inputs, **self.extra)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        assert self.z is not None
        z, self.z = self.z, None
        if fresh and self.builder is not None:
            built = self.builder(self.base, z, inputs.get("attention_mask"), self.resolved.num_layers)
            self.aux = {layer: (True, (), kwargs) for layer, kwargs in enumerate(built)}
        if fresh:
            self.aux_key = key if len(inputs) == 1 else None
        return z

    def layer(self, layer: int) -> nn.Module:
        return self.resolved.layers()[layer]

    def _block0(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.z = args[0] if args else kwargs["hidden_states"]
        if self.stop:
            raise _Stop

    def _capture(self, layer: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            kwargs = {k: v for k, v in kwargs.items() if k not in _CACHE_ARGS}
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            if args:
                self.aux[layer] = (True, tuple(args[1:]), kwargs)
            else:
                kwargs.pop("hidden_states")
                self.aux[layer] = (False, (), kwargs)

        return hook

    def attend(self, layer: int, module: nn.Module, z: torch.Tensor) -> Any:
        """Call layer ``layer``'s attention module (or block) on ``z`` with the arguments its layer gives it."""
        if not self.needs_aux:
            return module(z)
        positional, args, kwargs = self.aux[layer]
        return module(z, *args, **kwargs) if positional else module(hidden_states=z, **kwargs)


def _forward_extras(base: nn.Module) -> dict[str, Any]:
    """Keywords that keep a measuring forward lean: no key/value cache."""
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def component_fn(resolved: ResolvedComponents, layer: int, component: str, block0: _Block0 | None = None) -> Any:
    """The component as a function of a token tensor (B, n, d), as the shared protocol applies it.

    Dispatches on the component's declared spec: a norm is its module; a linear (stacked or not) maps the
    tokens zero-padded to its input width, outputs concatenated; attention gets its layer's auxiliary
    inputs (``block0``) and, when declared, its separate output projection.
    """
    spec = resolved.spec(component)
    modules = resolved.component_modules(layer, component)

    def f(z: torch.Tensor) -> torch.Tensor:
        if isinstance(spec, AttentionSpec):
            out = block0.attend(layer, modules[0], z) if block0 is not None else modules[0](z)
            out = out[0] if isinstance(out, tuple) else out
            return modules[1](out) if len(modules) > 1 else out
        if isinstance(spec, LinearSpec):
            width = _in_width(resolved, layer, component)
            return torch.cat([m(_pad(z, width)) for m in modules], dim=-1)
        out = modules[0](z)
        return out[0] if isinstance(out, tuple) else out

    return f


def _in_width(resolved: ResolvedComponents, layer: int, component: str) -> int:
    spec = resolved.spec(component)
    w = live_weight(resolved.component(layer, component))
    return int(w.shape[0] if getattr(spec, "transposed", False) else w.shape[1])


class _Shared:
    """The paper's protocol: every component of every layer applied to one pair of block-0 inputs.

    Only attention and the norms are non-linear and need both inputs. A linear map's difference is the map of
    the difference (the bias cancels), so ``ffn_fc1`` and ``ffn_fc2`` work on dz = z_x - z_y alone:
    ||W1 dz||^2 = sum(dz * (dz G)) with the d x d Gram matrix G = W1^T W1, computed once (a quarter of the
    d x 4d product; for a gated MLP, W1 is the stacked [W_gate; W_up] and G = W_gate^T W_gate + W_up^T W_up, so
    the stacked matrix is never built), and ``ffn_fc2``'s zero-padded input only meets W2's first d columns
    (one d x d product). The bounds need the same G: it is computed once for both (``grams``).

    In memory, a batch runs every layer (``__call__``); streamed, a chunk of batches runs one layer at a time
    (``chunk``), and a layer's Gram matrices live while its weights are held.
    """

    pair_copies = 3  # a chunk holds z_x, z_y and dz per pair

    def __init__(self, resolved: ResolvedComponents, comps: tuple[str, ...]) -> None:
        self.resolved, self.comps = resolved, comps
        self.diff = _PairDiff()
        self.block0 = _Block0(resolved, comps, "attention")
        self.linear: dict[tuple[int, int], tuple[str, list[torch.Tensor]]] = {}
        self.grams: dict[tuple[int, str], torch.Tensor] = {}  # W^T W per (layer, component), shared with the bounds
        self.fns: dict[tuple[int, int], Any] = {}
        self.width: int | None = None

    def _prepare(self, layer: int, width: int) -> None:
        resolved = self.resolved
        for ci, comp in enumerate(self.comps):
            if not isinstance(resolved.spec(comp), LinearSpec):
                self.fns[layer, ci] = component_fn(resolved, layer, comp, self.block0)
                continue
            parts = linear_parts(resolved, layer, comp)
            rows, cols = sum(p.shape[0] for p in parts), parts[0].shape[1]
            if cols < width:
                raise InvalidInputError(
                    f"cannot feed width-{width} tokens to {resolved.paths[comp][layer]} (input width {cols})"
                )
            if cols == width and rows > width:
                self.linear[layer, ci] = ("gram", [linear_gram(resolved, layer, comp, self.grams)])
            else:
                self.linear[layer, ci] = ("map", [p[:, :width].T for p in parts])

    def _layer(self, layer: int, z: torch.Tensor, dz: torch.Tensor, b: int, out: torch.Tensor) -> None:
        for ci in range(len(self.comps)):
            linear = self.linear.get((layer, ci))
            if linear is None:
                out[:, layer, ci] = self.diff.norm(self.fns[layer, ci](z), b)
            elif linear[0] == "gram":  # on the layer's device: a device map may place layers apart
                g = linear[1][0]
                d = dz.to(g.device, g.dtype)
                out[:, layer, ci] = (d * (d @ g)).sum((1, 2)).clamp_min(0).sqrt()
            else:  # the stacked map's output, block by block
                maps = linear[1]
                d = dz.to(maps[0].device)
                mapped = [d @ m.to(dz.dtype) for m in maps]
                out[:, layer, ci] = _norm(mapped[0] if len(mapped) == 1 else torch.cat(mapped, dim=-1))

    def __call__(self, inputs: dict[str, Any], b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        resolved = self.resolved
        z = self.block0(inputs)
        if self.width is None:
            self.width = z.shape[-1]
            for layer in range(resolved.num_layers):
                self._prepare(layer, self.width)
        dz = z[:b] - z[b:]
        in_norm = _norm(dz)
        out = torch.empty(b, resolved.num_layers, len(self.comps), dtype=_rate_dtype(z.dtype), device=z.device)
        for layer in range(resolved.num_layers):
            self._layer(layer, z, dz, b, out)
        in_norms = in_norm[:, None, None].expand_as(out)
        return out / in_norms.clamp_min(torch.finfo(torch.float32).tiny), in_norms, z

    def chunk(self, batches: list[tuple[int, torch.Tensor]], layers: Any) -> list[_Measured]:
        """Rates of a chunk of batches ``(b, z)``; ``layers`` yields each layer index while its weights are held."""
        diffs = [z[:b] - z[b:] for b, z in batches]
        outs = [
            torch.empty(b, self.resolved.num_layers, len(self.comps), dtype=_rate_dtype(z.dtype), device=z.device)
            for b, z in batches
        ]
        for layer, device in layers:
            self._prepare(layer, batches[0][1].shape[-1])
            for (b, z), dz, out in zip(batches, diffs, outs, strict=True):
                self._layer(layer, z.to(device), dz.to(device), b, out)
            self.fns.clear()
            self.linear.clear()  # views of the layer's weights: gone before the next layer loads
        results = []
        for (_, z), dz, out in zip(batches, diffs, outs, strict=True):
            in_norms = _norm(dz)[:, None, None].expand_as(out)
            results.append((out / in_norms.clamp_min(torch.finfo(torch.float32).tiny), in_norms, z))
        return results

    def close(self) -> None:
        self.linear.clear()
        self.grams.clear()
        self.fns.clear()
        self.diff.buffers.clear()


class _InSitu:
    """Hooks that read each component's real input and output during one forward pass over [x; y].

    A component's input is its first module's input; its output is the last module's output (attention with a
    separate output projection) or, for stacked linears, every module's output (their squared differences add).
    """

    pair_copies = 4  # a chunk holds z_x, z_y (for the token statistics) and both hidden states per pair

    def __init__(self, resolved: ResolvedComponents, comps: tuple[str, ...]) -> None:
        self.resolved = resolved
        self.num_comps = len(comps)
        self.base = resolved.base()
        self.extra = _forward_extras(self.base)
        self.half = 0
        self.rates: torch.Tensor | None = None
        self.in_norms: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.diff = _PairDiff()
        self.block0 = _Block0(resolved, comps, "block")  # a streamed measurement calls the blocks itself
        self.handles: list[Any] = [resolved.layers()[0].register_forward_pre_hook(self._block0, with_kwargs=True)]
        for layer in range(resolved.num_layers):
            for ci, comp in enumerate(comps):
                modules = resolved.component_modules(layer, comp)
                spec = resolved.spec(comp)
                outputs = modules if isinstance(spec, LinearSpec) else modules[-1:]
                self.handles.append(modules[0].register_forward_pre_hook(self._enter(layer, ci), with_kwargs=True))
                for module in outputs:
                    self.handles.append(module.register_forward_hook(self._leave(layer, ci)))

    def _block0(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.tokens = args[0] if args else kwargs["hidden_states"]

    def _enter(self, layer: int, ci: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            assert self.in_norms is not None and self.rates is not None
            self.in_norms[:, layer, ci] = self._half_diff_norm(h)
            self.rates[:, layer, ci] = 0

        return hook

    def _leave(self, layer: int, ci: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            assert self.rates is not None
            self.rates[:, layer, ci] += self._half_diff_norm(out).square()

        return hook

    def _half_diff_norm(self, t: torch.Tensor) -> torch.Tensor:
        """||t_x - t_y|| per pair, once per tensor: in a pre-norm block a LayerNorm's output is the very tensor
        attention (or fc1) receives, so the next component's input norm is the last output norm."""
        if self.last is not None and self.last[0] is t:
            return self.last[1]
        value = self.diff.norm(t, self.half)
        self.last = (t, value)
        return value

    def __call__(self, inputs: dict[str, Any], b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.half = b
        device = _primary(inputs).device
        shape = (b, self.resolved.num_layers, self.num_comps)
        dtype = _rate_dtype(_model_dtype(self.resolved.model))
        self.rates = torch.empty(shape, dtype=dtype, device=device)
        self.in_norms = torch.empty(shape, dtype=dtype, device=device)
        try:
            self.base(**inputs, **self.extra)
        finally:
            self.last = None  # holds a batch's activation: never keep it past the batch
        assert self.tokens is not None
        tokens, self.tokens = self.tokens, None
        return self.rates.sqrt() / self.in_norms.clamp_min(torch.finfo(torch.float32).tiny), self.in_norms, tokens

    def chunk(self, batches: list[tuple[int, torch.Tensor]], layers: Any) -> list[_Measured]:
        """Rates of a chunk of batches ``(b, z)``, z their block-0 inputs, carrying each batch's hidden states
        from block to block; ``layers`` yields each layer index while its weights are held."""
        shape = (self.resolved.num_layers, self.num_comps)
        dtype = _rate_dtype(_model_dtype(self.resolved.model))
        rates = [torch.empty((b, *shape), dtype=dtype, device=z.device) for b, z in batches]
        norms = [torch.empty((b, *shape), dtype=dtype, device=z.device) for b, z in batches]
        states = [z for _, z in batches]
        blocks = self.resolved.layers()
        try:
            for layer, device in layers:
                for i, (b, _) in enumerate(batches):
                    self.half, self.rates, self.in_norms, self.last = b, rates[i], norms[i], None
                    out = self.block0.attend(layer, blocks[layer], states[i].to(device))
                    states[i] = out[0] if isinstance(out, tuple) else out
        finally:
            self.last, self.tokens = None, None
        tiny = torch.finfo(torch.float32).tiny
        return [(r.sqrt() / n.clamp_min(tiny), n, z) for r, n, (_, z) in zip(rates, norms, batches, strict=True)]

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.diff.buffers.clear()


def _check_weights(
    resolved: ResolvedComponents,
    comps: tuple[str, ...],
    placement: Placement,
    layers: Iterable[int] | None = None,
    embedding: bool = True,
) -> None:
    """Refuse NaN or infinite weights in the measured modules before measuring (one cheap pass), reading
    offloaded weights where Accelerate keeps them; ``layers`` and ``embedding`` narrow the pass.

    Rates alone cannot be trusted to show them: attention kernels may mask a NaN query into finite outputs.
    """
    wanted = None if layers is None else set(layers)
    modules = [("the embedding", resolved.embeddings_path)] if embedding else []
    modules += [
        (f"layer {layer}, component {c}", path)
        for layer, c, path in resolved.iter_module_paths(comps)
        if wanted is None or layer in wanted
    ]
    for where, path in modules:
        module = resolved.module(path)
        with placement.held(module):
            for name, param in module.named_parameters():
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
    inputs: dict[str, Any],
    b: int,
    rates: torch.Tensor,
    in_norms: torch.Tensor,
    first_pair: int,
    placement: Placement,
) -> NonFiniteError:
    """Name what made a rate NaN or infinite: the pixels, the embedding, or one (layer, component)."""
    data = _primary(inputs)
    sides = (("reference (x)", data[:b]), ("downstream (y)", data[b:])) if data.is_floating_point() else ()
    for side, pixels in sides:
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
        where, suspects = f"the output of {comp}", resolved.modules_of(resolved.paths[comp][layer])
    else:  # its input was already broken: look upstream, in call order
        where = f"the input of {comp}"
        suspects = [
            resolved.embeddings_path,
            *(p for i in range(layer + 1) for c in comps for p in resolved.modules_of(resolved.paths[c][i])),
        ]
    for path in suspects:
        module = resolved.module(path)
        with placement.held(module):
            broken = [name for name, param in module.named_parameters() if not bool(torch.isfinite(param).all())]
        if broken:
            return NonFiniteError(
                f"layer {layer}, component {comp}: {where} is not finite because the weight "
                f"{path}.{broken[0]} holds NaN or infinite values; reload or repair the checkpoint"
            )
    return NonFiniteError(
        f"layer {layer}, component {comp}: {where} is NaN or infinite although the pixels and weights are "
        f"finite (an overflow in {_model_dtype(resolved.model)}?); measure in float32: model.float()"
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
    """Frobenius norm of each sample's token matrix, in float32 (float64 for a float64 model)."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), dtype=_rate_dtype(t.dtype))


def _rate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Rates are float32 whatever the model's precision, and float64 for a float64 model (exact checks)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _pad(z: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad tokens to a linear layer's input width, as the paper does for ``ffn_fc2``."""
    if width == z.shape[-1]:
        return z
    if width < z.shape[-1]:
        raise InvalidInputError(f"cannot feed width-{z.shape[-1]} tokens to a linear layer of width {width}")
    return torch.nn.functional.pad(z, (0, width - z.shape[-1]))


def _pair_inputs(
    x: Any, y: Any, dev: torch.device, dtype: torch.dtype, resolved: ResolvedComponents
) -> tuple[dict[str, Any], int]:
    """The forward's keywords for one pair batch ([x; y] along the batch) and the number of pairs.

    Floating tensors (pixels) take the model's dtype; integer ones (token ids, masks) keep theirs.
    """
    first = _primary(model_inputs(x))
    b = first.shape[0]
    if first.is_floating_point():
        check_same_image_size(first, _primary(model_inputs(y)), resolved.base())
    inputs = model_inputs(x, y)
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(dev, dtype if value.is_floating_point() else value.dtype, non_blocking=True)
        out[key] = value
    if "pixel_values" in out:
        base = resolved.base()  # a dual encoder's vision tower has the image config
        check_pixels(out["pixel_values"][:b], base, resolved.map.fixed_image_size)
        check_pixels(out["pixel_values"][b:], base, resolved.map.fixed_image_size)
    return out, b


def check_same_image_size(x: torch.Tensor, y: torch.Tensor, model: nn.Module) -> None:
    """Both images of a pair go through one forward: one size for both, or the concatenation fails in torch."""
    if tuple(x.shape[1:]) == tuple(y.shape[1:]):
        return
    size = getattr(getattr(model, "config", None), "image_size", None)
    want = (size, size) if isinstance(size, int) else tuple(size) if size is not None else None
    target = f"{want[0]}x{want[1]}, the model's size" if want else "one size"
    raise InvalidInputError(
        f"the reference images are {_describe_pixels(x)} but the downstream images are {_describe_pixels(y)}: both "
        f"images of a pair go through one forward, so resize both to {target}: pass image_processor= "
        "(AutoImageProcessor.from_pretrained(<model id>)) with image data sets, or resize pixel tensors with "
        "torch.nn.functional.interpolate"
    )


def _describe_pixels(t: torch.Tensor) -> str:
    if t.ndim != 4:
        return f"of shape {tuple(t.shape[1:])}"
    return f"{t.shape[-2]}x{t.shape[-1]} ({t.shape[1]} channels)"


def check_pixels(pixels: torch.Tensor, model: nn.Module, fixed_image_size: bool) -> None:
    """Refuse pixels the model cannot take (channels; size, for a family whose embedding has a fixed size).

    The one pixel-shape check: the estimator runs it on every batch, ``PlasticityCallback`` on its held-out pairs.
    """
    config = getattr(model, "config", None)
    channels = getattr(config, "num_channels", None)
    if channels is not None and pixels.shape[1] != channels:
        raise InvalidInputError(
            f"the model takes {channels}-channel images but got {pixels.shape[1]} channels "
            f"(pixel batch {tuple(pixels.shape)}); convert the images (e.g. PIL .convert('RGB')) or use the "
            "model's image processor"
        )
    size = getattr(config, "image_size", None)
    if fixed_image_size and size is not None:
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
    return is_hf_dataset(obj) and "pixel_values" not in obj.column_names and not needs_tokenizer(obj)


def _load_tokenizer(model: nn.Module) -> Any:
    """The tokenizer saved beside the model, or None (the data layer then names the fix)."""
    from transformers import AutoTokenizer

    name = getattr(getattr(model, "config", None), "name_or_path", "")
    if not name:
        return None
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_modality(model: nn.Module, takes_tokens: bool, data: Any, reference: Any, text_column: Any) -> None:
    """Text for a text model, images for an image model: the other way round fails deep inside the forward
    (or asks for an image processor that would not help). The model's ``main_input_name`` says which it takes."""
    name = type(model).__name__
    for role, obj in (("downstream", data), ("reference", reference)):
        if obj is None:
            continue
        text = needs_tokenizer(obj, text_column) or is_token_tensor(obj)
        if text and not takes_tokens and isinstance(obj, torch.Tensor) and obj.is_floating_point():
            raise InvalidInputError(
                f"{role} pixel values must have shape (N, channels, height, width), got {tuple(obj.shape)}"
            )
        if text and not takes_tokens:
            raise InvalidInputError(
                f"the {role} data is text but {name} takes images (its main_input_name is 'pixel_values'); "
                "measure a text model on text, or pass images (pixel tensors or an image data set)"
            )
        if holds_images(obj) and takes_tokens:
            kind = "pixels" if isinstance(obj, torch.Tensor) else "images (an image data set)"
            raise InvalidInputError(
                f"the {role} data holds {kind} but {name} takes token ids (its main_input_name is 'input_ids'); "
                "measure it on text (a text file, a data set with a text column, or input_ids (N, L) with "
                "tokenizer= for raw text), or measure an image model on these images"
            )


def _text_limits(config: Any) -> tuple[int | None, int | None]:
    """The vocabulary size and the longest sequence of a text model's config (None, None for an image model)."""
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int):
        return None, None
    longest = getattr(config, "max_position_embeddings", None)
    return vocab, longest if isinstance(longest, int) and longest > 0 else None


def _load_processor(model: nn.Module) -> Any:
    from transformers import AutoImageProcessor

    name = getattr(getattr(model, "config", None), "name_or_path", "")
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
