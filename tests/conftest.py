"""Shared fixtures: tiny random models, one per registered architecture, small pixel tensors, a loopback Hub.

No test leaves 127.0.0.1. The loopback Hub is created and ``HF_ENDPOINT`` set *before* anything imports
``huggingface_hub`` (which freezes the endpoint into module-level clients at import), and an autouse guard
makes any connection or name lookup beyond the loopback interface fail the test that made it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from .hub_stub import HubStub  # standard library only

HUB = HubStub()
_HF_HOME = tempfile.mkdtemp(prefix="hf-plasticity-tests-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(
    {
        "HF_ENDPOINT": HUB.endpoint,
        "HF_HOME": _HF_HOME,  # no token or cache of this machine is read or written
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }
)
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)

import contextlib
import functools
import socket
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    Dinov2Config,
    Dinov2ForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

IMAGE_SIZE = 16
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
    "num_labels": 3,
}


def _tiny(config_cls: type, model_cls: type, **extra: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return model_cls(config_cls(**TINY, **extra)).eval()

    return make


# One row per registered architecture (plus the bare ViT encoder): the registry test matrix.
TINY_MODELS: dict[str, Callable[[], nn.Module]] = {
    "vit": _tiny(ViTConfig, ViTForImageClassification),
    "vit-base-model": _tiny(ViTConfig, ViTModel),
    "deit": _tiny(DeiTConfig, DeiTForImageClassification),
    "dinov2": _tiny(Dinov2Config, Dinov2ForImageClassification),
}


@pytest.fixture(params=sorted(TINY_MODELS))
def any_tiny_model(request: pytest.FixtureRequest) -> nn.Module:
    return TINY_MODELS[request.param]()


@pytest.fixture
def tiny_vit() -> nn.Module:
    return TINY_MODELS["vit"]()


def pixels(n: int, seed: int = 0, channels: int = 3, size: int = IMAGE_SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g)


# ------------------------------------------------------------------------------------ loopback Hub
@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    """The loopback Hub, emptied, with a token in the environment and huggingface_hub's retry sleeps skipped."""
    import huggingface_hub.utils._http as hf_http

    HUB.start().reset()
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(hf_http.time, "sleep", lambda _s: None)  # a retried 5xx costs no wall time
    yield HUB
    HUB.reset()


# ------------------------------------------------------------------------------------ network guard
class BlockedNetworkError(RuntimeError):
    """A test tried to reach beyond the loopback interface."""


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost", ""}


@functools.cache
def _local_names() -> tuple[frozenset[str], frozenset[str]]:
    """Names and addresses of this machine: torch.distributed and accelerate resolve and bind to them."""
    names = set(_LOOPBACK_NAMES)
    with contextlib.suppress(OSError):
        names |= {socket.gethostname(), socket.getfqdn()}
    own: set[str] = set()
    for name in names - _LOOPBACK_NAMES:
        with contextlib.suppress(OSError):
            own |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    return frozenset(names), frozenset(own)


def _is_loopback_ip(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any connection or name lookup that would leave this machine (and the test that tried it)."""
    blocked: list[str] = []
    names, own = _local_names()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def allowed(address: object) -> bool:
        if not isinstance(address, tuple):  # AF_UNIX paths
            return True
        host = str(address[0])
        return _is_loopback_ip(host) or host in own or host in names

    def check(address: object) -> None:
        if not allowed(address):
            blocked.append(repr(address))
            raise BlockedNetworkError(f"test tried to reach {address!r}: tests never leave 127.0.0.1")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        if not (_is_loopback_ip(name) or name in names or name in own):
            blocked.append(name)
            raise BlockedNetworkError(f"test tried to resolve {name!r}: tests never leave 127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield blocked
    assert not blocked, f"a request left the loopback interface: {blocked}"


def scale_embedding(model: nn.Module, scale: float) -> nn.Module:
    """Multiply a ViT's embedding outputs by ``scale``, exactly (patch projection, CLS and positions)."""
    emb = model.vit.embeddings
    with torch.no_grad():
        for p in (emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias, emb.cls_token):
            p.mul_(scale)
        emb.position_embeddings.mul_(scale)
    return model
