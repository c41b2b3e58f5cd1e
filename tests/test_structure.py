"""The shape of `src/cortex`, checked: no module imports another's private names, no import
cycle (lazy imports inside functions included: a cycle hidden by one is still two modules
pretending to be one), the fleet never imports the servers above it, dispatch reaches the fleet
only through its `Nodes` protocol, and the gateway's app and dialect adapters stay thin."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cortex"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _edges(module: str) -> Iterator[tuple[str, str | None]]:
    """(imported module, imported name or None) for each cortex import of `module`."""
    tree = ast.parse(MODULES[module].read_text())
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cortex"):
                    yield alias.name, None
            continue
        source = _absolute(module, node)
        if not source.startswith("cortex"):
            continue
        for alias in node.names:
            child = f"{source}.{alias.name}"
            yield (child, None) if child in MODULES else (source, alias.name)


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{module} imports {name} from {source}"
        for module in MODULES
        for source, name in _edges(module)
        if name is not None and name.startswith("_") and not name.startswith("__")
        and source != module
    ]  # fmt: skip
    assert not found, "\n".join(found)


def _graph() -> dict[str, set[str]]:
    return {m: {s for s, _ in _edges(m) if s in MODULES and s != m} for m in MODULES}


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package's __init__ re-exporting its children is not a cycle with them.
    real = [c for c in cycles if not all(c[0].startswith(m) or m.startswith(c[0]) for m in c)]
    assert not real, "\n".join(" -> ".join(c) for c in real)


@pytest.mark.parametrize("layer", ["cortex.fleet", "cortex.translate", "cortex.protocol"])
def test_lower_layers_import_nothing_above_them(layer: str) -> None:
    above = ("cortex.gateway", "cortex.neuron", "cortex.cli", "cortex.embedded")
    found = [
        f"{module} imports {source}"
        for module in MODULES
        if module == layer or module.startswith(layer + ".")
        for source, _ in _edges(module)
        if source.startswith(above)
    ]
    assert not found, "\n".join(found)


def _lines(module: str) -> int:
    return len(MODULES[module].read_text().splitlines())


def test_the_gateway_app_is_a_factory_and_each_dialect_a_thin_adapter() -> None:
    assert _lines("cortex.gateway.app") <= 200
    pipeline = _lines("cortex.gateway.pipeline")
    for dialect in ("openai_routes", "anthropic_routes", "responses_routes"):
        assert _lines(f"cortex.gateway.{dialect}") < pipeline, dialect


def test_dispatch_talks_to_the_fleet_only_through_its_protocol() -> None:
    module = "cortex.fleet.dispatch"
    sources = {source for source, _ in _edges(module)}
    assert not sources & {"cortex.fleet.fleet", "cortex.fleet.ledger"}, sources
    tree = ast.parse(MODULES[module].read_text())
    reached = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not reached & {"ledger", "_lifespans", "poller", "lifecycle"}, reached
