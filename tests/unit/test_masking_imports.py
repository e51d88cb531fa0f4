"""Imports in the masking package run downward only (issue 16): settings does not import the engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ledgergate.masking.settings import MaskingSettings

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "ledgergate" / "masking"


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):  # also imports inside functions: a local import is still an edge
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ledgergate.masking."):
            out.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("ledgergate.masking.")}
    return out


def test_no_import_cycle_in_the_masking_package() -> None:
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert "engine" not in graph["settings"]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_loading_settings_does_not_load_the_engine() -> None:
    code = ("import sys; import ledgergate.masking.settings as s; "
            "s.MaskingSettings.model_validate({'profiles': {'p': {'detectors': ['US_SSN']}}}); "
            "print('ledgergate.masking.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(("config", "message"), [
    ({"profiles": {"p": {"detectors": ["NOPE"]}}}, "unknown detector 'NOPE'"),
    ({"profiles": {"ledger": {"detectors": []}}}, "reserved"),
    ({"detectors": [{"name": "BLOB_WITHHELD", "pattern": "x"}]}, "built-in"),
    ({"detectors": [{"name": "PERSON", "keys": ["x"]}]}, "built-in"),
])
def test_settings_validate_without_the_engine(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskingSettings.model_validate(config)
