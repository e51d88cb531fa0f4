"""`sessions list|show|replay` show recorded text (subjects, tool names, arguments: callers choose
them) with hidden characters made visible, as `approvals` does; and a closed output pipe
(`policy check … | head -1`) ends a verb quietly with exit 141, never 1 (which means "deny")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledgergate.audit.sessions import Session
from ledgergate.commands import sessions as sessions_cli

RLO, ZWSP, ESC = "\u202e", "\u200b", "\x1b"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Session:
    s = Session(id=f"s-1{ZWSP}", principal={"issuer": f"http://idp{RLO}", "subject": f"mallory{RLO}evil"},
                server=f"bank{ZWSP}", start="2026-01-01T00:00:00Z", end="2026-01-01T00:01:00Z", calls=1,
                tools={f"transfer{RLO}_funds"})
    monkeypatch.setattr(sessions_cli, "load_or_exit", lambda path: object())
    monkeypatch.setattr(sessions_cli, "_sessions", lambda loaded: {s.id: s})
    monkeypatch.setattr(sessions_cli, "select", lambda found, flt: list(found.values()))
    monkeypatch.setattr(sessions_cli, "record_look", lambda *a, **k: None)
    # no store here: every record is taken as in its signed checkpoint (tests/integration/test_sessions_cli.py
    # checks that part against a real one)
    monkeypatch.setattr(sessions_cli, "_signed", lambda loaded, places: {p: ("yes", "signed") for p in places})
    timeline: list[dict[str, Any]] = [{
        "offset_ms": 0, "event": "rpc.request", "target": f"transfer{RLO}_funds", "decision": "allow",
        "reason": f"pay {RLO}1002-A", "payload_kind": "args", "payload": {"to": f"{ESC}[31mA-2001{RLO}"},
        "log": "demo", "index": 3}]
    monkeypatch.setattr(sessions_cli, "replay", lambda session: {"timeline": timeline})
    return s


@pytest.mark.parametrize("verb", ["list", "show", "replay"])
def test_sessions_output_shows_hidden_characters(fake: Session, verb: str) -> None:
    args = [verb, "--config", "x.yaml"] + ([] if verb == "list" else ["--", fake.id])
    result = CliRunner().invoke(sessions_cli.app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = result.output
    for hidden in (RLO, ZWSP, ESC):
        assert hidden not in text, (verb, text)
    assert "[U+202E]" in text, text
    if verb == "replay":
        assert "\\u001b[31m" in text and "transfer[U+202E]_funds" in text, text  # JSON's own escape


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    return subprocess.run(["bash", "-c", command + '; echo "status=${PIPESTATUS[0]}"'], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_closed_pipe_exits_141_quietly(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("identity: {api_keys: true}\nservers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\n"
                   "policies:\n  - {name: r, match: {servers: [bank]}, effect: deny}\n"
                   "  - {name: other, match: {servers: [bank], tools: [other]}, effect: allow}\n")
    cli = f"{sys.executable} -m ledgergate.cli"
    # the reader is gone before the verb writes (it starts in ~1 s, `true` exits at once)
    run = _shell(f"{cli} policy check -c {cfg} --subject alice --groups a --server bank --tool read "
                 "--args '{}' | true", tmp_path)
    assert run.stdout.strip().endswith("status=141"), (run.stdout, run.stderr)
    assert run.stderr == "", run.stderr
    run = _shell(f"{cli} config validate -c {cfg} | true", tmp_path)
    assert run.stdout.strip().endswith("status=141"), (run.stdout, run.stderr)
    assert run.stderr == "", run.stderr
    # an open pipe: the same verb as before
    run = _shell(f"{cli} policy check -c {cfg} --subject alice --groups a --server bank --tool read --args '{{}}' "
                 "| cat", tmp_path)
    assert run.stdout.strip().endswith("status=1") and "decision: deny" in run.stdout, run.stdout
