"""The shape of the code, by test: the core knows no deployable, and no module imports
itself back through others.

``driftloop/`` is the shared package; ``pipelines``, ``components``, ``serving``,
``monitoring`` and ``replay`` adapt it to KFP, KServe, cron and replays. Only the command
line (``driftloop/cli.py``), which dispatches to every deployable, may name them. Imports
inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("driftloop", "pipelines", "components", "serving", "monitoring", "replay")
DEPLOYABLES = frozenset(PACKAGES) - {"driftloop"}
ENTRY_POINT = "driftloop.cli"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, name: str) -> set[str]:
    """Every project module ``path`` imports, anywhere in the file."""
    return imported(path.read_text(), name, path.name == "__init__.py")


def imported(source: str, name: str, is_package: bool = False) -> set[str]:
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in out if m in known and m != name}


def test_the_core_imports_no_deployable():
    found = []
    for name, path in modules().items():
        if name.split(".")[0] != "driftloop" or name == ENTRY_POINT:
            continue
        for dep in sorted(imports(path, name)):
            if dep.split(".")[0] in DEPLOYABLES:
                found.append(f"{path.relative_to(ROOT)} imports {dep}")
    assert found == [], "the core must not import deployables:\n" + "\n".join(found)


def test_there_are_no_import_cycles():
    graph = {name: imports(path, name) for name, path in modules().items()}
    # A package's __init__ is not a dependency of its own modules' imports of it.
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import serving.model\n", {"serving.model"}),
        ("def f():\n    from monitoring import backends\n", {"monitoring", "monitoring.backends"}),
        ("from . import store\n", {"driftloop.store"}),
    ],
)
def test_the_import_reader_sees_every_kind_of_import(source, expected):
    assert imported(source, "driftloop.probe") >= expected
