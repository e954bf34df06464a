"""No import cycles between the project's modules, lazy (function-level) imports included: a
lazy import that closes a cycle only hides it (tokenize/core.py ↔ reference.py was one)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "specforge_assets"


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: modules of the same package it imports}, from the source (nothing is imported)."""
    mods: dict[str, Path] = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                    if node.level
                    else (node.module or "")
                )
                for a in node.names:
                    t = f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                    if t in mods and t != m:
                        graph[m].add(t)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_package_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert len(graph) > 50 and "specforge_assets.tokenize.core" in graph
    assert cycles(graph) == []


def test_a_lazy_import_cycle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "core.py").write_text("def f():\n    from .reference import g\n    return g\n")
    (pkg / "sub" / "reference.py").write_text("from .core import f\n\ndef g():\n    return f\n")
    (pkg / "other.py").write_text("from pkg.sub import core\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.core"] == {"pkg.sub.reference"} and graph["pkg.other"] == {"pkg.sub.core"}
    assert cycles(graph) == [["pkg.sub.core", "pkg.sub.reference"]]
