"""Imports run downward only (DESIGN.md, "Layout"): each package may import only from the layers
below it, and no module imports one that imports it back. Read from the source with `ast`, so an
upward import anywhere (also inside a function) fails here, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: lowest first; a package may import its own layer's modules only if the package graph stays acyclic
LAYERS: list[set[str]] = [
    {"errors", "durations", "numbers", "principal", "terminal", "requestlog", "invisible"},
    {"wire", "masking", "policy"},       # pure cores and codecs
    {"store"},                           # persistence only
    {"audit", "identity", "upstream"},
    {"approvals"},
    {"config", "reload"},                # the whole config (every package's settings) and reading it again
    {"gateway"},
    {"api", "ui"},
    {"app"},
    {"commands", "demo", "cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ledgergate"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted((SRC / "ledgergate").rglob("*.py")):
        here = module_of(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ledgergate"):
                found.append((here, node.module, node.lineno))
            elif isinstance(node, ast.Import):
                found.extend((here, a.name, node.lineno) for a in node.names if a.name.startswith("ledgergate."))
    return found


def test_every_package_has_a_layer() -> None:
    packages = {package_of(module_of(p)) for p in (SRC / "ledgergate").rglob("*.py")} - {"ledgergate"}
    assert packages <= set(RANK), f"place these in LAYERS: {sorted(packages - set(RANK))}"


def test_imports_run_downward_only() -> None:
    upward = [f"{here} -> {target} (line {line})" for here, target, line in imports()
              if package_of(target) != "ledgergate" and package_of(here) != "ledgergate"
              and RANK[package_of(target)] > RANK[package_of(here)]]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_cycle_between_packages_of_one_layer() -> None:
    edges: dict[str, set[str]] = {}
    for here, target, _ in imports():
        a, b = package_of(here), package_of(target)
        if a != b and "ledgergate" not in (a, b):
            edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            assert state.get(nxt) != 1, "package cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for package in list(edges):
        if package not in state:
            visit(package, [])


def test_no_module_imports_itself_back() -> None:
    """Module-level imports only (a function-local import runs later and cannot deadlock loading)."""
    edges: dict[str, set[str]] = {}
    for path in sorted((SRC / "ledgergate").rglob("*.py")):
        here = module_of(path)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ledgergate"):
                for alias in node.names:  # `from pkg import module` names a module
                    candidate = f"{node.module}.{alias.name}"
                    edges.setdefault(here, set()).add(
                        candidate if (SRC / (candidate.replace(".", "/") + ".py")).exists() else node.module)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in list(edges):
        if module not in state:
            visit(module, [])
