"""The docs run: every ```python and ```bash (```sh, ```shell) block of README.md and docs/*.md is executed.

How the blocks run:

- A page's python blocks run in order in one namespace, as one session would (a later block uses the names an
  earlier one defined), each page in its own empty folder. All pages run in one fresh interpreter (imports are
  paid once), page after page, each with its own namespace and a timeout; a failing block fails its page's test
  with the traceback, named ``<page>:<line of the block>``.
- A page's shell blocks then run with bash (``set -euo pipefail``) in that same folder, so they may read what
  the page's python blocks wrote. ``hf-plasticity`` and ``python`` are this interpreter's (shims first on PATH);
  the rewrites in ``SHELL_REWRITES`` below apply first, each with its reason.
- Hub ids the snippets name are replaced by local models, as ``HUB_IDS`` states; pushes go to the loopback Hub
  stub (``tests/hub_stub.py``), which ``tests/conftest.py`` points ``HF_ENDPOINT`` at. Nothing leaves 127.0.0.1.

Blocks tagged ```console or ```text are output, or commands that cannot run offline in seconds: not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HUB

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
PYTHON, SHELL = {"python", "py"}, {"bash", "sh", "shell"}

# Hub id a snippet names -> (the local stand-in, why it is a faithful one)
HUB_IDS: dict[str, tuple[str, str]] = {
    "google/vit-base-patch16-224-in21k": (
        "bundled ViT",
        "hf_plasticity/assets/vit-fashion-mnist: a ViTForImageClassification with its image processor (6 layers, "
        "hidden 128, 28x28 px, 10 labels); the same classes and code paths as ViT-Base, offline and fast",
    ),
    "meta-llama/Llama-3.2-1B": (
        "tiny Llama",
        "tests/text_data.tiny_llama: a random 2-layer LlamaForCausalLM (grouped key/value heads, rotary) saved "
        "with the word-level tokenizer of tests/text_data.py, as a local folder",
    ),
}

# (pattern, replacement, reason), applied to shell blocks in order
SHELL_REWRITES: list[tuple[str, str, str]] = [
    (
        r"\bbash scripts/setup\.sh(?: \w+)?",
        "true",
        "CI (.ci/run) runs the setup itself, and these tests run inside the environment it made",
    ),
    (
        r"\.venv/bin/python -m pytest[^&|;\n]*",
        "true",
        "the test suite is what is running this test: running it from inside would recurse",
    ),
    (r"\.venv/bin/", "", "the entry points of the interpreter running the tests come first on PATH"),
]

PAGE_TIMEOUT_S = 300


def blocks(page: Path, languages: set[str]) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` for each fenced block of one of ``languages``."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1).lower() in languages:
            found.append((text.count("\n", 0, match.start(2)) + 1, match.group(2)))
    return found


def local_stand_ins(folder: Path) -> dict[str, str]:
    """Hub id -> the local folder the snippets load instead (see ``HUB_IDS``)."""
    from hf_plasticity.models import bundled_model_path

    from .text_data import save_with_tokenizer, tiny_llama

    llama = folder / "tiny-llama"
    if not llama.exists():
        save_with_tokenizer(tiny_llama(), llama)
    stand_ins = {"google/vit-base-patch16-224-in21k": str(bundled_model_path()), "meta-llama/Llama-3.2-1B": str(llama)}
    assert set(stand_ins) == set(HUB_IDS)
    return stand_ins


def substitute(code: str, stand_ins: dict[str, str]) -> str:
    for hub_id, local in stand_ins.items():
        code = code.replace(f'"{hub_id}"', repr(local)).replace(f"'{hub_id}'", repr(local))
    return code


RUNNER = r"""
import json, os, signal, sys, time, traceback

plan = json.load(open(sys.argv[1], encoding="utf-8"))
results = {}

def alarm(signum, frame):
    raise TimeoutError(f"the page ran past {plan['timeout']} s")

