"""The import graph of the tree: no circle, the rooms apart, vision's layers pointing down.

Read from the source (every ``import``, at module level or inside a function), so a local
import cannot hide a circle. The rules are those of docs/architecture.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("ontology", "textmine", "vision", "kg")
TOP_MODULES = ("cli", "demo")

# vision's layers, lowest first: its sub-packages. A module imports only from its own layer
# or lower ones; `vision` itself and `vision.config` (the configuration as data) are below all.
VISION_LAYERS: tuple[str, ...] = ("data", "networks", "metrics", "engines", "evaluation", "reporting", "experiments")
VISION_BASE = ("vision", "vision.config")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    paths = [p for room in ROOMS for p in (ROOT / room).rglob("*.py")]
    paths += [ROOT / f"{name}.py" for name in TOP_MODULES]
    return {_module_name(p): p for p in paths}


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from . import x / from .m import x
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    # `from pkg import sub` imports the submodule `pkg.sub` when there is one, and `pkg`
    return [f"{module}.{alias.name}" for alias in node.names] + [module]


def import_graph() -> nx.DiGraph:
    """Module -> module it imports, for the project's own modules."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, package):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # a submodule always runs its package's __init__: not an edge of its own
                if target and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def room(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_sees_the_known_imports(graph: nx.DiGraph) -> None:
    # guards the reader itself: a graph without these edges would pass every rule below
    assert graph.has_edge("vision.engines.train", "vision.networks.model")
    assert graph.has_edge("kg.rdf", "kg.vocab")
    assert graph.has_edge("cli", "ontology.errors")
    assert graph.has_edge("vision.reporting.figures", "vision.engines.infer")  # a function-level import counts too


def test_no_import_circle(graph: nx.DiGraph) -> None:
    cycles = sorted(" -> ".join(c) for c in nx.simple_cycles(graph))
    assert not cycles, cycles


def test_ontology_imports_no_room(graph: nx.DiGraph) -> None:
    bad = [(a, b) for a, b in graph.edges if room(a) == "ontology" and room(b) != "ontology"]
    assert not bad, bad


def test_textmine_vision_kg_never_import_each_other(graph: nx.DiGraph) -> None:
    apart = {"textmine", "vision", "kg"}
    bad = [(a, b) for a, b in graph.edges if room(a) in apart and room(b) in apart and room(a) != room(b)]
    assert not bad, bad


def test_nothing_imports_the_cli(graph: nx.DiGraph) -> None:
    assert not list(graph.predecessors("cli"))


def vision_layer(module: str) -> int:
    """The rank of a vision module's layer (its sub-package); -1 for the base below them all."""
    if module in VISION_BASE:
        return -1
    return VISION_LAYERS.index(module.split(".")[1])


def test_every_vision_module_sits_in_a_layer(graph: nx.DiGraph) -> None:
    stray = [m for m in graph if room(m) == "vision" and m not in VISION_BASE and m.split(".")[1] not in VISION_LAYERS]
    assert not stray, f"modules outside vision's layer packages {VISION_LAYERS}: {stray}"


def test_vision_layers_point_down(graph: nx.DiGraph) -> None:
    vision = {m for m in graph if room(m) == "vision"}
    upward = [(a, b) for a, b in graph.edges if a in vision and b in vision and vision_layer(b) > vision_layer(a)]
    assert not upward, upward


def _holds_code(path: Path) -> bool:
    """A package's __init__ is a module of its own when it defines more than a docstring and imports."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(not isinstance(n, ast.Import | ast.ImportFrom | ast.Expr) for n in body)


def test_architecture_doc_has_a_line_for_every_module() -> None:
    # docs/architecture.md is the newcomer's map: one table row a module, by its path
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\|[^|\n]*?\| `([\w/.]+\.py)` \||^\| `([\w/.]+\.py)` \|", doc, re.M))
    listed_paths = {a or b for a, b in listed}
    paths = {str(p.relative_to(ROOT)) for p in _modules().values()}
    wanted = {p for p in paths if not p.endswith("__init__.py") or _holds_code(ROOT / p)}
    missing = sorted(wanted - listed_paths)
    assert not missing, f"modules without a line in docs/architecture.md: {missing}"
    gone = sorted(p for p in listed_paths if not (ROOT / p).is_file())
    assert not gone, f"docs/architecture.md lists modules that are not there: {gone}"


def test_local_imports_in_the_rooms_say_why() -> None:
    # the house rule: imports at module top, unless a heavy or optional dependency justifies
    # a local one, which says so in a comment (on its line or the line above)
    unexplained = []
    for name, path in _modules().items():
        if room(name) not in ROOMS:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                    if "#" not in here and "#" not in above:
                        unexplained.append(f"{path.relative_to(ROOT)}:{inner.lineno}: {here.strip()}")
    assert not unexplained, unexplained
