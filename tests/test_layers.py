"""The layers of the project, read from its source: ``model/`` (the network, its weights
and its input contract) imports nothing of ``beam_i3d``, and no module imports itself
back through others (no import cycle), counting imports inside functions and under
``TYPE_CHECKING`` too.

The graph is built with :mod:`ast`, not by importing: an edge ``a -> b`` for every
``import b`` / ``from b import x`` in ``a`` (``from pkg import mod``, where ``mod`` is a
module of the project, is an edge to ``pkg.mod``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("beam_i3d", "model", "schemas")


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (a package by its own)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted name is, or is in (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" imports pkg.mod; "from mod import name" imports mod.
            names = [f"{base}.{alias.name}" for alias in node.names]
            names = [n if n in modules else base for n in names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through a component's first module, as a path of module names."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    return component


def test_the_graph_sees_the_project_and_its_function_level_imports():
    graph = import_graph()
    assert {"beam_i3d.cli", "model.i3d", "model.errors", "beam_i3d.job.score_options"} <= set(graph)
    # A module-level import, a function-level one, and "from pkg import module".
    assert "model.errors" in graph["model.i3d"]
    assert "model.checkpoint_reader" in graph["model.default_weights"]
    assert "model.storage" in graph["beam_i3d.fileio"]


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == [["a", "b", "c"]]
    assert _cycle_in(cycles[0], graph) == ["a", "b", "c", "a"]


def test_model_imports_nothing_of_beam_i3d():
    graph = import_graph()
    problems = []
    for module in sorted(m for m in graph if m.split(".")[0] == "model"):
        seen, pending, parent = {module}, [module], {module: None}
        while pending:
            node = pending.pop()
            if node.split(".")[0] == "beam_i3d":
                continue  # one beam_i3d module on the way is enough to name
            for child in sorted(graph[node]):
                if child not in seen:
                    seen.add(child)
                    parent[child] = node
                    pending.append(child)
        for reached in sorted(m for m in seen if m.split(".")[0] == "beam_i3d"):
            chain, node = [], reached
            while node is not None:
                chain.append(node)
                node = parent[node]
            problems.append(" -> ".join(reversed(chain)))
    assert not problems, "model/ must not import beam_i3d:\n" + "\n".join(problems)


def test_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(
        " -> ".join(_cycle_in(c, graph)) for c in cycles)
