"""PlasticityReport: statistics, rankings, JSON round trip, merging, markdown and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hf_plasticity import (
    IncompatibleReportsError,
    LegacyReportWarning,
    MissingDataError,
    PlasticityReport,
    ReportFormatError,
    UnknownComponentError,
    measure_plasticity,
)
from tests.conftest import pixels


@pytest.fixture(scope="module")
def report() -> PlasticityReport:
    from tests.conftest import TINY_MODELS

    return measure_plasticity(TINY_MODELS["vit"](), pixels(40, seed=11), progress=False, data_name="noise")


def test_json_round_trip(report: PlasticityReport, tmp_path: Path) -> None:
    path = report.save(tmp_path / "sub" / "report.json")
    back = PlasticityReport.load(path)
    np.testing.assert_array_equal(back.count, report.count)
    np.testing.assert_array_equal(back.sum, report.sum)
    np.testing.assert_array_equal(back.rates, report.rates)
    np.testing.assert_allclose(back.ci95, report.ci95)
    assert back.ranking() == report.ranking()
    assert back.ranked_modules() == report.ranked_modules()
    assert back.model == report.model and back.model["config_hash"]
    assert (back.protocol, back.num_pairs, back.data_name, back.seed) == ("shared", 20, "noise", 0)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "hf_plasticity.report" and doc["ranking"] == report.ranking()
    assert set(doc["summary"]) == set(report.components)


def test_statistics_and_ranking_agree_with_the_rates(report: PlasticityReport) -> None:
    rates = report.rates.astype(np.float64)
    np.testing.assert_allclose(report.mean, rates.mean(0), rtol=1e-6)
    np.testing.assert_allclose(report.ci95, 1.96 * rates.std(0, ddof=1) / np.sqrt(20), rtol=1e-4)
    pooled = {c: rates[:, :, i].mean() for i, c in enumerate(report.components)}
    assert report.ranking() == sorted(pooled, key=lambda c: -pooled[c])
    assert report.stat("mha").n == 40 and report.stat("mha", layer=1).n == 20
    modules = report.ranked_modules()
    scores = report.module_means()
    assert len(modules) == 10 and [scores[m] for m in modules] == sorted(scores.values(), reverse=True)
    assert report.ranked_modules(["mha"]) == sorted(report.module_paths["mha"], key=lambda p: -scores[p])
    with pytest.raises(UnknownComponentError):
        report.ranked_modules(["attention"])


def test_merging_shards_equals_measuring_once(tiny_vit: nn.Module) -> None:
    x, y = pixels(12, seed=12), pixels(12, seed=13)
    dl = lambda t: torch.utils.data.DataLoader(t, batch_size=4)  # noqa: E731
    whole = measure_plasticity(tiny_vit, dl(y), reference=dl(x), progress=False)
    a = measure_plasticity(tiny_vit, dl(y[:5]), reference=dl(x[:5]), progress=False)
    b = measure_plasticity(tiny_vit, dl(y[5:]), reference=dl(x[5:]), progress=False)
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.count, whole.count)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-6)
    np.testing.assert_allclose(merged.std, whole.std, rtol=1e-5)
    np.testing.assert_allclose(merged.rates, whole.rates, rtol=1e-6)
    assert merged.num_pairs == 12
    other = measure_plasticity(tiny_vit, dl(y), reference=dl(x), protocol="in_situ", progress=False)
    with pytest.raises(IncompatibleReportsError, match="cannot merge"):
        whole.merge(other)


def test_markdown_table(report: PlasticityReport) -> None:
    md = report.to_markdown(per_layer=True)
    lines = md.splitlines()
    assert lines[0].startswith("| rank | component | plasticity")
    assert lines[2].startswith(f"| 1 | {report.ranking()[0]} |")
    header = next(i for i, line in enumerate(lines) if line.startswith("| layer |"))
    layer_rows = lines[header + 2 :]
    assert [row.split(" | ")[0] for row in layer_rows] == ["| 0", "| 1"]
    assert all(row.count("±") == len(report.components) for row in layer_rows)
    assert all(row.count("(≤ ") == len(report.components) for row in layer_rows)  # each cell beside its bound
    assert f"radius r = {report.radius:.4g}" in md and f"token spread = {report.token_spread:.4g}" in md


def test_plot_writes_every_view(report: PlasticityReport, tmp_path: Path) -> None:
    fig = report.plot(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dist, depth, fraction = fig.axes[:3]
    assert [t.get_text() for t in dist.get_xticklabels()] == report.ranking()
    assert [line.get_label() for line in depth.get_lines()] == report.ranking()  # rates alone: bounds elsewhere
    assert [line.get_label() for line in fraction.get_lines()] == [*report.ranking(), "bound"]
    assert fraction.get_yscale() == "log"
    for line in fraction.get_lines()[:-1]:  # each rate as a fraction of its own bound, layer by layer
        c = report.components.index(line.get_label())
        np.testing.assert_allclose(line.get_ydata(), report.mean[:, c] / report.bounds[:, c], rtol=1e-6)
    assert list(fraction.get_lines()[-1].get_ydata()) == [1.0, 1.0]  # the bound itself
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_plot_depth_axis_fits_the_rates_not_the_bounds(report: PlasticityReport) -> None:
    """Attention's bound sits decades above the rates; the depth panel's range is the rates' own."""
    depth = report.plot().axes[1]
    low, high = depth.get_ylim()
    finite = report.mean[np.isfinite(report.mean)]
    assert high < 2 * finite.max() + np.nanmax(report.ci95) and low <= finite.min()


