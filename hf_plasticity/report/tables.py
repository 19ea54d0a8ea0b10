"""Markdown tables of plasticity, for terminals, READMEs and model cards: one renderer for all of them.

``report.to_markdown()`` and the model card render the same rows through :func:`ranking_table` and
:func:`layer_table`; a card adds what only it knows (which components were trained, the most plastic
module of each layer) as marks and extra columns, never through a table of its own.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import PlasticityReport

Cell = tuple[Any, Any, Any]
"""One (layer, component) cell: (mean, 95% CI half-width, theoretical bound); None or NaN when unknown."""


def report_markdown(report: PlasticityReport, per_layer: bool = False) -> str:
    """Component types by plasticity beside their theoretical bounds; optionally every layer."""
    lines = [ranking_table(ranking_rows(report))]
    if report.tokens:
        lines += [
            "",
            f"Embedding outputs: radius r = {report.radius:.4g}, token spread = {report.token_spread:.4g}, "
            f"{report.seq_len} tokens. A LayerNorm's rate scales like gain / spread; its max-gain bound assumes "
            "a spread of at least 1.",
        ]
    if per_layer:
        lines += ["", layer_table(report.components, layer_cells(report))]
    return "\n".join(lines)


def ranking_rows(report: PlasticityReport) -> list[dict[str, Any]]:
    """The report's component types, most plastic first, as the plain rows :func:`ranking_table` takes."""
    rows = []
    for comp, s in report.summary().items():
        row: dict[str, Any] = {"component": comp, "score": s.mean, "ci95": s.ci95, "n": s.n}
        if report.bounds is not None:
            row["bound"] = s.bound
        rows.append(row)
    return rows


def layer_cells(report: PlasticityReport, components: Sequence[str] | None = None) -> list[list[Cell]]:
    """Per layer, one (mean, CI, bound) cell per component, in the order of ``components``."""
    order = list(components or report.components)
    idx = [report.components.index(c) for c in order]
    mean, ci, bounds = report.mean, report.ci95, report.bounds
    return [
        [(mean[layer, c], ci[layer, c], None if bounds is None else bounds[layer, c]) for c in idx]
        for layer in range(report.num_layers)
    ]


def ranking_table(rows: Sequence[Mapping[str, Any]], trained: Collection[str] | None = None) -> str:
    """Rank, component, plasticity, and whichever of 95% CI, n, bound and trained the rows know.

    ``rows`` are most plastic first, each with ``component`` and ``score`` and optionally ``ci95``, ``n``
    and ``bound`` (the largest theoretical upper bound over layers). With ``trained``, a column marks the
    component types that were trained, so a reader sees at once whether the selection followed this ranking.
    """
    has_ci = any("ci95" in r for r in rows)
    has_n = any(r.get("n") is not None for r in rows)
    has_bound = any(_finite(r.get("bound")) for r in rows)
    head, rule = ["rank", "component", "plasticity"], ["---:", "---", "---:"]
    for show, name in ((has_ci, "95% CI"), (has_n, "n"), (has_bound, "upper bound (max over layers)")):
        if show:
            head.append(name)
            rule.append("---:")
    if trained is not None:
        head.append("trained")
        rule.append(":---:")
    lines = [_row(head), _row(rule)]
    for rank, r in enumerate(rows, start=1):
        cells = [str(rank), str(r["component"]), _num(r.get("score"))]
        if has_ci:
            cells.append(_pm(r.get("ci95")))
        if has_n:
            cells.append("n/a" if r.get("n") is None else str(r["n"]))
        if has_bound:
            cells.append(_num(r.get("bound")))
        if trained is not None:
            cells.append("✓" if r["component"] in trained else "")
        lines.append(_row(cells))
    return "\n".join(lines)


def layer_table(
    components: Sequence[str], cells: Sequence[Sequence[Cell]], extra: Mapping[str, Sequence[str]] | None = None
) -> str:
    """One row per layer: each component's mean ± CI (≤ bound), then the ``extra`` columns (name → per-layer text)."""
    extra = dict(extra or {})
    has_ci = any(cell[1] is not None for row in cells for cell in row)
    lines = [_row(["layer", *components, *extra]), _row(["---:"] + ["---:"] * len(components) + ["---"] * len(extra))]
    for layer, row in enumerate(cells):
        texts = []
        for mean, ci, bound in row:
            text = _num(mean)
            if has_ci:
                text += f" {_pm(ci)}"
            if bound is not None:
                text += f" (≤ {_num(bound)})"
            texts.append(text)
        texts += [values[layer] for values in extra.values()]
        lines.append(_row([str(layer), *texts]))
    return "\n".join(lines)


def pairs_sentence(
    num_pairs: int | None, downstream: str | None, reference: str | None, protocol: str | None = None
) -> str:
    """Where a measurement's pairs came from, in words: reference vs downstream data, or within one data set.

    The two disagree in general (a pretraining-like reference measures how far the downstream data moves
    the model from what it was trained on), so every summary and card says which one it was.
    """
    what = f"{num_pairs} pairs of images" if num_pairs else "pairs of images"
    if reference:
        what += f", x from the reference data, {reference}, and y from the downstream data, {downstream or 'unnamed'}"
    elif downstream:
        what += f" drawn within one data set, {downstream} (no reference data)"
    if protocol:
        what += f", {protocol} protocol"
    return what


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _finite(v: Any) -> bool:
    if v is None or isinstance(v, bool | str):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _pm(ci: Any) -> str:
    return "± n/a" if not _finite(ci) else f"± {ci:.4g}"


def _num(v: Any) -> str:
    return "n/a" if not _finite(v) else f"{v:.4g}"