signal.signal(signal.SIGALRM, alarm)
for page in plan["pages"]:
    os.chdir(page["cwd"])
    namespace = {"__name__": "__main__"}
    signal.alarm(plan["timeout"])
    start = time.perf_counter()
    try:
        for line, code in page["blocks"]:
            exec(compile(code, f"{page['name']}:{line}", "exec"), namespace)
        results[page["name"]] = None
    except BaseException:
        results[page["name"]] = traceback.format_exc()
    finally:
        signal.alarm(0)
    outcome = "ok" if results[page["name"]] is None else "FAILED"
    print(f"{page['name']}: {outcome} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
json.dump(results, open(sys.argv[2], "w", encoding="utf-8"))
"""


def _env(bin_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MPLBACKEND": "Agg",
        "HF_TOKEN": "hf_test_token",  # the loopback Hub accepts it; no real token is read
        "TOKENIZERS_PARALLELISM": "false",
    }


def _shims(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, command in {"hf-plasticity": f"{sys.executable} -m hf_plasticity", "python": sys.executable}.items():
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n', encoding="utf-8")
        shim.chmod(0o755)


def page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str | None]]:
    """Run every page's blocks once: page -> {"python": traceback or None, "shell": output on failure or None}."""
    HUB.start().reset()
    work = tmp_path_factory.mktemp("docs")
    stand_ins = local_stand_ins(work)
    _shims(work / "bin")
    env = _env(work / "bin")
    plan = {"timeout": PAGE_TIMEOUT_S, "pages": []}
    for page in PAGES:
        cwd = work / page_name(page).replace("/", "_")
        cwd.mkdir()
        code = [(line, substitute(src, stand_ins)) for line, src in blocks(page, PYTHON)]
        plan["pages"].append({"name": page_name(page), "cwd": str(cwd), "blocks": code})
    (work / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(work / "plan.json"), str(work / "results.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=PAGE_TIMEOUT_S * len(PAGES),
    )
    assert done.returncode == 0, done.stderr[-5000:]
    python = json.loads((work / "results.json").read_text(encoding="utf-8"))
    results: dict[str, dict[str, str | None]] = {}
    for page in PAGES:
        name = page_name(page)
        cwd = work / name.replace("/", "_")
        shell_error = None
        for line, src in blocks(page, SHELL):
            script = src
            for pattern, replacement, _why in SHELL_REWRITES:
                script = re.sub(pattern, replacement, script)
            run = subprocess.run(
                ["bash", "-c", "set -euo pipefail\n" + script],
                capture_output=True,
                text=True,
                env=env,
                cwd=cwd,
                timeout=PAGE_TIMEOUT_S,
            )
            if run.returncode != 0:
                shell_error = (
                    f"{name}:{line} exited {run.returncode}\n{script}\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
                )
                break
        results[name] = {"python": python[name], "shell": shell_error}
    HUB.reset()
    return results


@pytest.mark.parametrize("page", [page_name(p) for p in PAGES])
def test_every_snippet_runs(page: str, ran: dict[str, dict[str, str | None]]) -> None:
    assert ran[page]["python"] is None, ran[page]["python"]
    assert ran[page]["shell"] is None, ran[page]["shell"]


def test_the_pages_have_snippets_to_run() -> None:
    """A page can't pass by hiding its code in untested blocks: the user-facing pages all run something."""
    for name in (
        "README.md",
        "docs/measuring.md",
        "docs/peft-method.md",
        "docs/plasticity-lora.md",
        "docs/cards-and-hub.md",
        "docs/training.md",
        "docs/architectures.md",
        "docs/errors.md",
    ):
        assert blocks(ROOT / name, PYTHON), name
    assert blocks(ROOT / "README.md", SHELL)


def test_a_snippet_that_drifts_from_the_api_fails(tmp_path: Path) -> None:
    """The runner reports a block that calls what the package does not have, naming the page and line."""
    plan = {
        "timeout": 60,
        "pages": [
            {
                "name": "drift.md",
                "cwd": str(tmp_path),
                "blocks": [
                    [3, "import hf_plasticity\n"],
                    [9, "hf_plasticity.measure_plasticity(None, mode='lora')\n"],
                ],
            }
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "plan.json"), str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    error = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["drift.md"]
    assert error is not None and 'File "drift.md:9"' in error and "TypeError" in error


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "bash scripts/setup.sh test && .venv/bin/python -m pytest -q"
    assert command in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/setup.sh test" in ci and ".venv/bin/python -m pytest -q" in ci


def test_readme_is_a_landing_page_that_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)[)#]", readme))
    assert linked == {page_name(p) for p in PAGES if p.parent.name == "docs"}
    first_80 = "\n".join(readme.splitlines()[:80])
    for heading in ("## Install", "## Measure", "## Finetune", "beat LoRA"):
        assert heading in first_80, heading


def test_supported_models_page_is_rendered_from_the_registry() -> None:
    from hf_plasticity.components import registered_model_types
    from hf_plasticity.components.listing import supported_models_markdown

    page = (ROOT / "docs" / "supported-models.md").read_text(encoding="utf-8")
    assert page == supported_models_markdown(), "run: python scripts/render_supported_models.py"
    assert all(f"`{t}`" in page for t in registered_model_types())


def test_every_error_and_warning_is_documented() -> None:
    from hf_plasticity import errors

    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    classes = [n for n, v in vars(errors).items() if isinstance(v, type) and v.__module__ == errors.__name__]
    assert len(classes) > 20
    missing = [n for n in classes if f"`{n}`" not in page]
    assert not missing, f"docs/errors.md does not describe {missing}"


def test_docs_links_point_at_files_that_exist() -> None:
    for page in [*PAGES, ROOT / "benchmarks" / "README.md", ROOT / "CHANGELOG.md"]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page_name(page)} links to missing {target}"


def test_substitution_table_is_stated_for_every_hub_id_the_snippets_name() -> None:
    """A snippet that names a Hub model id must have a local stand-in here (the tests never download)."""
    named = set()
    for page in PAGES:
        for _line, code in blocks(page, PYTHON):
            named |= set(re.findall(r"(?:from_pretrained\(\s*|\bname\s*=\s*)[\"']([\w.-]+/[\w.-]+)[\"']", code))
    assert named <= set(HUB_IDS), named - set(HUB_IDS)
    assert all(why for _, why in HUB_IDS.values())
