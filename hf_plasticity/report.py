"""``PlasticityReport``: the measured statistics and everything a ranking, a figure or a model card needs.

The report keeps the mergeable sums (count, sum, sum of squares per layer and component) rather than
only means, so reports of shards measured by several processes merge exactly. It knows nothing of PEFT
or model cards; they read it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .components import COMPONENTS
from .errors import OverlappingPairsError, ReportFormatError, UnknownComponentError
from .io import atomic_write, atomic_write_text
from .stats import mean_std

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from .stats import RateStats

SCHEMA = "hf_plasticity.report"
SCHEMA_VERSION = 1
Z95 = 1.96


class ComponentStat(NamedTuple):
    """Plasticity of one component type (pooled over layers) or one (layer, component) cell."""

    mean: float
    std: float
    ci95: float
    n: int


@dataclass
class PlasticityReport:
    """Plasticity statistics of a model's components, with how they were measured."""

    components: tuple[str, ...]
    module_paths: dict[str, list[str]]
    count: np.ndarray
    sum: np.ndarray
    sum_sq: np.ndarray
    excluded: np.ndarray
    protocol: str
    num_pairs: int
    data_name: str
    reference_name: str | None = None
    seed: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    rates: np.ndarray | None = None
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    coverage: dict[str, Any] | None = None
    """Which pairs were measured: ``{"plan": fingerprint, "planned_pairs": n, "ranges": [[start, stop], ...]}``
    (pair indices of the plan named by the fingerprint). None in reports written before it was recorded."""

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_stats(
        cls,
        stats: RateStats,
        *,
        components: tuple[str, ...],
        module_paths: dict[str, list[str]],
        protocol: str,
        num_pairs: int,
        data_name: str,
        reference_name: str | None,
        seed: int | None,
        model_info: dict[str, Any],
        coverage: dict[str, Any] | None = None,
    ) -> PlasticityReport:
        arrays = stats.numpy()
        return cls(
            components=tuple(components),
            module_paths={c: list(module_paths[c]) for c in components},
            count=arrays["count"],
            sum=arrays["sum"],
            sum_sq=arrays["sum_sq"],
            excluded=arrays["excluded"],
            protocol=protocol,
            num_pairs=num_pairs,
            data_name=data_name,
            reference_name=reference_name,
            seed=seed,
            model=model_info,
            rates=stats.rates(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            versions=dict(_versions()),
            coverage=coverage,
        )

    # ----------------------------------------------------------------- statistics
    @property
    def num_layers(self) -> int:
        return int(self.count.shape[0])

    @property
    def excluded_pairs(self) -> int:
        """Pairs left out of some cell because their input distance was zero."""
        return int(self.excluded.max()) if self.excluded.size else 0

    @property
    def mean(self) -> np.ndarray:
        """Mean rate per (layer, component)."""
        return mean_std(self.count, self.sum, self.sum_sq)[0]

    @property
    def std(self) -> np.ndarray:
        return mean_std(self.count, self.sum, self.sum_sq)[1]

    @property
    def ci95(self) -> np.ndarray:
        """Half-width of the 95% interval per (layer, component): 1.96 * std / sqrt(n)."""
        return Z95 * self.std / np.sqrt(np.maximum(self.count, 1))

    def stat(self, component: str, layer: int | None = None) -> ComponentStat:
        """Statistics of a component type, pooled over layers, or of one layer's component."""
        ci = self._index(component)
        if layer is None:
            n, s, sq = self.count[:, ci].sum(), self.sum[:, ci].sum(), self.sum_sq[:, ci].sum()
        else:
            n, s, sq = self.count[layer, ci], self.sum[layer, ci], self.sum_sq[layer, ci]
        mean, std = mean_std(np.array(n), np.array(s), np.array(sq))
        return ComponentStat(float(mean), float(std), float(Z95 * std / math.sqrt(max(int(n), 1))), int(n))

    def summary(self) -> dict[str, ComponentStat]:
        """Pooled statistics of every measured component type, in ranking order."""
        return {c: self.stat(c) for c in self.ranking()}

    def scores(self) -> dict[str, float]:
        """Mean plasticity of each component type (pooled over layers)."""
        return {c: self.stat(c).mean for c in self.components}

    def ranking(self) -> list[str]:
        """Component types, highest plasticity first."""
        scores = self.scores()
        return sorted(self.components, key=lambda c: (-_finite(scores[c]), COMPONENTS.index(c)))

    def module_scores(self) -> dict[str, float]:
        """Mean plasticity of every measured module (one per layer and component type)."""
        mean = self.mean
        return {
            path: float(mean[layer, ci])
            for ci, comp in enumerate(self.components)
            for layer, path in enumerate(self.module_paths[comp])
        }

    def ranked_modules(self, components: list[str] | tuple[str, ...] | None = None) -> list[str]:
        """Module paths, highest plasticity first (optionally only of some component types)."""
        allowed = {p for c in (components or self.components) for p in self.module_paths[self._check(c)]}
        scores = self.module_scores()
        place = {
            p: (layer, ci) for ci, c in enumerate(self.components) for layer, p in enumerate(self.module_paths[c])
        }
        # ties (e.g. two LayerNorms with equal weights) go to the shallower layer, then in component order
        return sorted(allowed, key=lambda p: (-_finite(scores[p]), place[p]))

    def merge(self, other: PlasticityReport) -> PlasticityReport:
        """The report of both measurements together (e.g. shards from several processes).

        Shards of one pair plan (same seed, data and number of pairs) merge into the report of their pairs,
        per-pair rates in pair order; shards that share a pair raise :class:`OverlappingPairsError`, so a pair
        is never counted twice. Sums are added report by report: equal to a one-process measurement to
        rounding (about 1e-12 relative); the collective in ``measure_plasticity`` itself is exact.
        """
        if (self.components, self.protocol, self.model.get("config_hash")) != (
            other.components,
            other.protocol,
            other.model.get("config_hash"),
        ):
            raise ValueError("cannot merge reports of different models, protocols or component sets")
        coverage, rates = _merge_coverage(self, other)
        return PlasticityReport(
            components=self.components,
            module_paths=self.module_paths,
            count=self.count + other.count,
            sum=self.sum + other.sum,
            sum_sq=self.sum_sq + other.sum_sq,
            excluded=self.excluded + other.excluded,
            protocol=self.protocol,
            num_pairs=self.num_pairs + other.num_pairs,
            data_name=self.data_name,
            reference_name=self.reference_name,
            seed=self.seed,
            model=self.model,
            rates=rates,
            created=self.created,
            versions=self.versions,
            coverage=coverage,
        )

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: metadata, the sums, derived means/CIs and the ranking."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "versions": self.versions,
            "model": self.model,
            "protocol": self.protocol,
            "num_pairs": self.num_pairs,
            "excluded_pairs": self.excluded_pairs,
            "data": {"downstream": self.data_name, "reference": self.reference_name, "seed": self.seed},
            "components": list(self.components),
            "num_layers": self.num_layers,
            "module_paths": self.module_paths,
            "ranking": self.ranking(),
            "summary": {c: s._asdict() for c, s in self.summary().items()},
            "stats": {
                "count": self.count.tolist(),
                "sum": self.sum.tolist(),
                "sum_sq": self.sum_sq.tolist(),
                "excluded": self.excluded.tolist(),
            },
            "mean": _nan_to_none(self.mean),
            "ci95": _nan_to_none(self.ci95),
        }
        if self.coverage is not None:
            out["coverage"] = self.coverage
        if self.rates is not None:
            data = np.ascontiguousarray(self.rates, dtype="<f4")
            out["rates"] = {
                "dtype": "float32-le",
                "shape": list(data.shape),
                "base64": base64.b64encode(data.tobytes()).decode("ascii"),
            }
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlasticityReport:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ReportFormatError("not an hf_plasticity report (its 'schema' field is missing or foreign)")
        version = d.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ReportFormatError(
                f"report schema version {version!r} is newer than this version reads ({SCHEMA_VERSION}); "
                "upgrade hf-plasticity"
            )
        try:
            stats = d["stats"]
            rates = None
            if d.get("rates"):
                raw = base64.b64decode(d["rates"]["base64"])
                rates = np.frombuffer(raw, dtype="<f4").reshape(d["rates"]["shape"]).astype(np.float32)
            report = cls(
                components=tuple(d["components"]),
                module_paths={k: list(v) for k, v in d["module_paths"].items()},
                count=np.asarray(stats["count"], dtype=np.int64),
                sum=np.asarray(stats["sum"], dtype=np.float64),
                sum_sq=np.asarray(stats["sum_sq"], dtype=np.float64),
                excluded=np.asarray(stats["excluded"], dtype=np.int64),
                protocol=d["protocol"],
                num_pairs=int(d["num_pairs"]),
                data_name=d["data"]["downstream"],
                reference_name=d["data"].get("reference"),
                seed=d["data"].get("seed"),
                model=dict(d.get("model", {})),
                rates=rates,
                created=d.get("created", ""),
                versions=dict(d.get("versions", {})),
                coverage=d.get("coverage"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportFormatError(f"the report is incomplete or malformed ({type(exc).__name__}: {exc})") from exc
        shape = (report.num_layers, len(report.components))
        if any(a.shape != shape for a in (report.count, report.sum, report.sum_sq, report.excluded)):
            raise ReportFormatError(f"the report's statistics do not all have shape {shape}")
        return report

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON, atomically (an existing file is replaced only by a complete one)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlasticityReport:
        """Read a report written by :meth:`save`; a missing, corrupt or foreign file raises a clear error."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no report at {str(p)!r}; create one with `hf-plasticity measure ... --out`")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportFormatError(f"{str(p)!r} is not valid JSON, so not an hf_plasticity report: {exc}") from exc
        return cls.from_dict(data)

    # ----------------------------------------------------------------- presentation
    def to_markdown(self, per_layer: bool = False) -> str:
        """A markdown table of component types by plasticity (and, optionally, of every layer)."""
        lines = [
            "| rank | component | plasticity | 95% CI | n |",
            "|---:|---|---:|---:|---:|",
        ]
        for rank, (comp, s) in enumerate(self.summary().items(), start=1):
            lines.append(f"| {rank} | {comp} | {s.mean:.4f} | ± {s.ci95:.4f} | {s.n} |")
        if per_layer:
            lines += ["", "| layer | " + " | ".join(self.components) + " |"]
            lines.append("|---:|" + "---:|" * len(self.components))
            mean, ci = self.mean, self.ci95
            for layer in range(self.num_layers):
                cells = [f"{mean[layer, c]:.4f} ± {ci[layer, c]:.4f}" for c in range(len(self.components))]
                lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str] | None = None, title: str | None = None) -> Figure:
        """The paper's two views: rates per component type, and plasticity against depth."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(12, 4.2), layout="constrained")
        ax_dist, ax_depth = fig.subplots(1, 2)
        order = self.ranking()
        colors = {c: f"C{COMPONENTS.index(c)}" for c in order}  # one colour per component, in both views
        if self.rates is not None and len(self.rates):
            samples = []
            for comp in order:
                r = self.rates[:, :, self.components.index(comp)].ravel()
                samples.append(r[np.isfinite(r)])
            boxes = ax_dist.boxplot(samples, showfliers=False, patch_artist=True, medianprops={"color": "black"})
            for patch, comp in zip(boxes["boxes"], order, strict=True):
                patch.set(facecolor=colors[comp], alpha=0.6)
            ax_dist.set_xticks(range(1, len(order) + 1), order)
            ax_dist.set_title("Rates of change per component type (all layers)")
        else:
            stats = [self.stat(c) for c in order]
            ax_dist.bar(
                order,
                [s.mean for s in stats],
                yerr=[s.ci95 for s in stats],
                capsize=4,
                color=[colors[c] for c in order],
            )
            ax_dist.set_title("Plasticity per component type (mean, 95% CI)")
        ax_dist.set_ylabel("||f(x) - f(y)|| / ||x - y||")
        depth = np.arange(self.num_layers)
        mean, ci = self.mean, self.ci95
        for comp in order:
            c = self.components.index(comp)
            ax_depth.plot(depth, mean[:, c], marker="o", ms=3, label=comp, color=colors[comp])
            ax_depth.fill_between(depth, mean[:, c] - ci[:, c], mean[:, c] + ci[:, c], alpha=0.25, color=colors[comp])
        ax_depth.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_depth.set_xlabel("layer")
        ax_depth.set_ylabel("plasticity")
        ax_depth.set_title("Plasticity against depth (95% CI)")
        ax_depth.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        finite = mean[np.isfinite(mean) & (mean > 0)]
        if finite.size and finite.max() / finite.min() > 30:  # components a decade or more apart
            ax_dist.set_yscale("log")
            ax_depth.set_yscale("log")
        name = self.model.get("model_id") or self.model.get("architecture", "model")
        fig.suptitle(title or f"{name} — {self.protocol} protocol, {self.num_pairs} pairs")
        if path is not None:
            suffix = Path(path).suffix.lstrip(".") or "png"
            atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
        return fig

    def __repr__(self) -> str:
        ranking = " > ".join(self.ranking())
        return (
            f"PlasticityReport(model={self.model.get('model_id') or self.model.get('architecture')!r}, "
            f"protocol={self.protocol!r}, layers={self.num_layers}, pairs={self.num_pairs}, "
            f"ranking={ranking})"
        )

    def _index(self, component: str) -> int:
        return self.components.index(self._check(component))

    def _check(self, component: str) -> str:
        if component not in self.components:
            raise UnknownComponentError(
                f"component {component!r} is not in this report; it measured {list(self.components)}"
            )
        return component


def _merge_coverage(a: PlasticityReport, b: PlasticityReport) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """The merged coverage and per-pair rates; refuses shards of one plan that share pairs."""
    from .distributed import merge_ranges, ranges_overlap

    both_rates = a.rates is not None and b.rates is not None
    ca, cb = a.coverage, b.coverage
    if ca is None or cb is None or ca.get("plan") != cb.get("plan"):
        # different pair plans (or a report from before coverage was recorded): nothing to compare
        rates = np.concatenate([a.rates, b.rates]) if both_rates else None
        return None, rates
    shared = ranges_overlap(ca["ranges"], cb["ranges"])
    if shared:
        raise OverlappingPairsError(
            f"both reports measured pairs {shared[:3]}{' ...' if len(shared) > 3 else ''} of the same pair plan "
            f"(fingerprint {ca['plan']}: same seed, data and number of pairs); merging would count them twice. Merge "
            "disjoint shards (measure_plasticity(..., rank=r, world_size=w)) or measure with another seed"
        )
    coverage = {**ca, "ranges": merge_ranges([*ca["ranges"], *cb["ranges"]])}
    if not both_rates:
        return coverage, None
    segments = [*_segments(a), *_segments(b)]
    if segments is None or any(s is None for s in segments):
        return coverage, np.concatenate([a.rates, b.rates])
    segments.sort(key=lambda seg: seg[0])
    return coverage, np.concatenate([seg[1] for seg in segments])


def _segments(report: PlasticityReport) -> list[Any]:
    """The report's per-pair rates cut along its pair ranges: ``[(start, rates), ...]`` ([None] if they differ)."""
    assert report.rates is not None and report.coverage is not None
    ranges = report.coverage["ranges"]
    if sum(stop - start for start, stop in ranges) != len(report.rates):
        return [None]
    out, row = [], 0
    for start, stop in ranges:
        out.append((start, report.rates[row : row + stop - start]))
        row += stop - start
    return out


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """Identify the measured model: its id, type, class, a hash of its configuration and its size."""
    config = getattr(model, "config", None)
    info: dict[str, Any] = {
        "model_id": getattr(config, "_name_or_path", "") or "",
        "model_type": getattr(config, "model_type", None),
        "architecture": type(model).__name__,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    if config is not None and hasattr(config, "to_dict"):
        cfg = {k: v for k, v in config.to_dict().items() if k not in {"_name_or_path", "transformers_version"}}
        blob = json.dumps(cfg, sort_keys=True, default=str).encode()
        info["config_hash"] = hashlib.sha256(blob).hexdigest()[:16]
    return info


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("hf-plasticity", "torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in a.tolist()]
