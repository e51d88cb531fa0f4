"""CLI output read through a pipe is never wrapped, whatever the length of the checkout's path.

Each command runs as a child process with stdout and stderr on pipes (as in CI
or a script), from a directory whose path is 200 characters long, and prints
sentences longer than 80 columns; every sentence must arrive on one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LONG_RULE = "rule-" + "r" * 120


@pytest.fixture
def long_dir(tmp_path: Path) -> Path:
    """A directory whose absolute path is exactly 200 characters."""
    path = str(tmp_path)
    assert len(path) < 190, path
    while 200 - len(path) > 61:
        path += "/" + "d" * 60
    path += "/" + "d" * (200 - len(path) - 1)
    path = Path(path)
    path.mkdir(parents=True)
    assert len(str(path)) == 200, (len(str(path)), path)
    return path


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TERM")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60)


def _one_line(text: str, *sentence: str) -> None:
    """Every part of the sentence is on one and the same line of text."""
    assert any(all(s in line for s in sentence) for line in text.splitlines()), (sentence, text)


def test_config_errors_through_a_pipe_are_one_line(long_dir: Path) -> None:
    bad = long_dir / "bad.yaml"
    bad.write_text("listen: x\n")
    run = _cli("config", "validate", "--config", str(bad), cwd=long_dir)
    assert run.returncode == 2
    _one_line(run.stderr, str(bad), "line 1: listen: 'listen' must be host:port, e.g. 127.0.0.1:8080")
    assert "\x1b[" not in run.stderr  # no colour codes into a pipe


def test_config_ok_through_a_pipe_is_one_line(long_dir: Path) -> None:
    cfg = long_dir / "ok.yaml"
    cfg.write_text(f"servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\npolicies:\n"
                   f"  - name: {LONG_RULE}\n    match: {{servers: [bank]}}\n    effect: allow\n")
    run = _cli("config", "validate", "--config", str(cfg), cwd=long_dir)
    assert run.returncode == 0, run.stderr
    _one_line(run.stdout, "ok", str(cfg), "1 server(s), 1 policy rule(s), 0 OIDC issuer(s)")


def test_policy_check_through_a_pipe_is_one_line(long_dir: Path) -> None:
    cfg = long_dir / "ok.yaml"
    cfg.write_text(f"servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\npolicies:\n"
                   f"  - name: {LONG_RULE}\n    match: {{servers: [bank], tools: [transfer]}}\n"
                   "    effect: deny\n")
    run = _cli("policy", "check", "--config", str(cfg), "--subject", "s" * 90, "--server", "bank",
               "--tool", "transfer", cwd=long_dir)
    assert run.returncode == 1, run.stderr
    _one_line(run.stdout, "decision: deny", f"(rule {LONG_RULE})")
    _one_line(run.stdout, f"{LONG_RULE} (deny):")


def test_apikeys_table_through_a_pipe_keeps_each_row_on_one_line(long_dir: Path) -> None:
    cfg = long_dir / "keys.yaml"
    cfg.write_text("identity:\n  api_keys: true\n")
    name = "k" * 100
    groups = ",".join(f"group-{i:02d}" for i in range(12))
    made = _cli("apikeys", "create", "--name", name, "--groups", groups, "--expires", "30d",
                "--config", str(cfg), cwd=long_dir)
    assert made.returncode == 0, made.stderr
    _one_line(made.stdout, "created API key", f"for {name}")
    listed = _cli("apikeys", "list", "--config", str(cfg), cwd=long_dir)
    assert listed.returncode == 0, listed.stderr
    _one_line(listed.stdout, name, groups, "active")
