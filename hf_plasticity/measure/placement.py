"""Where a model's weights are, and reading them there: in memory, or dispatched by Accelerate.

A model loaded with ``from_pretrained(..., device_map="auto", max_memory=..., offload_folder=...)`` keeps each
offloaded module's weights as meta tensors; the module's ``AlignDevicesHook`` loads them from its weights map
(CPU memory, or files on disk) onto its execution device for each call and frees them after. The estimator
reads them the same way, one block at a time (:meth:`Placement.held`): inside, the block's weights are real
tensors (the weight check, the bounds and the shared protocol's Gram matrices read them) and they stay loaded
across every batch of a chunk of pairs, so an offloaded block is read once per chunk rather than once per batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..compat import accelerate_hook
from ..components import ResolvedComponents
from ..errors import InvalidInputError, UnsupportedPlacementError

MemorySpec = int | str | Mapping[Any, int | str]
"""A memory allowance: bytes, a size string (``"2GiB"``), or Accelerate's per-device ``max_memory`` mapping."""

DEFAULT_SHARE = 0.5
"""Share of the compute device's free memory (as Accelerate counts it) a chunk's activations may take by default:
the rest is for the block being measured and its intermediate tensors."""


@dataclass(frozen=True)
class Placement:
    """The compute device and whether any measured weights are offloaded (then the estimator streams)."""

    resolved: ResolvedComponents
    device: torch.device
    dispatched: bool
    offloaded: bool

    @classmethod
    def of(cls, resolved: ResolvedComponents, device: str | torch.device | None) -> Placement:
        """Read where the model's weights are; refuse placements the estimator cannot read, naming the fix."""
        model = resolved.model
        hooked = any(accelerate_hook(m) is not None for m in model.modules())
        dispatched = hooked or getattr(model, "hf_device_map", None) is not None
        if dispatched and device is not None:
            raise UnsupportedPlacementError(
                f"device={device!r}, but Accelerate dispatched this model (device map "
                f"{_short_map(model)}): each layer computes where the map puts it and cannot be moved; omit device=, "
                "or reload the model with device_map={'': <device>} to compute on one device"
            )
        offloaded = _check_meta(resolved)
        return cls(resolved, _execution_device(resolved.embeddings()), dispatched, offloaded)

    @contextlib.contextmanager
    def held(self, module: nn.Module) -> Iterator[None]:
        """Hold ``module``'s offloaded weights (and its submodules') on their execution devices until exit.

        Accelerate's ``align_module_device`` loads them; the hooks are told not to offload after each call
        meanwhile, so every batch of a chunk runs on weights read once. On exit the weights are released and
        the C heap's free pages handed back (:func:`release_free_memory`). Without offloaded weights: nothing.
        """
        if not self.offloaded:
            yield
            return
        from accelerate.utils import align_module_device, has_offloaded_params

        loaded = False
        with contextlib.ExitStack() as stack:
            for sub in module.modules():
                if has_offloaded_params(sub):
                    stack.enter_context(align_module_device(sub))
                    stack.enter_context(_kept(accelerate_hook(sub)))
                    loaded = True
            yield
        if loaded:
            release_free_memory()

    def layer_device(self, layer: int) -> torch.device:
        """Where block ``layer`` computes (its hook's execution device, else its weights' device)."""
        return _execution_device(self.resolved.layers()[layer])

    def chunk_pairs(self, pair_bytes: int, max_memory: MemorySpec | None) -> int:
        """Pairs per chunk: as many as ``max_memory`` (default: a share of the compute device's free memory)
        holds at ``pair_bytes`` of activations each, at least one."""
        allowance = _allowance(max_memory, self.device)
        return max(1, allowance // max(1, pair_bytes))


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the operating system: glibc's ``malloc_trim``, elsewhere nothing.

    After its first large free, glibc serves allocations of up to 32 MiB (activations, Gram matrices) from its
    heap and keeps their pages when they are freed, so a streamed measurement's resident memory crept up by
    about 0.2 GB over the benchmark's model, block after block, although what it held stayed one block.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc (macOS, musl, Windows): no such call
        return None


@contextlib.contextmanager
def _kept(hook: Any) -> Iterator[None]:
    """The hook keeps its loaded weights after each forward until exit (its ``offload`` flag, restored after)."""
    hook.offload = False
    try:
        yield
    finally:
        hook.offload = True


def _check_meta(resolved: ResolvedComponents) -> bool:
    """Whether some weights the estimator runs are offloaded by Accelerate; meta tensors no hook loads refused."""
    from accelerate.utils import has_offloaded_params

    base = resolved.base()
    covered: list[str] = []  # modules whose hook loads their own tensors (or every submodule's)
    for name, module in base.named_modules():
        if has_offloaded_params(module):
            covered.append(name)
    deep = [n for n in covered if getattr(accelerate_hook(base.get_submodule(n)), "place_submodules", False)]
    own = set(covered)
    for name, tensor in [*base.named_parameters(), *base.named_buffers()]:
        if not tensor.is_meta:
            continue
        owner = name.rpartition(".")[0]
        if owner in own or any(owner == d or owner.startswith(f"{d}.") or not d for d in deep):
            continue
        path = f"{resolved.base_prefix}.{name}" if resolved.base_prefix else name
        raise UnsupportedPlacementError(
            f"the weight {path} is a meta tensor (it holds no values) and no Accelerate hook loads it, so it "
            "cannot be measured; load the weights, e.g. from_pretrained(name, device_map='auto', "
            "offload_folder='offload') for a model larger than memory, or "
            "accelerate.load_checkpoint_and_dispatch(model, checkpoint, device_map='auto') for a model built "
            "with init_empty_weights()"
        )
    return bool(covered)


def _execution_device(module: nn.Module) -> torch.device:
    for sub in module.modules():
        device = getattr(accelerate_hook(sub), "execution_device", None)
        if device is not None:
            return torch.device(device)
    for tensor in [*module.parameters(), *module.buffers()]:
        if not tensor.is_meta:
            return tensor.device
    return torch.device("cpu")


def _allowance(max_memory: MemorySpec | None, device: torch.device) -> int:
    from accelerate.utils import convert_file_size_to_int, get_max_memory

    if max_memory is None:
        free = get_max_memory()
        return int(DEFAULT_SHARE * int(free.get(_device_key(device), free.get("cpu", 0))))
    spec: Any = max_memory
    if isinstance(spec, Mapping):
        key = _device_key(device)
        if key not in spec:
            raise InvalidInputError(
                f"max_memory={dict(spec)!r} has no entry for the compute device {device} (key {key!r}); add one"
            )
        spec = spec[key]
    try:
        value = int(convert_file_size_to_int(spec)) if isinstance(spec, str) else int(spec)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"max_memory={max_memory!r} is not a size ({exc}); pass bytes, a string such as '2GiB', or a "
            "mapping such as {0: '10GiB', 'cpu': '30GiB'}"
        ) from None
    if value <= 0:
        raise InvalidInputError(f"max_memory={max_memory!r} must be positive")
    return value


def _device_key(device: torch.device) -> Any:
    """Accelerate's key for a device in ``max_memory`` maps: a GPU index, or the device type ('cpu', 'mps')."""
    if device.type == "cuda":
        return device.index or 0
    return device.type


def _short_map(model: nn.Module) -> str:
    device_map = getattr(model, "hf_device_map", None) or {}
    items = list(device_map.items())
    text = ", ".join(f"{k or '<model>'}: {v}" for k, v in items[:4])
    return "{" + text + (", ..." if len(items) > 4 else "") + "}"
