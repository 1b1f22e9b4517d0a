"""The layers point one way: no import cycle in gateway/ (TYPE_CHECKING and function-level imports count), config
and engines know no subsystem, and plugins import only the plugin interface."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSYSTEMS = ("gateway.ratelimit", "gateway.shortener", "gateway.notify", "gateway.proxy")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & known


def graph(directory: str) -> dict[str, set[str]]:
    files = sorted((ROOT / directory).rglob("*.py"))
    known = {module_name(path) for path in files}
    return {module_name(path): imports_of(path, known) - {module_name(path)} for path in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    edges = graph("gateway")
    # The package's own __init__ only re-exports lazily; importing a submodule does not run through it.
    edges = {name: targets - {"gateway"} for name, targets in edges.items()}
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_config_and_engines_know_no_subsystem() -> None:
    for name, targets in graph("gateway").items():
        if name.startswith(("gateway.config", "gateway.engines")):
            assert not {t for t in targets if t.startswith(SUBSYSTEMS)}, name


def test_plugins_import_only_the_plugin_interface() -> None:
    for path in sorted((ROOT / "plugins").glob("*.py")):
        tree = ast.parse(path.read_text())
        used = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        used |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert {module for module in used if module.startswith("gateway")} <= {"gateway.notify.channel"}, path
