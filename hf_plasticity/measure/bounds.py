"""The paper's theoretical upper bounds on each component's plasticity, from the live weights.

Odonnat et al., *Vision Transformer Finetuning Benefits from Non-Smooth Components* (ICML 2026,
arXiv:2602.06883), explain their ranking with Lipschitz-type bounds, which the authors' reference code
(ambroiseodt/vit-plasticity) computes per layer:
a LayerNorm's rate is at most its largest gain |gamma| (for input tokens of spread >= 1), a linear map's at
most its spectral norm, and attention's at most

    sum_h ||O_h||_2 ||V_h||_2 sqrt(3n + (12n + 3) r^4 ||Q_h K_h^T / sqrt(d_h)||_2^2)

with n tokens and r the radius of the embedding outputs. Only the attention bound needs data (r, n), so
the weight-only terms are kept per head: a report can recompute the bound after merging shards.

Every norm is exact (top eigenvalues of Gram matrices in float64, to machine precision), and the work is
small: one d x d Gram matrix per MLP linear and d_h x d_h ones per head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..components import AttentionSpec, LinearSpec, NormSpec, ResolvedComponents
from ..errors import UnsupportedModelError
from ..report.bounds import WeightBounds

LAYERNORMS = ("attn_norm", "ffn_norm")
LINEARS = ("ffn_fc1", "ffn_fc2")
RMS_NOTE = "max |g| with g the RMSNorm's effective gain; assumes an input RMS >= 1 (see the report's token_rms)"
_DENSE_MAX = 256  # matrix size above which Lanczos beats a dense eigen-solve


@torch.no_grad()
def weight_bounds(
    resolved: ResolvedComponents,
    components: tuple[str, ...],
    grams: dict[tuple[int, str], torch.Tensor] | None = None,
) -> WeightBounds:
    """Bounds of every layer's components that need only weights, plus attention's per-head terms; ``grams``
    holds W^T W matrices already computed (see :meth:`BoundsBuilder.add`)."""
    builder = BoundsBuilder(resolved, components)
    for layer in range(resolved.num_layers):
        builder.add(layer, grams)
        builder.solve()
    return builder.result()


class BoundsBuilder:
    """The bounds of one layer at a time (:meth:`add`), so a streamed measurement computes them from each
    layer's weights while it holds them; :meth:`result` assembles the report's bounds.

    A linear's spectral norm comes from its Gram matrix alone, so its eigen-solve waits for :meth:`solve`:
    a streamed measurement runs it once the block is released, and the solver's float64 copy is never
    resident beside the block's weights.
    """

    def __init__(self, resolved: ResolvedComponents, components: tuple[str, ...]) -> None:
        self.resolved, self.components = resolved, components
        self.layers = np.full((resolved.num_layers, len(components)), np.nan)
        self.heads: dict[int, np.ndarray] = {}
        self.notes: dict[str, str] = {}
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (layer, component index, Gram matrix)
        for comp in components:
            spec = resolved.spec(comp)
            if isinstance(spec, AttentionSpec) and spec.bound is not None:
                self.notes[comp] = spec.bound  # no number the paper does not justify: null, with the reason
            elif isinstance(spec, NormSpec) and spec.kind == "rmsnorm":
                self.notes[comp] = RMS_NOTE

    @torch.no_grad()
    def add(self, layer: int, grams: dict[tuple[int, str], torch.Tensor] | None = None) -> None:
        """Read layer ``layer``'s weights for its bounds: norm gains, attention's per-head terms, and each
        linear's Gram matrix (solved by :meth:`solve`). ``grams`` caches W^T W per (layer, component): the
        shared protocol needs the same matrix for a tall linear (gate and up), so each is computed once."""
        resolved = self.resolved
        for ci, comp in enumerate(self.components):
            spec = resolved.spec(comp)
            if isinstance(spec, AttentionSpec) and spec.bound is not None:
                continue
            if isinstance(spec, NormSpec):
                self.layers[layer, ci] = _norm_gain(live_module(resolved.component(layer, comp)), spec)
            elif isinstance(spec, LinearSpec):
                self.pending.append((layer, ci, _small_gram(resolved, layer, comp, grams)))
            elif isinstance(spec, AttentionSpec):
                self.heads[layer] = _head_terms(resolved, layer, spec)

    @torch.no_grad()
    def solve(self) -> None:
        """The spectral norms of the linears added since the last call: the top eigenvalues of their Gram
        matrices, which need no weights."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        norms = top_eigenvalues([g for _, _, g in pending]).sqrt().tolist()
        for (layer, ci, _), value in zip(pending, norms, strict=True):
            self.layers[layer, ci] = value

    def result(self) -> WeightBounds:
        self.solve()
        heads = np.stack([self.heads[k] for k in sorted(self.heads)]) if self.heads else np.zeros((0, 0, 2))
        return WeightBounds(tuple(self.components), self.layers, heads, self.notes)


