"""The package's import graph: no cycles, and every module imports only from its own layer or below.

Imports are read from the source (module level and inside functions alike, since a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_plasticity"

# Lowest first; a module may import from its own layer and the layers below it (see README, "Layout").
LAYERS: list[tuple[str, ...]] = [
    ("errors", "compat", "components", "stats", "io", "lookup", "version"),
    ("data", "models"),
    ("report",),
    ("measure",),
    ("tuner",),
    ("integrations",),
    ("reproduce", "cli", "__main__", ""),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The package module an import names (a ``from x import y`` may name submodule ``x.y``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(filter(None, (_resolve(a.name) for a in child.names)))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    hit = _resolve(f"{target}.{alias.name}") if f"{target}.{alias.name}" in MODULES else None
                    found.add(hit or _resolve(target) or "")
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard("")
    found.discard(module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES), ids=sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    upward = sorted(dep for dep in GRAPH[module] if layer_of(dep) > layer_of(module))
    assert not upward, f"{module} (layer {layer_of(module)}) imports from higher layers: {upward}"


def test_the_graph_sees_lazy_imports() -> None:
    """The walker must see an import inside a function (else a lazy import could hide a cycle)."""
    assert "hf_plasticity.measure.estimator" in GRAPH["hf_plasticity.integrations.callbacks"]
