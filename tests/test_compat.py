"""The compatibility module against the installed libraries, and what a missing name or a wrong PEFT does.

Every private name hf_plasticity uses is wrapped in :mod:`hf_plasticity.compat`; these tests check that each one
resolves on what is installed, that the PEFT range it checks is the one ``pyproject.toml`` pins, and that a
name PEFT dropped (simulated by removing it) or an out-of-range PEFT raises ``UnsupportedVersionError``
naming the supported range, not an ``AttributeError`` from inside PEFT.
"""

from __future__ import annotations

import ast
import sys
import warnings
from pathlib import Path

import peft
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from peft.tuners.tuners_utils import BaseTuner

from hf_plasticity import compat
from hf_plasticity.errors import PlasticityError, UnsupportedVersionError, UnsupportedVersionWarning
from hf_plasticity.tuner import PlasticityModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
RANGE = r"peft>=0\.21,<0\.22"


def test_pyproject_pins_the_range_compat_checks() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (peft_dep,) = [d for d in deps if d.startswith("peft")]
    assert SpecifierSet(peft_dep.removeprefix("peft")) == SpecifierSet(compat.PEFT_RANGE)
    spec = SpecifierSet(compat.PEFT_RANGE)
    assert Version(peft.__version__) in spec, "the installed peft is outside the range this release supports"
    assert any(s.operator == "<" for s in spec), "peft needs an upper bound"


@pytest.mark.parametrize("helper", sorted(compat.PRIVATE_NAMES))
def test_every_wrapped_private_name_resolves_on_the_installed_version(helper: str) -> None:
    assert compat.private(helper) is not None


def test_the_hooks_the_tuner_overrides_exist_and_are_overridden() -> None:
    compat.check_tuner_hooks(PlasticityModel)
    for name in compat.TUNER_HOOKS:
        assert hasattr(BaseTuner, name) and name in vars(PlasticityModel), name


def test_installed_peft_passes_the_version_check() -> None:
    compat.check_peft_version()


@pytest.mark.parametrize("version", ["0.20.0", "0.22.0", "1.0.0"])
def test_out_of_range_peft_raises_naming_the_range(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compat.ALLOW_ENV, raising=False)
    with pytest.raises(UnsupportedVersionError, match=RANGE) as caught:
        compat.check_peft_version(version)
    assert isinstance(caught.value, PlasticityError) and f"peft {version} is installed" in str(caught.value)


def test_out_of_range_peft_only_warns_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compat.ALLOW_ENV, "1")
    with pytest.warns(UnsupportedVersionWarning, match=RANGE):
        compat.check_peft_version("0.22.0")


@pytest.mark.parametrize("helper", [h for h, (lib, _, _) in compat.PRIVATE_NAMES.items() if lib == "peft"])
def test_a_peft_name_that_disappeared_raises_naming_the_range(helper: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    _, owner, name = compat.PRIVATE_NAMES[helper]
    monkeypatch.delattr(importlib.import_module(owner), name)
    with pytest.raises(UnsupportedVersionError, match=rf"lacks {owner}\.{name}.*{RANGE}"):
        compat.private(helper)


def test_a_missing_private_name_fails_in_the_feature_not_with_attribute_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading an adapter needs ``_get_tuner_state_dict_key_prefixes``: without it, the typed error, not PEFT's."""
    from peft.tuners import tuners_utils

    monkeypatch.delattr(tuners_utils, "_get_tuner_state_dict_key_prefixes")
    with pytest.raises(UnsupportedVersionError, match=RANGE):
        compat.tuner_state_dict_key_prefixes(object(), "default")


def test_a_dropped_tuner_hook_raises_naming_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(BaseTuner, "_cast_adapter_dtype")
    with pytest.raises(UnsupportedVersionError, match=rf"_cast_adapter_dtype.*{RANGE}"):
        compat.check_tuner_hooks(PlasticityModel)


def test_torch_registries_an_in_place_layer_shares_exist() -> None:
    from torch import nn

    module, view = nn.Linear(2, 2), nn.Module()
    compat.share_module_registries(view, module)
    assert dict(view.named_parameters()) == dict(module.named_parameters())


def test_patch_method_is_idempotent_and_keeps_the_docstring() -> None:
    class Target:
        def method(self) -> int:
            """Original."""
            return 1

    def make(original):  # type: ignore[no-untyped-def]
        return lambda self: original(self) + 1

    assert compat.patch_method(Target, "method", make) and not compat.patch_method(Target, "method", make)
    assert Target().method() == 2 and Target.method.__doc__ == "Original."


def test_no_private_peft_or_torch_name_is_used_outside_compat() -> None:
    """``from peft... import _x`` and ``<peft/torch object>._x`` appear in ``hf_plasticity/compat.py`` only."""
    offenders = []
    wrapped = {name for _, _, name in compat.PRIVATE_NAMES.values()} | set(compat.MODULE_REGISTRIES)
    wrapped |= {"_orig_mod", "_fingerprint", "_active_adapter", "_model_mapping"}
    for path in sorted((ROOT / "hf_plasticity").rglob("*.py")):
        if path.name == "compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in {"peft", "torch"}:
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr in wrapped:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.Constant) and node.value in wrapped:
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not offenders


def test_compat_imports_nothing_heavy_at_import() -> None:
    import subprocess

    code = "import sys, hf_plasticity.compat; print(sorted({'peft', 'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.check_peft_version()
