"""Every error the package raises on purpose is a ``PlasticityError`` (read from the source, raise by raise).

A ``raise`` names either a class (checked against :mod:`hf_plasticity.errors`), a package helper
that builds the error (checked through its return annotation), a bare re-raise, or one of the
cases in ``ALLOWED``, each with the reason it is not a ``PlasticityError``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hf_plasticity
from hf_plasticity import errors

PACKAGE = Path(__file__).resolve().parents[1] / "hf_plasticity"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _raised(node: ast.Raise) -> str:
    exc = node.exc
    assert exc is not None
    target = exc.func if isinstance(exc, ast.Call) else exc
    return ast.unparse(target)


def raise_sites() -> list[tuple[str, int, str, str | None]]:
    """(module, line, raised expression, return annotation of the package helper it calls, if any)."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in SOURCES}
    returns = {
        f.name: ast.unparse(f.returns)
        for tree in trees.values()
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.returns is not None
    }
    sites = []
    for path, tree in trees.items():
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = _raised(node)
                helper = raised.rpartition(".")[2] if isinstance(node.exc, ast.Call) else None
                sites.append((rel, node.lineno, raised, returns.get(helper) if helper else None))
    return sites


SITES = raise_sites()

_PEP_562 = (
    "a module __getattr__ (PEP 562) must raise AttributeError for unknown names: hasattr() and getattr() rely on it"
)
ALLOWED: dict[tuple[str, str], str] = {
    ("__init__.py", "AttributeError"): _PEP_562,
    ("data/__init__.py", "AttributeError"): _PEP_562,
    ("reproduce/__init__.py", "AttributeError"): _PEP_562,
    (
        "measure/estimator.py",
        "_Stop",
    ): "private control flow: ends a forward pass at block 0 and is caught right there",
}


def _error_class(name: str) -> type | None:
    return getattr(errors, name, None)


def test_the_walk_finds_the_raises() -> None:
    assert len(SITES) > 150  # the package raises typed errors in a couple of hundred places
    assert any(raised == "in_place_error" for _, _, raised, _ in SITES)  # helpers are followed


@pytest.mark.parametrize(("module", "line", "raised", "returns"), SITES, ids=[f"{m}:{n}" for m, n, _, _ in SITES])
def test_every_raise_is_a_plasticity_error(module: str, line: int, raised: str, returns: str | None) -> None:
    if (module, raised) in ALLOWED:
        return
    name = returns if returns is not None else raised
    cls = _error_class(name)
    assert cls is not None and issubclass(cls, errors.PlasticityError), (
        f"{module}:{line} raises {raised} ({name}), which is not a PlasticityError from hf_plasticity/errors.py"
    )


@pytest.mark.parametrize("site", sorted(ALLOWED), ids=[m for m, _ in sorted(ALLOWED)])
def test_every_allowed_exception_is_still_raised(site: tuple[str, str]) -> None:
    assert site in {(m, r) for m, _, r, _ in SITES}


@pytest.mark.parametrize(
    "name",
    ["ModelCardError", "ExportError", "HubPushError", "HubAuthError"],
)
def test_integration_errors_live_in_errors_module(name: str) -> None:
    cls = getattr(errors, name)
    assert cls.__module__ == "hf_plasticity.errors"
    assert getattr(hf_plasticity, name) is cls


@pytest.mark.parametrize(
    ("name", "compatible"),
    [
        ("ModelCardError", ValueError),
        ("ExportError", ValueError),
        ("HubPushError", RuntimeError),
        ("HubAuthError", PermissionError),
        ("IncompatibleReportsError", ValueError),
        ("ComponentMapError", ValueError),
        ("AdapterCombinationError", ValueError),
        ("MissingExtraError", ImportError),
    ],
)
def test_errors_keep_their_builtin_base(name: str, compatible: type) -> None:
    """Callers written against the old plain exceptions keep catching them."""
    assert issubclass(getattr(errors, name), compatible)
