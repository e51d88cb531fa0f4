"""The README's commands work as a newcomer reads them: a command that runs the tests says,
in the same paragraph, what installs what they need (the demo's install has no test extras)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _paragraphs() -> list[str]:
    return [p for p in re.split(r"\n\s*\n", README.read_text(encoding="utf-8")) if p.strip()]


def test_every_test_command_says_what_it_needs_first() -> None:
    runs = [p for p in _paragraphs() if "-m pytest" in p]
    assert runs, "the README names no test command"
    for paragraph in runs:
        before = paragraph[:paragraph.index("-m pytest")]
        assert "bash .ci/run" in before or ".[test]" in before, paragraph


def test_the_ci_script_installs_the_test_extras_and_peers_the_readme_names() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -q -e ".[test]"' in ci and "npm ci --prefix tests/peers" in ci
    text = README.read_text(encoding="utf-8")
    assert "pip install -e '.[test]'" in text and "npm ci --prefix tests/peers" in text