def test_plot_without_bounds_has_two_views(report: PlasticityReport) -> None:
    no_bounds = PlasticityReport.from_dict({k: v for k, v in report.to_dict().items() if k != "bounds"})
    assert len(no_bounds.plot().axes) == 2


def test_ranking_table_marks_trained_components(report: PlasticityReport) -> None:
    from hf_plasticity.report.tables import ranking_rows, ranking_table

    lines = ranking_table(ranking_rows(report), trained={report.ranking()[-1]}).splitlines()
    assert lines[0].endswith("| trained |")
    ticked = [line.split(" | ")[1] for line in lines[2:] if line.endswith("| ✓ |")]
    assert ticked == [report.ranking()[-1]]
    own = report.to_markdown().splitlines()[2 : 2 + len(report.components)]
    assert own == [line.rsplit(" |", 2)[0] + " |" for line in lines[2:]]  # the report's own rows, plus the mark


def test_plot_without_rates_shows_means(report: PlasticityReport, tmp_path: Path) -> None:
    no_rates = PlasticityReport.from_dict({**report.to_dict(), "rates": None})
    fig = no_rates.plot(tmp_path / "fig.svg")
    assert (tmp_path / "fig.svg").read_text().lstrip().startswith("<?xml")
    assert len(fig.axes[0].patches) == len(report.components)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"hello": 1}', "schema"),
        ('{"schema": "hf_plasticity.report", "schema_version": 99}', "newer"),
        ('{"schema": "hf_plasticity.report", "schema_version": 1, "components": []}', "incomplete"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
    ],
)
def test_corrupt_or_foreign_report_files(tmp_path: Path, content: str | bytes, match: str) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ReportFormatError, match=match):
        PlasticityReport.load(path)


def test_missing_report_file(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="hf-plasticity measure"):
        PlasticityReport.load(tmp_path / "nope.json")


def test_failed_save_keeps_the_old_file(report: PlasticityReport, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "report.json"
    path.write_text("precious")

    def boom(self: PlasticityReport, indent: int | None = 2) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(PlasticityReport, "to_json", boom)
    with pytest.raises(RuntimeError):
        report.save(path)
    assert path.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def schema_1(report: PlasticityReport) -> dict:
    """What version 1 wrote: no bounds, no embedding statistics, ffn_fc1 measured through the GELU."""
    d = report.to_dict()
    d["schema_version"] = 1
    d.pop("bounds"), d.pop("tokens")
    return d


def test_schema_1_report_loads_with_a_warning_naming_ffn_fc1(report: PlasticityReport, tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(schema_1(report)))
    with pytest.warns(LegacyReportWarning, match=r"schema version 1: its ffn_fc1 was measured with the MLP"):
        old = PlasticityReport.load(path)
    assert old.schema_version == 1 and old.bounds is None and old.ranking() == report.ranking()


def test_schema_1_and_2_reports_never_merge(report: PlasticityReport) -> None:
    with pytest.warns(LegacyReportWarning):
        old = PlasticityReport.from_dict(schema_1(report))
    with pytest.raises(ReportFormatError, match="schema 1 measured ffn_fc1 with the MLP activation"):
        report.merge(old)


def test_one_ranking_rule_ties_in_canonical_order_and_undefined_last() -> None:
    from hf_plasticity import rank_components

    scores = {"ffn_fc2": 0.5, "mha": 0.5, "attn_norm": float("nan"), "ffn_norm": None, "ffn_fc1": 0.9}
    assert rank_components(scores) == ["ffn_fc1", "mha", "ffn_fc2", "attn_norm", "ffn_norm"]
