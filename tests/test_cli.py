"""The ``hf-plasticity`` command end to end: local checkpoints, bundled data, the demo, and bad input."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import ViTImageProcessor

from hf_plasticity import COMPONENTS, PlasticityReport
from hf_plasticity.cli import _parser, main
from hf_plasticity.components import registered_maps
from tests.conftest import IMAGE_SIZE, TINY_MODELS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT saved like any Hub checkpoint: config, safetensors weights, image processor."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny-vit"
    TINY_MODELS["vit"]().save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return path


def test_measure_a_local_checkpoint(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, fig = tmp_path / "r" / "report.json", tmp_path / "fig.png"
    argv = ["measure", "--model", str(checkpoint), "--data", "digits", "--reference", "fashion-mnist-sample"]
    code = main([*argv, "--num-pairs", "40", "--batch-size", "16", "--out", str(out), "--plot", str(fig)])
    assert code == 0
    printed = capsys.readouterr().out
    report = PlasticityReport.load(out)
    assert report.num_pairs == 40 and report.data_name == "digits"
    assert report.reference_name == "fashion-mnist-sample"
    assert report.model["model_type"] == "vit" and report.model["model_id"] == str(checkpoint)
    assert f"| 1 | {report.ranking()[0]} |" in printed
    assert fig.read_bytes()[:4] == b"\x89PNG"


def test_measure_in_situ_subset_and_show(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.json"
    code = main(
        [
            *("measure", "--model", str(checkpoint), "--data", "digits", "--protocol", "in_situ"),
            *("--num-pairs", "20", "--components", "mha", "ffn_fc1", "--out", str(out), "--no-progress"),
        ]
    )
    assert code == 0
    assert PlasticityReport.load(out).components == ("mha", "ffn_fc1")
    capsys.readouterr()
    assert main(["show", str(out), "--per-layer"]) == 0
    shown = capsys.readouterr().out
    assert "in_situ" in shown and "| layer | mha | ffn_fc1 |" in shown
    assert "upper bound (max over layers)" in shown and "(≤ " in shown and "radius r = " in shown


def test_image_processor_option_for_a_checkpoint_without_one(checkpoint: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    TINY_MODELS["vit"]().save_pretrained(bare)  # no preprocessor_config.json: images cannot be decoded alone
    out = tmp_path / "report.json"
    argv = ["measure", "--model", str(bare), "--data", "digits", "--num-pairs", "8", "--out", str(out)]
    assert main([*argv, "--image-processor", str(checkpoint), "--no-progress"]) == 0
    assert PlasticityReport.load(out).num_pairs == 8


def test_list(capsys) -> None:
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for name in ("vit", "deit", "dinov2", *COMPONENTS, "digits", "fashion-mnist-sample"):
        assert name in printed
    lines = printed.splitlines()
    for cmap in registered_maps():  # every family, with its blocks and each component's module paths
        start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{cmap.family} ["))
        assert cmap.layers in lines[start]
        for offset, comp in enumerate(COMPONENTS, start=1):
            assert lines[start + offset].split()[0] == comp
            assert " + ".join(cmap.components[comp].paths) in lines[start + offset]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["measure", "--model", "./does-not-exist", "--data", "digits", "--out", "x.json"],
            "no model directory",
        ),
        (["measure", "--model", "{ckpt}", "--data", "./nope", "--out", "x.json"], "nope"),
        (
            ["measure", "--model", "{ckpt}", "--data", "digits", "--components", "mlp", "--out", "x.json"],
            "mlp",
        ),
        (
            ["measure", "--model", "{ckpt}", "--data", "digits", "--num-pairs", "5000", "--out", "x.json"],
            "pairs",
        ),
        (["show", "{corrupt}"], "not valid JSON"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, message, checkpoint: Path, tmp_path: Path, capsys) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{")
    argv = [a.format(ckpt=checkpoint, corrupt=corrupt) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "hf-plasticity: error:" in err and message in err
    assert not (tmp_path / "x.json").exists()


def test_demo_on_the_bundled_model(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--output-dir", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = PlasticityReport.load(tmp_path / "report.json")
    assert report.model["model_id"] == "hf-plasticity/vit-fashion-mnist"
    assert report.data_name == "digits" and "fashion-mnist" in report.reference_name
    assert report.num_pairs == 1797 and report.num_layers == 6
    assert (tmp_path / "plasticity.png").stat().st_size > 10_000
    assert "Theory (paper): mha > ffn_fc1 > ffn_fc2 > ffn_norm > attn_norm" in printed
    assert f"Measured:       {' > '.join(report.ranking())}" in printed


def test_module_entry_point_help() -> None:
    done = subprocess.run([sys.executable, "-m", "hf_plasticity", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("measure", "demo", "show", "list"):
        assert command in done.stdout


# ------------------------------------------------------------------------------- output folders
FOLDER_COMMANDS = {"demo": ["demo"], "reproduce": ["reproduce"], "card": ["card", "--report", "r.json"]}
SPELLINGS = ("--output-dir", "--out-dir", "--output_dir")


@pytest.mark.parametrize(
    ("command", "flag"),
    [(c, f) for c in FOLDER_COMMANDS for f in SPELLINGS],
    ids=[f"{c}{f}" for c in FOLDER_COMMANDS for f in SPELLINGS],
)
def test_every_folder_command_takes_output_dir(command: str, flag: str) -> None:
    """One flag for a folder on every command; the old spellings still work (hidden aliases)."""
    args = _parser().parse_args([*FOLDER_COMMANDS[command], flag, "somewhere"])
    assert args.output_dir == Path("somewhere")


@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS), ids=sorted(FOLDER_COMMANDS))
def test_help_shows_only_output_dir(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = capsys.readouterr().out
    assert "--output-dir" in shown and "--out-dir" not in shown and "--output_dir" not in shown


@pytest.mark.parametrize(
    ("command", "default"),
    [("demo", Path("plasticity-demo")), ("reproduce", Path("reproduce-output")), ("card", None)],
    ids=["demo", "reproduce", "card"],
)
def test_output_dir_defaults_are_relative_to_the_current_directory(command: str, default: Path | None) -> None:
    args = _parser().parse_args(FOLDER_COMMANDS[command])
    assert args.output_dir == default


# ------------------------------------------------------------------------------- flag spellings
REQUIRED = {
    "measure": ["--model", "m", "--data", "d", "--out", "r.json"],
    "show": ["r.json"],
    "select": ["--report", "r.json", "--output", "o.json"],
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name != "finetune"}  # finetune: its own parser, below


def _multi_word_flags() -> list[tuple[str, argparse.Action, str]]:
    found = []
    for name, command in _commands().items():
        for action in command._actions:
            if action.help == argparse.SUPPRESS:
                continue
            found += [(name, action, flag) for flag in action.option_strings if "-" in flag[2:]]
    return found


def _value(action: argparse.Action) -> list[str]:
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]
    return ["7"]


@pytest.mark.parametrize(("command", "action", "flag"), _multi_word_flags(), ids=lambda v: str(getattr(v, "dest", v)))
def test_every_multi_word_flag_takes_both_spellings(command: str, action: argparse.Action, flag: str) -> None:
    underscored = "--" + flag[2:].replace("-", "_")
    parsed = {}
    for spelling in (flag, underscored):
        args = _parser().parse_args([command, *REQUIRED.get(command, []), spelling, *_value(action)])
        parsed[spelling] = getattr(args, action.dest)
    default = getattr(_parser().parse_args([command, *REQUIRED.get(command, [])]), action.dest)
    assert parsed[flag] == parsed[underscored] != default


@pytest.mark.parametrize("command", ["measure", "demo", "show", "card", "reproduce", "finetune"])
def test_help_shows_one_spelling_per_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, *REQUIRED.get(command, []), "--help"])
    shown = capsys.readouterr().out
    assert not re.findall(r"--[a-z0-9]+_[a-z0-9_]+", shown)
    assert re.findall(r"--[a-z0-9]+-[a-z0-9-]+", shown)


def test_finetune_takes_both_spellings() -> None:
    from hf_plasticity.cli import finetune_parser

    hyphen = finetune_parser().parse_args_into_dataclasses(
        ["--num-pairs", "7", "--keep-original", "--per-device-train-batch-size", "3", "--output-dir", "o"]
    )
    underscore = finetune_parser().parse_args_into_dataclasses(
        ["--num_pairs", "7", "--keep_original", "--per_device_train_batch_size", "3", "--output_dir", "o"]
    )
    for ft, training in (hyphen, underscore):
        assert (ft.num_pairs, ft.keep_original, training.per_device_train_batch_size) == (7, True, 3)
        assert training.output_dir == "o"
