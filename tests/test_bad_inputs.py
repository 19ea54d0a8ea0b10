"""Every bad input a user can give, one row each: a typed error naming the fix, fast, and no file lost.

Add a row for every new bad input found; the list only grows. API rows assert the error class and that the
message names the fix; CLI rows also assert a non-zero exit, no traceback, and that every file under the
test folder is byte-for-byte what it was (nothing overwritten, half-written, deleted or left behind).
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from hf_plasticity import (
    HubUnreachableError,
    InvalidInputError,
    MissingDataError,
    NotEnoughPairsError,
    OutputPathError,
    PlasticityError,
    PlasticityReport,
    ReportFormatError,
    UnknownComponentError,
    measure_plasticity,
)
from hf_plasticity.cli import main
from hf_plasticity.data.loaders import load_named_dataset
from hf_plasticity.models import load_model
from tests.conftest import IMAGE_SIZE, TINY, TINY_MODELS, pixels

UNWRITABLE = "/sys/hf-plasticity-test/report.json"  # sysfs refuses new files, even to root
FAST_S = 10.0  # generous: a Hub failure must not sit in retries (they took ~30-100 s)


@pytest.fixture(autouse=True)
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the Hub at a closed loopback port: "offline" is simulated here, and nothing leaves 127.0.0.1."""
    from huggingface_hub import constants

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return endpoint


