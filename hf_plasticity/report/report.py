"""``PlasticityReport``: the measured statistics and everything a ranking, a figure or a model card needs.

The report keeps the mergeable sums (count, sum, sum of squares per layer and component) rather than
only means, so reports of shards measured by several processes merge exactly; beside them, the paper's
theoretical upper bounds and the embedding statistics they need (radius, token spread). It knows nothing
of PEFT or model cards; they read it. Figures live in :mod:`.plots`, tables in :mod:`.tables`.

The statistics, merging and the JSON format are one class because they share one set of arrays and
invariants (shapes per layer and component, schema versions, pair coverage): reading a file checks them all
against the class that uses them. What only reads a report (tables, figures, cards) is kept apart.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..components import COMPONENTS, rank_components
from ..errors import (
    IncompatibleReportsError,
    InvalidInputError,
    LegacyReportWarning,
    MissingDataError,
    OverlappingPairsError,
    ReportFormatError,
    UnknownComponentError,
)
from ..io import atomic_write_text, jsonable
from ..stats import mean_std, merge_ranges, ranges_overlap
from .bounds import WeightBounds

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from ..stats import RateStats

SCHEMA = "hf_plasticity.report"
SCHEMA_VERSION = 2
"""2: ``ffn_fc1`` is the linear map alone (the paper's); bounds and embedding statistics are stored.
1: ``ffn_fc1`` included the MLP activation (a mistake), no bounds. Version-1 files load with a warning."""
Z95 = 1.96


class ComponentStat(NamedTuple):
    """Plasticity of one component type (pooled over layers) or one (layer, component) cell.

    ``bound`` is the theoretical upper bound (for a type, its largest over layers); NaN when unknown.
    ``std`` and ``ci95`` are NaN below two pairs.
    """

    mean: float
    std: float
    ci95: float
    n: int
    bound: float = math.nan


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
    tokens: dict[str, Any] | None = None
    weight_bounds: WeightBounds | None = None
    schema_version: int = SCHEMA_VERSION
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
        tokens: dict[str, Any] | None = None,
        weight_bounds: WeightBounds | None = None,
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
            tokens=tokens,
            weight_bounds=weight_bounds,
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
        if layer is not None and (
            isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not 0 <= layer < self.num_layers
        ):
            raise InvalidInputError(
                f"layer must be an int in 0..{self.num_layers - 1} (this report has {self.num_layers} layers), "
                f"or None to pool all layers; got {layer!r}"
            )
        if layer is None:
            n, s, sq = self.count[:, ci].sum(), self.sum[:, ci].sum(), self.sum_sq[:, ci].sum()
        else:
            n, s, sq = self.count[layer, ci], self.sum[layer, ci], self.sum_sq[layer, ci]
        mean, std = mean_std(np.array(n), np.array(s), np.array(sq))
        bound = math.nan
        if self.bounds is not None:
            column = self.bounds[:, ci] if layer is None else self.bounds[layer, ci : ci + 1]
            bound = float(np.nanmax(column)) if np.isfinite(column).any() else math.nan
        return ComponentStat(float(mean), float(std), float(Z95 * std / math.sqrt(max(int(n), 1))), int(n), bound)

    # ----------------------------------------------------------------- theory
    @property
    def radius(self) -> float:
        """The paper's r: the mean over images of sqrt(mean over tokens of ||token||^2) at the embedding."""
        return self._token_mean("radius_sum")

    @property
    def token_spread(self) -> float:
        """Mean per-token standard deviation of the embedding outputs (a LayerNorm's rate ~ gain / spread)."""
        return self._token_mean("spread_sum")

    @property
    def token_rms(self) -> float:
        """Mean per-token root mean square of the block-0 inputs (an RMSNorm's rate ~ gain / RMS); NaN in
        reports written before it was recorded."""
        if not self.tokens or "rms_sum" not in self.tokens:
            return math.nan
        return self._token_mean("rms_sum")

    @property
    def seq_len(self) -> int | None:
        return None if not self.tokens else int(self.tokens["seq_len"])

    @property
    def bounds(self) -> np.ndarray | None:
        """Theoretical upper bound per (layer, component), attention's at this data's radius; None if absent."""
        if self.weight_bounds is None:
            return None
        full = self.weight_bounds.full(self.radius, self.seq_len or 0)
        return full[:, [self.weight_bounds.components.index(c) for c in self.components]]

    def exceeding_bounds(self) -> list[tuple[str, int, float, float]]:
        """``(component, layer, measured, bound)`` of every cell whose mean exceeds its theoretical bound.

        Only a LayerNorm can: its max-gain bound assumes input tokens of spread >= 1, and below that its rate
        grows like gain / spread. Such a measurement says more about the embedding's scale than about which
        component is worth training (see :class:`~hf_plasticity.tuner.PlasticityConfig`'s ``signal``).
        """
        bounds = self.bounds
        if bounds is None:
            return []
        mean = self.mean
        out = []
        for ci, comp in enumerate(self.components):
            for layer in range(self.num_layers):
                m, b = float(mean[layer, ci]), float(bounds[layer, ci])
                if math.isfinite(m) and math.isfinite(b) and m > b * (1 + 1e-6):
                    out.append((comp, layer, m, b))
        return out

    def _token_mean(self, key: str) -> float:
        if not self.tokens or not self.tokens.get("images"):
            return math.nan
        return float(self.tokens[key]) / float(self.tokens["images"])

    def summary(self) -> dict[str, ComponentStat]:
        """Pooled statistics of every measured component type, in ranking order."""
        return {c: self.stat(c) for c in self.ranking()}

    def scores(self) -> dict[str, float]:
        """Mean plasticity of each component type (pooled over layers)."""
        return {c: self.stat(c).mean for c in self.components}

    def ranking(self) -> list[str]:
        """Component types, highest plasticity first."""
        scores = self.scores()
        return rank_components({c: scores[c] for c in self.components})

    def module_means(self) -> dict[str, float]:
        """Measured mean plasticity of every module (one per layer and component type), by module path."""
        mean = self.mean
        return {
            path: float(mean[layer, ci])
            for ci, comp in enumerate(self.components)
            for layer, path in enumerate(self.module_paths[comp])
        }

    def module_scores(self) -> dict[str, float]:
        """Deprecated name of :meth:`module_means`."""
        warnings.warn(
            "PlasticityReport.module_scores() is now module_means() (the measured mean of each module)",
            FutureWarning,
            stacklevel=2,
        )
        return self.module_means()

    def ranked_modules(self, components: list[str] | tuple[str, ...] | None = None) -> list[str]:
        """Module paths, highest plasticity first (optionally only of some component types), by the one rule."""
        allowed = {p for c in (components or self.components) for p in self.module_paths[self._check(c)]}
        means = self.module_means()
        places = {p: (layer, c) for c in self.components for layer, p in enumerate(self.module_paths[c])}
        return rank_components({p: means[p] for p in means if p in allowed}, places)

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
            raise IncompatibleReportsError(
                "cannot merge reports of different models, protocols or component sets: merge only shards of one "
                "measurement (the same model, protocol and --components), or compare the reports side by side"
            )
        if self.schema_version != other.schema_version:
            raise ReportFormatError(
                f"cannot merge a schema-{self.schema_version} report with a schema-{other.schema_version} one: "
                "schema 1 measured ffn_fc1 with the MLP activation, schema 2 without; re-measure the older one"
            )
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
            tokens=_merge_tokens(self.tokens, other.tokens),
            weight_bounds=_same_bounds(self.weight_bounds, other.weight_bounds),
            schema_version=self.schema_version,
            coverage=coverage,
        )

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: metadata, the sums, derived means/CIs and the ranking."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
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
            "summary": {c: {k: jsonable(v) for k, v in s._asdict().items()} for c, s in self.summary().items()},
            "stats": {
                "count": self.count.tolist(),
                "sum": self.sum.tolist(),
                "sum_sq": self.sum_sq.tolist(),
                "excluded": self.excluded.tolist(),
            },
            "mean": jsonable(self.mean),
            "ci95": jsonable(self.ci95),
        }
        if self.tokens:
            out["tokens"] = {
                **self.tokens,
                "radius": jsonable(self.radius),
                "token_spread": jsonable(self.token_spread),
                "token_rms": jsonable(self.token_rms),
            }
        if self.weight_bounds is not None:
            out["bounds"] = {
                "components": list(self.weight_bounds.components),
                "weights": jsonable(self.weight_bounds.layers),
                "attention_heads": self.weight_bounds.heads.tolist(),
                "upper_bounds": None if self.bounds is None else jsonable(self.bounds),
                "notes": dict(self.weight_bounds.notes),
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
        _validate_report_dict(d)
        version = d.get("schema_version")
        if isinstance(version, int) and version < SCHEMA_VERSION:
            warnings.warn(
                "this report has schema version 1: its ffn_fc1 was measured with the MLP activation (GELU) "
                "after the linear map, while the paper's ffn_fc1, and every newer report's, is the linear map "
                "alone; its ffn_fc1 numbers are not comparable (re-measure to compare or merge)",
                LegacyReportWarning,
                stacklevel=3,
            )
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
                tokens=_tokens_from_dict(d.get("tokens")),
                weight_bounds=_bounds_from_dict(d.get("bounds")),
                schema_version=version,
                coverage=d.get("coverage"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportFormatError(f"the report is incomplete or malformed ({type(exc).__name__}: {exc})") from exc
        shape = (report.num_layers, len(report.components))
        if any(a.shape != shape for a in (report.count, report.sum, report.sum_sq, report.excluded)):
            raise ReportFormatError(f"the report's statistics do not all have shape {shape}")
        wb = report.weight_bounds
        if wb is not None and (
            wb.layers.shape != (shape[0], len(wb.components)) or not set(report.components) <= set(wb.components)
        ):
            raise ReportFormatError(
                f"the report's bounds cover {wb.layers.shape} (layers, components) but its statistics {shape}; "
                "the report is incomplete or was edited: measure again"
            )
        return report

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (no bare NaN): undefined statistics are written as null."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON, atomically (an existing file is replaced only by a complete one)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlasticityReport:
        """Read a report written by :meth:`save`; a missing, corrupt or foreign file raises a clear error."""
        p = Path(path)
        if not p.is_file():
            raise MissingDataError(f"no report at {str(p)!r}; create one with `hf-plasticity measure ... --out`")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReportFormatError(f"{str(p)!r} is not valid JSON, so not an hf_plasticity report: {exc}") from exc
        return cls.from_dict(data)

    # ----------------------------------------------------------------- presentation
    def to_markdown(self, per_layer: bool = False) -> str:
        """A markdown table of component types by plasticity, with bounds (and, optionally, every layer)."""
        from .tables import report_markdown

        return report_markdown(self, per_layer=per_layer)

    def plot(self, path: str | os.PathLike[str] | None = None, title: str | None = None) -> Figure:
        """The paper's views: rates per component type, and plasticity against depth beside its bound."""
        from .plots import plot_report

        return plot_report(self, path, title)

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
        "model_id": getattr(config, "name_or_path", "") or "",
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


def _merge_tokens(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if not a or not b:
        return None
    out = {
        "images": a["images"] + b["images"],
        "radius_sum": a["radius_sum"] + b["radius_sum"],
        "spread_sum": a["spread_sum"] + b["spread_sum"],
        "seq_len": a["seq_len"],
    }
    if "rms_sum" in a and "rms_sum" in b:
        out["rms_sum"] = a["rms_sum"] + b["rms_sum"]
    return out


def _same_bounds(a: WeightBounds | None, b: WeightBounds | None) -> WeightBounds | None:
    """Shards of one model have the same weights, hence the same bounds; different ones are a mistake."""
    if a is None or b is None:
        return None
    if a.components != b.components or not (
        np.allclose(a.layers, b.layers, rtol=1e-6, equal_nan=True) and np.allclose(a.heads, b.heads, rtol=1e-6)
    ):
        raise IncompatibleReportsError(
            "cannot merge reports of models with different weights (their theoretical bounds differ): merge only "
            "shards measured on the same checkpoint"
        )
    return a


def _tokens_from_dict(d: Any) -> dict[str, Any] | None:
    if not d:
        return None
    out = {k: d[k] for k in ("images", "radius_sum", "spread_sum", "seq_len")}
    if "rms_sum" in d:  # reports before text models lack it
        out["rms_sum"] = d["rms_sum"]
    return out


def _bounds_from_dict(d: Any) -> WeightBounds | None:
    if not d:
        return None
    layers = np.array([[np.nan if v is None else v for v in row] for row in d["weights"]], dtype=np.float64)
    heads = np.asarray(d["attention_heads"], dtype=np.float64).reshape(layers.shape[0], -1, 2)
    return WeightBounds(tuple(d["components"]), layers, heads, dict(d.get("notes") or {}))


def _validate_report_dict(d: dict[str, Any]) -> None:
    """Reject a report dict whose parts disagree, so a bad file fails on load, not later in ranking() or plot()."""
    version = d.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ReportFormatError(
            f"the report's 'schema_version' field is missing or corrupt (got {version!r}); the file was not "
            "written by PlasticityReport.save() or was edited: measure again to get a valid report"
        )
    if version > SCHEMA_VERSION:
        return  # from_dict says to upgrade: a newer layout is not ours to judge
    fix = "the report is incomplete or was edited: measure again"
    components = d.get("components")
    if not isinstance(components, list) or not components or not all(isinstance(c, str) for c in components):
        raise ReportFormatError(f"the report's 'components' must be a non-empty list of names; {fix}")
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise ReportFormatError(
            f"the report names unknown component(s) {unknown}; known components are {list(COMPONENTS)}; {fix}"
        )
    if len(set(components)) != len(components):
        raise ReportFormatError(f"the report lists a component twice ({components}); {fix}")
    stats = d.get("stats")
    if not isinstance(stats, dict):
        raise ReportFormatError(f"the report has no 'stats' section; {fix}")
    arrays = {}
    for key in ("count", "sum", "sum_sq", "excluded"):
        try:
            arrays[key] = np.asarray(stats[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportFormatError(f"the report's stats.{key} is missing or not a numeric table; {fix}") from exc
    shape = arrays["count"].shape
    if len(shape) != 2 or shape[1] != len(components) or shape[0] < 1:
        raise ReportFormatError(
            f"the report's stats.count has shape {shape}; expected (layers, {len(components)}) for its "
            f"{len(components)} components; {fix}"
        )
    for key, a in arrays.items():
        if a.shape != shape:
            raise ReportFormatError(f"the report's stats.{key} has shape {a.shape}, stats.count {shape}; {fix}")
    for key in ("count", "excluded"):
        a = arrays[key]
        if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a != np.round(a)):
            raise ReportFormatError(f"the report's stats.{key} must hold counts (integers >= 0); {fix}")
    if np.any(arrays["sum_sq"] < 0):
        raise ReportFormatError(f"the report's stats.sum_sq holds negative sums of squares; {fix}")
    num_pairs = d.get("num_pairs")
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 0:
        raise ReportFormatError(f"the report's 'num_pairs' must be an integer >= 0; got {num_pairs!r}; {fix}")
    paths = d.get("module_paths")
    if not isinstance(paths, dict) or set(paths) != set(components):
        have = sorted(paths) if isinstance(paths, dict) else paths
        raise ReportFormatError(
            f"the report's 'module_paths' must give the modules of each component {components}; got {have!r}; {fix}"
        )
    for comp, modules in paths.items():
        if not isinstance(modules, list) or len(modules) != shape[0] or not all(isinstance(m, str) for m in modules):
            raise ReportFormatError(
                f"the report's module_paths[{comp!r}] must list one module name per layer ({shape[0]}); {fix}"
            )
    rates = d.get("rates")
    if rates:
        try:
            rshape = [int(n) for n in rates["shape"]]
            nbytes = len(base64.b64decode(rates["base64"], validate=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportFormatError(f"the report's 'rates' section is corrupt ({exc}); {fix}") from exc
        if len(rshape) != 3 or tuple(rshape[1:]) != shape or nbytes != 4 * math.prod(rshape):
            raise ReportFormatError(
                f"the report's rates have shape {rshape} ({nbytes} bytes); expected (pairs, {shape[0]}, "
                f"{shape[1]}) float32 values; {fix}"
            )
