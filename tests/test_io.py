"""Safe output files: atomic writes that never leave half a file, and paths checked before any work."""

from __future__ import annotations

import argparse
import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_plasticity.errors import OutputPathError
from hf_plasticity.io import (
    add_output_dir_argument,
    atomic_write,
    atomic_write_text,
    check_output_path,
    check_output_paths,
    figure_format,
    jsonable,
)


def test_atomic_write_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("precious")

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda root: root, "is a folder"),
        (lambda root: (root / "file.txt").write_text("x") and root / "file.txt" / "out.json", "is a file"),
    ],
    ids=["folder", "under-a-file"],
)
def test_check_output_path_rejects(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(OutputPathError, match=match):
        check_output_path(make(tmp_path))


def test_two_outputs_may_not_name_one_file(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="--out and --plot both name"):
        check_output_paths({"--out": tmp_path / "x", "--plot": tmp_path / "x"})


def test_an_output_may_not_overwrite_an_input(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    with pytest.raises(OutputPathError, match="would overwrite the input"):
        check_output_paths({"--out": checkpoint / "config.json"}, inputs=[checkpoint])


@pytest.mark.parametrize(
    ("name", "fmt"), [("f.png", "png"), ("f.SVG", "svg"), ("f", "png")], ids=["png", "svg", "none"]
)
def test_figure_format(name: str, fmt: str) -> None:
    assert figure_format(name) == fmt


def test_figure_format_rejects_unknown_suffix() -> None:
    with pytest.raises(OutputPathError, match="cannot write 'docx' figures"):
        figure_format("f.docx", "--plot")


@pytest.mark.parametrize("flag", ["--output-dir", "--out-dir", "--output_dir"])
def test_output_dir_argument_spellings(flag: str) -> None:
    parser = argparse.ArgumentParser()
    add_output_dir_argument(parser, Path("default"), "results")
    assert parser.parse_args([flag, "x"]).output_dir == Path("x")
    assert parser.parse_args([]).output_dir == Path("default")


Point = namedtuple("Point", "x y")
JSONABLE_CASES = {
    "numpy-array": (np.array([[1.0, np.nan], [np.inf, 2.5]]), [[1.0, None], [None, 2.5]]),
    "numpy-scalars": ({"n": np.int64(3), "x": np.float32(0.5), "ok": np.bool_(True)}, {"n": 3, "x": 0.5, "ok": True}),
    "tensor": (torch.tensor([1.5, float("-inf")]), [1.5, None]),
    "tuple-and-set": ((1, {2}), [1, [2]]),
    "named-tuple": (Point(1, 2.0), {"x": 1, "y": 2.0}),
    "keys-to-str": ({1: "a"}, {"1": "a"}),
    "other-to-str": (Path("x/y"), "x/y"),
}


@pytest.mark.parametrize("case", sorted(JSONABLE_CASES), ids=sorted(JSONABLE_CASES))
def test_jsonable(case: str) -> None:
    value, expected = JSONABLE_CASES[case]
    out = jsonable(value)
    assert out == expected
    json.dumps(out, allow_nan=False)  # strict JSON


def test_jsonable_rounds_floats_to_significant_digits() -> None:
    assert jsonable({"a": [1.23456789, 123456.789]}, digits=6) == {"a": [1.23457, 123457.0]}