def linear_parts(resolved: ResolvedComponents, layer: int, component: str) -> list[torch.Tensor]:
    """A linear component's effective weight as the (out_i, in) blocks of one matrix stacked along the output:
    one block for a plain linear, gate and up for a gated MLP; Conv1D weights (in x out) transposed, read
    through adapters (live weights). Views, never a stacked copy: a 7B model's gate and up are 360 MB in
    float32, and the estimator holds one block of the model at a time."""
    spec = resolved.spec(component)
    if not isinstance(spec, LinearSpec):
        raise UnsupportedModelError(f"{component} of the {resolved.map.family!r} map is not declared a linear map")
    parts = []
    for module in resolved.component_modules(layer, component):
        w = live_weight(module)
        parts.append(w.T if spec.transposed else w)
    return parts


def gram(parts: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """W^T W of the matrix W stacked from ``parts`` (blocks of rows), as the sum of W_i^T W_i: the stacked
    matrix is never built, and a half-precision block is widened one at a time. float32 (float64 for
    float64 weights): ||W v||^2 = v^T (W^T W) v, a d x d product instead of a d x d_out one."""
    blocks = [parts] if isinstance(parts, torch.Tensor) else list(parts)
    total: torch.Tensor | None = None
    for block in blocks:
        w = _widened(block)
        total = w.T @ w if total is None else total.addmm_(w.T, w)
    if total is None:
        raise UnsupportedModelError("a linear component with no weight has no Gram matrix")
    return total


def spectral_norm(weight: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """Largest singular value of ``weight``, or of the matrix stacked from its blocks of rows (gate and up, as
    :func:`linear_parts` gives them): sqrt of the top eigenvalue of the smaller Gram matrix."""
    parts = [weight] if isinstance(weight, torch.Tensor) else list(weight)
    return float(top_eigenvalues([_smaller_gram(parts)])[0].sqrt())


def top_eigenvalues(grams: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Largest eigenvalue of each symmetric PSD matrix (a batch (b, d, d), or a list of (d_i, d_i)), in float64,
    to machine precision.

    Large matrices go to ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``, ``tol=0``), widened to float64 one at
    a time: on two cores it finds the top eigenvalue of a 768 x 768 Gram matrix about 5x faster than a dense
    ``eigvalsh`` and agrees with it to 1e-14. Small ones (per-head blocks) stay dense and are batched by
    size, where one LAPACK call is cheapest.
    """
    mats = list(grams.unbind()) if isinstance(grams, torch.Tensor) else list(grams)
    top = torch.empty(len(mats), dtype=torch.float64)
    for size in {m.shape[-1] for m in mats}:
        same = [i for i, m in enumerate(mats) if m.shape[-1] == size]
        if size <= _DENSE_MAX:
            dense = torch.stack([mats[i] for i in same]).double()
            top[same] = torch.linalg.eigvalsh(dense)[:, -1].cpu()
            continue
        from scipy.sparse.linalg import eigsh

        start = np.random.default_rng(0).standard_normal(size)  # fixed: bounds are reproducible
        for i in same:  # one float64 copy at a time
            top[i] = float(eigsh(_float64(mats[i]), k=1, which="LA", tol=0, v0=start, return_eigenvectors=False)[0])
    device = mats[0].device if mats else torch.device("cpu")
    return top.clamp_min(0).to(device)


def linear_gram(
    resolved: ResolvedComponents,
    layer: int,
    component: str,
    grams: dict[tuple[int, str], torch.Tensor] | None = None,
) -> torch.Tensor:
    """W^T W of a linear component's weight (:func:`gram` of its :func:`linear_parts`), computed once per
    ``grams`` cache (keyed by layer and component): the bounds and the shared protocol both need it."""
    if grams is not None and (layer, component) in grams:
        return grams[layer, component]
    value = gram(linear_parts(resolved, layer, component))
    if grams is not None:
        grams[layer, component] = value
    return value


def _float64(gram: torch.Tensor) -> np.ndarray:
    return gram.double().cpu().numpy()


def _small_gram(
    resolved: ResolvedComponents, layer: int, component: str, grams: dict[tuple[int, str], torch.Tensor] | None
) -> torch.Tensor:
    """The smaller Gram matrix of a linear component's weight; W^T W shared through ``grams``."""
    parts = linear_parts(resolved, layer, component)
    if sum(p.shape[0] for p in parts) < parts[0].shape[1]:
        return _smaller_gram(parts)
    return linear_gram(resolved, layer, component, grams)


def _smaller_gram(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """W^T W or W W^T of the stacked W, whichever is smaller (both have the squared singular values of W);
    W W^T is assembled from its blocks W_i W_j^T."""
    if sum(p.shape[0] for p in parts) >= parts[0].shape[1]:
        return gram(parts)
    ws = [_widened(p) for p in parts]
    return torch.cat([torch.cat([a @ b.T for b in ws], dim=1) for a in ws])


def _widened(weight: torch.Tensor) -> torch.Tensor:
    """The weight in float32 (float64 kept), detached: no copy when it already is."""
    w = weight.detach()
    return w if w.dtype in (torch.float32, torch.float64) else w.float()


def live_module(module: nn.Module) -> nn.Module:
    """What computes the output now, seen through a plasticity adapter layer: the active adapter's module
    (the trained copy, or the module itself in place), or the original while adapters are disabled.

    The bounds must describe the weights the measurement runs through, as the forward pass does.
    """
    adapters = getattr(module, "plasticity_modules", None)
    if adapters is None:
        return module
    active = [a for a in getattr(module, "active_adapters", []) if a in adapters]
    if getattr(module, "disable_adapters", False) or not active:
        return module.get_base_layer()
    return adapters[active[0]]


def live_weight(module: nn.Module) -> torch.Tensor:
    """A linear's effective weight: through plasticity layers, plus the active LoRA updates when unmerged."""
    module = live_module(module)
    lora_a = getattr(module, "lora_A", None)
    if lora_a is None:
        return _weight(module, "linear")
    weight = _weight(module.get_base_layer(), "linear")
    if not getattr(module, "disable_adapters", False) and not getattr(module, "merged", False):
        for adapter in module.active_adapters:
            if adapter in lora_a:
                weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
    return weight


def _norm_gain(module: nn.Module, spec: NormSpec) -> float:
    """max |g| with the family's gain rule: g = w (LayerNorm, Llama's RMSNorm) or 1 + w (Gemma)."""
    weight = getattr(module, "weight", None)
    if weight is None:  # no affine weight: the gain is 1
        return 1.0
    return float((weight.detach().double() + spec.gain_offset).abs().max())


def _weight(module: nn.Module, comp: str) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise UnsupportedModelError(f"{comp} module {type(module).__name__} has no 2-d weight; bounds need a linear")
    return weight


def _head_terms(resolved: ResolvedComponents, layer: int, spec: AttentionSpec) -> np.ndarray:
    """Per head: ||O_h|| ||V_h|| and ||Q_h K_h^T|| / sqrt(d_h), each from d_h x d_h Gram matrices."""
    if spec.projections is None:
        raise UnsupportedModelError(
            f"the {resolved.map.family!r} map declares no attention projections for the bound; set "
            "AttentionSpec.projections, or AttentionSpec.bound to the reason there is none"
        )
    try:
        block = resolved.module(resolved.layer_path(layer))
        mats = [live_weight(_live_submodule(block, n)).detach().float() for n in spec.projections]
    except AttributeError as exc:
        raise UnsupportedModelError(
            f"layer {layer} lacks the projections {spec.projections} that the {resolved.map.family!r} component map "
            "names; fix AttentionSpec.projections"
        ) from exc
    if spec.transposed:
        mats = [m.T for m in mats]
    if spec.fused_qkv is not None:  # one (3d, d) matrix: q, k, v row blocks
        wq, wk, wv = mats[0].chunk(3, dim=0)
        wo = mats[3]
    else:
        wq, wk, wv, wo = mats
    num_heads = _num_heads(resolved, live_module(resolved.component(layer, "mha")))
    dh = wq.shape[0] // num_heads

    def per_head_rows(w: torch.Tensor) -> torch.Tensor:  # (heads, d_h, d): row block h maps a token to head h
        return w.reshape(num_heads, dh, w.shape[1])

    q, k, v = per_head_rows(wq), per_head_rows(wk), per_head_rows(wv)
    o = wo.reshape(wo.shape[0], num_heads, dh).permute(1, 2, 0)  # column block h of o_proj, transposed
    gq, gk = (q @ q.transpose(1, 2)).double(), (k @ k.transpose(1, 2)).double()
    gv, go = (v @ v.transpose(1, 2)).double(), (o @ o.transpose(1, 2)).double()
    ov = (top_eigenvalues(gv) * top_eigenvalues(go)).sqrt()
    # ||Q_h K_h^T||^2 is the top eigenvalue of Gq^(1/2) Gk Gq^(1/2) (same spectrum as Gq Gk, but symmetric)
    evals, evecs = torch.linalg.eigh(gq)
    root = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.transpose(1, 2)
    qk = top_eigenvalues(root @ gk @ root).sqrt() / dh**0.5
    return torch.stack([ov, qk], dim=-1).cpu().numpy()


def _live_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)``, seen through plasticity adapter layers at every step (a wrapped attention
    block keeps its projections inside the active adapter's module, not under its own path)."""
    module = live_module(root)
    for part in path.split("."):
        module = live_module(getattr(module, part))
    return module


def _num_heads(resolved: ResolvedComponents, attention: nn.Module) -> int:
    for attr in ("num_attention_heads", "num_heads", "n_head"):
        value = getattr(attention, attr, None)
        if isinstance(value, int):
            return value
    config = getattr(resolved.base(), "config", None) or resolved.model.config
    return int(config.num_attention_heads)
