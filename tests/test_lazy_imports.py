"""A fast command line and a cheap ``import hf_plasticity``, without losing the PEFT registration and card hooks.

Each case runs in a fresh interpreter (the test process has long imported torch) and reads ``sys.modules``
after the command, so a heavy import anywhere on the path fails the case, whoever makes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "hf_plasticity.reproduce.runner", "hf_plasticity.reproduce.methods")

RUN_CLI = """
import json, sys
from hf_plasticity.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
print(json.dumps({"status": status, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def _python(code: str, *argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


CLI_CASES = {
    "help": (["--help"], 0),
    "no-command": ([], 2),
    "list": (["list"], 0),
    "usage-error": (["measure", "--no-such-flag"], 2),
    "unknown-command": (["measur"], 2),
    "finetune-without-output-dir": (["finetune", "--model", "bundled"], 2),
    **{f"{c}-help": ([c, "--help"], 0) for c in ("measure", "demo", "show", "card", "list", "reproduce")},
}


@pytest.mark.parametrize("case", sorted(CLI_CASES), ids=sorted(CLI_CASES))
def test_cli_answers_without_heavy_imports(case: str) -> None:
    argv, status = CLI_CASES[case]
    done = _python(RUN_CLI, *argv)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": status, "loaded": []}, done.stderr


def test_list_still_names_everything() -> None:
    done = _python("from hf_plasticity.cli import main\nmain(['list'])")
    assert "model types: beit, bert, clip" in done.stdout and "qwen3" in done.stdout
    assert "bundled data sets:" in done.stdout and "digits" in done.stdout


def test_import_hf_plasticity_is_cheap() -> None:
    done = _python("import sys, hf_plasticity\nprint([m for m in HEAVY if m in sys.modules])")
    assert done.stdout.strip() == "[]", done.stderr


def test_every_public_name_resolves() -> None:
    code = (
        "import hf_plasticity\n"
        "missing = [n for n in hf_plasticity.__all__ if getattr(hf_plasticity, n, None) is None]\n"
        "print(missing, sorted(set(hf_plasticity.__all__) - set(dir(hf_plasticity))))\n"
    )
    done = _python(code)
    assert done.stdout.strip() == "[] []", done.stderr


def test_unknown_attribute_is_an_attribute_error() -> None:
    import hf_plasticity

    with pytest.raises(AttributeError, match="no_such_name"):
        hf_plasticity.no_such_name  # noqa: B018


SAVE_AND_READ_CARD = """
import sys
{imports}
from peft import get_peft_model
from tests.conftest import TINY_MODELS
get_peft_model(TINY_MODELS["vit"](), PlasticityConfig(components=["mha"])).save_pretrained(sys.argv[1])
print(open(sys.argv[1] + "/README.md").read())
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import hf_plasticity\nfrom hf_plasticity import PlasticityConfig",
        "from hf_plasticity.tuner import PlasticityConfig",
        "import peft\nfrom hf_plasticity import PlasticityConfig",
    ],
    ids=["package-then-name", "tuner-directly", "peft-first"],
)
def test_save_pretrained_writes_our_card(imports: str, tmp_path: Path) -> None:
    done = _python(SAVE_AND_READ_CARD.format(imports=imports), str(tmp_path / "adapter"))
    assert done.returncode == 0, done.stderr
    assert "<!-- hf_plasticity:begin" in done.stdout and "plasticity:" in done.stdout


def test_peft_loads_the_method_after_a_bare_package_import(tmp_path: Path) -> None:
    """``import hf_plasticity`` imports no PEFT, yet PEFT knows ``PLASTICITY`` the moment it is imported."""
    save = (
        "import sys\nfrom peft import get_peft_model\nfrom hf_plasticity import PlasticityConfig\n"
        "from tests.conftest import TINY_MODELS\n"
        "get_peft_model(TINY_MODELS['vit'](), PlasticityConfig()).save_pretrained(sys.argv[1])\n"
    )
    assert _python(save, str(tmp_path)).returncode == 0
    load = (
        "import sys, hf_plasticity\nassert 'peft' not in sys.modules\n"
        "from peft import PeftConfig\nprint(PeftConfig.from_pretrained(sys.argv[1]).peft_type.value)\n"
    )
    done = _python(load, str(tmp_path))
    assert done.stdout.strip() == "PLASTICITY", done.stderr


def test_public_names_are_what_users_import() -> None:
    """``__all__`` holds the names the docs import; errors live in ``hf_plasticity.errors`` and still resolve here."""
    import hf_plasticity
    from hf_plasticity import errors
    from hf_plasticity.integrations.callbacks import PlasticityCallback
    from hf_plasticity.integrations.training import finetune
    from hf_plasticity.tuner import allocate_ranks

    assert hf_plasticity.PlasticityCallback is PlasticityCallback
    assert hf_plasticity.finetune is finetune
    assert hf_plasticity.allocate_ranks is allocate_ranks
    classes = [
        n
        for n in dir(errors)
        if isinstance(getattr(errors, n), type) and getattr(errors, n).__module__ == errors.__name__
    ]
    assert len(classes) > 20
    assert set(hf_plasticity.__all__) & set(classes) == {"PlasticityError", "PlasticityWarning"}
    assert all(getattr(hf_plasticity, n) is getattr(errors, n) for n in classes)  # old imports keep working
    assert len(hf_plasticity.__all__) <= 30