@pytest.fixture(scope="module")
def report_dict() -> dict[str, Any]:
    report = measure_plasticity(TINY_MODELS["vit"](), pixels(8), num_pairs=4, progress=False)
    return report.to_dict()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT checkpoint with its image processor, and the same without one."""
    root = tmp_path_factory.mktemp("ckpts")
    TINY_MODELS["vit"]().save_pretrained(root / "ckpt")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "ckpt")
    TINY_MODELS["vit"]().save_pretrained(root / "bare")
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    BertForSequenceClassification(bert).save_pretrained(root / "bert")
    return root


@dataclass
class Ctx:
    """What a row may use: a fresh folder, a report dict to corrupt, checkpoints inside the folder."""

    tmp: Path
    report_dict: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch

    def in_tmp(self, *folders: str) -> None:
        """Work from the test folder (relative paths are the point), with these sub-folders present."""
        self.monkeypatch.chdir(self.tmp)
        for folder in folders:
            Path(folder).mkdir(parents=True)

    def report(self) -> PlasticityReport:
        return PlasticityReport.from_dict(self.report_dict)

    def edited(self, **changes: Any) -> dict[str, Any]:
        d = {**self.report_dict, **changes}
        d["stats"] = {**self.report_dict["stats"], **changes.get("stats", {})}
        return d


def _image_folder(tmp: Path, corrupt: bool) -> Path:
    root = tmp / "images"
    for cls, shade in (("a", 20), ("b", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((IMAGE_SIZE, IMAGE_SIZE), shade + i, np.uint8)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-- cut off here")
    return root


def _measure(**kwargs: Any) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> Any:
        args = {"data": pixels(8), "num_pairs": 4, "progress": False, **kwargs}
        return measure_plasticity(TINY_MODELS["vit"](), **args)

    return run


def _measure_corrupt_folder(ctx: Ctx) -> Any:
    ds = load_named_dataset(str(_image_folder(ctx.tmp, corrupt=True)))
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return measure_plasticity(TINY_MODELS["vit"](), ds, image_processor=processor, progress=False)


def _measure_dataset_without_processor(ctx: Ctx) -> Any:
    ds = load_named_dataset(str(_image_folder(ctx.tmp, corrupt=False)))
    model = TINY_MODELS["vit"]()  # built from a config, so it names no checkpoint to take a processor from
    return measure_plasticity(model, ds, progress=False)


def _edited_report(**changes: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: PlasticityReport.from_dict(ctx.edited(**changes))


def _without(key: str) -> Callable[[Ctx], Any]:
    return lambda ctx: PlasticityReport.from_dict({k: v for k, v in ctx.report_dict.items() if k != key})


# (id, action, error class, regex the message must match: the problem and its fix)
def _loader(images: torch.Tensor) -> Any:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=4)


SIZES = r"reference images are 28x28 \(3 channels\) but the downstream images are 32x32 .*resize both to 32x32.*"
SIZES += r"image_processor=.*interpolate"


def _vit_32px() -> Any:
    return ViTForImageClassification(ViTConfig(**{**TINY, "image_size": 32})).eval()


def _vit32(ctx: Ctx) -> Any:
    return measure_plasticity(_vit_32px(), pixels(8, size=32), pixels(8, size=28), progress=False)


def _vit32_loaders(ctx: Ctx) -> Any:
    data, reference = _loader(pixels(8, size=32)), _loader(pixels(8, size=28))
    return measure_plasticity(_vit_32px(), data, reference, progress=False)


API_CASES: list[tuple[str, Callable[[Ctx], Any], type[Exception], str]] = [
    ("images-of-two-sizes", _vit32, InvalidInputError, SIZES),
    ("images-of-two-sizes-in-loaders", _vit32_loaders, InvalidInputError, SIZES),
    ("num_pairs-float", _measure(num_pairs=1e2), InvalidInputError, r"num_pairs must be an int.*num_pairs=100"),
    ("num_pairs-bool", _measure(num_pairs=True), InvalidInputError, r"num_pairs must be an int"),
    ("num_pairs-negative", _measure(num_pairs=-3), InvalidInputError, r"num_pairs must be a positive int"),
    ("batch_size-str", _measure(batch_size="8"), InvalidInputError, r"batch_size must be an int"),
    ("seed-none", _measure(seed=None), InvalidInputError, r"seed must be an int.*seed=0"),
    ("seed-float", _measure(seed=1.5), InvalidInputError, r"seed must be an int"),
    ("data-name-string", _measure(data="digits"), InvalidInputError, r"load_named_dataset\('digits'\)"),
    (
        "data-dict-of-tensors",
        _measure(data={"pixel_values": pixels(8)}),
        InvalidInputError,
        r"is a dict.*data\['pixel_values'\]",
    ),
    (
        "one-sample-no-reference",
        _measure(data=pixels(1), num_pairs=None),
        NotEnoughPairsError,
        r"need at least 2 examples.*reference",
    ),
    ("corrupt-image-in-folder", _measure_corrupt_folder, InvalidInputError, r"broken\.png.*delete or replace"),
    (
        "dataset-images-without-processor",
        _measure_dataset_without_processor,
        InvalidInputError,
        r"--image-processor NAME_OR_PATH.*image_processor=AutoImageProcessor",
    ),
    ("save-onto-a-folder", lambda ctx: ctx.report().save(ctx.tmp), OutputPathError, r"is a folder; pass a file path"),
    (
        "save-under-a-file",
        lambda ctx: (ctx.tmp / "f").write_text("keep") and ctx.report().save(ctx.tmp / "f" / "r.json"),
        OutputPathError,
        r"is a file, not a folder",
    ),
    (
        "save-unwritable",
        lambda ctx: ctx.report().save(UNWRITABLE),
        OutputPathError,
        r"hf-plasticity-test/report\.json.*choose a folder you can write to",
    ),
    (
        "plot-unsupported-suffix",
        lambda ctx: ctx.report().plot(ctx.tmp / "fig.xyz"),
        OutputPathError,
        r"cannot write 'xyz' figures; use one of .*\.png",
    ),
    (
        "report-unknown-component",
        _edited_report(components=["mha", "mlp"]),
        ReportFormatError,
        r"unknown component.*'mlp'.*measure again",
    ),
    ("report-empty-module-paths", _edited_report(module_paths={}), ReportFormatError, r"module_paths.*measure again"),
    (
        "report-short-module-paths",
        lambda ctx: PlasticityReport.from_dict(
            ctx.edited(module_paths={c: v[:1] for c, v in ctx.report_dict["module_paths"].items()})
        ),
        ReportFormatError,
        r"one module name per layer",
    ),
    (
        "report-wrong-shape",
        lambda ctx: PlasticityReport.from_dict(ctx.edited(stats={"sum": ctx.report_dict["stats"]["sum"][:1]})),
        ReportFormatError,
        r"stats\.sum has shape",
    ),
    (
        "report-negative-counts",
        lambda ctx: PlasticityReport.from_dict(
            ctx.edited(stats={"count": [[-1] * len(r) for r in ctx.report_dict["stats"]["count"]]})
        ),
        ReportFormatError,
        r"stats\.count must hold counts",
    ),
    (
        "report-rates-wrong-shape",
        lambda ctx: PlasticityReport.from_dict(ctx.edited(rates={**ctx.report_dict["rates"], "shape": [4, 9, 9]})),
        ReportFormatError,
        r"rates have shape",
    ),
    (
        "report-without-schema-version",
        _without("schema_version"),
        ReportFormatError,
        r"'schema_version' field is missing or corrupt.*measure again",
    ),
    (
        "stat-layer-out-of-range",
        lambda ctx: ctx.report().stat("mha", layer=99),
        InvalidInputError,
        r"layer must be an int in 0\.\.1",
    ),
    ("stat-unknown-component", lambda ctx: ctx.report().stat("mlp"), UnknownComponentError, r"'mlp'.*measured"),
    (
        "dataset-name-typo",
        lambda ctx: load_named_dataset("digit"),
        MissingDataError,
        r"did you mean 'digits'",
    ),
    (
        "dataset-local-folder-typo",
        lambda ctx: ctx.in_tmp("data/kittens") or load_named_dataset("data/kitens"),
        MissingDataError,
        r"did you mean the local path 'data/kittens'",
    ),
    (
        "dataset-hub-unreachable",
        lambda ctx: load_named_dataset("someone/some-images"),
        HubUnreachableError,
        r"cannot be reached.*HF_HUB_OFFLINE=1",
    ),
    ("model-name-typo", lambda ctx: load_model("bundle"), MissingDataError, r"did you mean 'bundled'"),
    (
        "model-hub-unreachable",
        lambda ctx: load_model("someone/some-vit"),
        HubUnreachableError,
        r"cannot be reached.*local folder.*HF_HUB_OFFLINE=1",
    ),
    (
        "model-relative-path-typo",
        lambda ctx: ctx.in_tmp("models/tiny-vit") or load_model("models/tiny-vti"),
        MissingDataError,
        r"did you mean the local path 'models/tiny-vit'",
    ),
    (
        "model-relative-path-missing",
        lambda ctx: ctx.in_tmp("models/tiny-vit") or load_model("models/empty"),
        MissingDataError,
        r"'models' exists here but holds no 'empty'.*pass an existing local path",
    ),
]


@pytest.mark.parametrize("action, error, match", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(
    action: Callable[[Ctx], Any],
    error: type[Exception],
    match: str,
    tmp_path: Path,
    report_dict: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = time.perf_counter()
    with pytest.raises(error, match=match) as caught:
        action(Ctx(tmp_path, report_dict, monkeypatch))
    assert isinstance(caught.value, PlasticityError)
    assert time.perf_counter() - start < FAST_S
    assert ".tmp" not in str(caught.value)  # the user's path is named, never a hidden temporary file
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


# (id, argv with {tmp} {ckpt} {bare} {bert} placeholders, files to create first, regex the error must match)
CLI_CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    (
        "out-and-plot-collide",
        ["measure", "--model", "{ckpt}", "--data", "digits", "--out", "{tmp}/r.png", "--plot", "{tmp}/r.png"],
        {"r.png": "an older figure"},
        r"--out and --plot both name .*r\.png",
    ),
    (
        "out-is-an-input-file",
        ["measure", "--model", "{ckpt}", "--data", "digits", "--out", "{ckpt}/config.json"],
        {},
        r"would overwrite the input",
    ),
    (
        "show-plot-onto-its-report",
        ["show", "{tmp}/report.json", "--plot", "{tmp}/report.json"],
        {"report.json": "{}"},
        r"would overwrite the input",
    ),
    (
        "out-under-a-file",
        ["measure", "--model", "{ckpt}", "--data", "digits", "--out", "{tmp}/notes.txt/r.json"],
        {"notes.txt": "my notes"},
        r"is a file, not a folder",
    ),
    (
        "out-unwritable",
        ["measure", "--model", "{ckpt}", "--data", "digits", "--out", UNWRITABLE],
        {},
        r"choose a folder you can write to",
    ),
    (
        "out-is-a-folder",
        ["measure", "--model", "{ckpt}", "--data", "digits", "--out", "{tmp}"],
        {},
        r"is a folder; pass a file path",
    ),
    (
        "plot-unsupported-suffix",
        ["measure", "--model", "{ckpt}", "--data", "digits", "--out", "{tmp}/r.json", "--plot", "{tmp}/r.docx"],
        {},
        r"--plot .*cannot write 'docx' figures; use one of",
    ),
    (
        "checkpoint-without-processor",
        ["measure", "--model", "{bare}", "--data", "digits", "--num-pairs", "4", "--out", "{tmp}/r.json"],
        {},
        r"on the command line pass --image-processor NAME_OR_PATH",
    ),
    (
        "text-model-on-image-data",
        ["measure", "--model", "{bert}", "--data", "digits", "--num-pairs", "4", "--out", "{tmp}/r.json"],
        {},
        r"holds images .*BertForSequenceClassification takes token ids \(its main_input_name is 'input_ids'\).*"
        r"measure it on text.*or measure an image model",
    ),
    (
        "image-processor-missing",
        ["measure", "--model", "{bare}", "--data", "digits", "--image-processor", "./nope", "--out", "{tmp}/r.json"],
        {},
        r"no image processor at './nope'.*pass an existing local path",
    ),
    (
        "data-name-typo",
        ["measure", "--model", "{ckpt}", "--data", "digit", "--out", "{tmp}/r.json"],
        {},
        r"did you mean 'digits'",
    ),
    (
        "model-hub-unreachable",
        ["measure", "--model", "someone/some-vit", "--data", "digits", "--out", "{tmp}/r.json"],
        {},
        r"cannot be reached.*HF_HUB_OFFLINE=1",
    ),
    (
        "report-without-schema-version",
        ["show", "{tmp}/old.json"],
        {"old.json": '{"schema": "hf_plasticity.report", "components": ["mha"]}'},
        r"'schema_version' field is missing or corrupt",
    ),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, files, match", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(
    argv: list[str],
    files: dict[str, str],
    match: str,
    checkpoints: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(checkpoints, tmp_path, dirs_exist_ok=True)  # inside tmp_path, so the snapshot covers them
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    before = _snapshot(tmp_path)
    folders = {name: tmp_path / name for name in ("ckpt", "bare", "bert")}
    argv = [a.format(tmp=tmp_path, **folders) for a in argv]
    start = time.perf_counter()
    code = main([*argv, "--no-progress"] if argv[0] == "measure" else argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    assert "hf-plasticity: error: " in err
    assert re.search(match, err, flags=re.S), err
    assert ".tmp" not in err
    assert _snapshot(tmp_path) == before, "a user file was changed, removed or left behind"
    assert elapsed < FAST_S
