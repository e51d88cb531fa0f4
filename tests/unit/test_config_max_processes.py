"""`servers.<name>.max_processes`: the most children of a stdio server running at once, across every
identity (default 32), and `servers.<name>.max_processes_per_principal`: the most of them one identity's
sessions run (default a quarter of `max_processes`, at least 1). Each is refused with its key and line where
it means nothing (a `url` server: the gateway starts no process for it; a share above `max_processes`) and
where it would let no session open (below 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ledgergate.config import ConfigError, parse_config

IDENTITY = "identity: {api_keys: true}\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(IDENTITY + text, "t.yaml", env={})
    return caught.value.problems


def test_a_stdio_server_runs_32_processes_at_most_unless_told() -> None:
    settings = parse_config(IDENTITY + "servers:\n  big: {command: [srv]}\n  small: {command: srv, max_processes: 2}\n",
                            env={})
    assert settings.servers["big"].max_processes == 32
    assert settings.servers["small"].max_processes == 2


@pytest.mark.parametrize("server", [
    "url: 'http://127.0.0.1:1/mcp'",
    "url: 'https://mcp.example.com/mcp'\n    transport: sse",
    "url: 'unix:///run/mcp.sock:/mcp'",
])
def test_max_processes_is_refused_for_a_url_server_with_its_key_and_line(server: str) -> None:
    problems = _problems(f"servers:\n  remote:\n    {server}\n    max_processes: 4\n")
    line = 5 + server.count("\n")  # after identity, servers, remote and the server's line(s)
    assert problems == [(
        f"line {line}: servers.remote.max_processes: applies only to a stdio server (one with 'command'): the "
        "gateway starts no processes for a 'url' server, so the key would limit nothing; remove it")], problems


def test_the_key_before_the_url_is_refused_on_its_own_line() -> None:
    problems = _problems("servers:\n  remote:\n    max_processes: 4\n    url: 'http://127.0.0.1:1/mcp'\n")
    assert len(problems) == 1 and problems[0].startswith("line 4: servers.remote.max_processes: applies only"), problems


@pytest.mark.parametrize("value", ["0", "-1", "-100"])
def test_max_processes_below_one_is_refused_with_its_key_and_line(value: str) -> None:
    problems = _problems(f"servers:\n  bank:\n    command: [srv]\n    max_processes: {value}\n")
    assert problems == [("line 5: servers.bank.max_processes: must be at least 1: below that no session of this "
                         "server could ever open")], problems


@pytest.mark.parametrize("value", ["many", "2.5", "[2]"])
def test_max_processes_must_be_a_whole_number(value: str) -> None:
    problems = _problems(f"servers:\n  bank:\n    command: [srv]\n    max_processes: {value}\n")
    assert len(problems) == 1 and problems[0].startswith("line 5: servers.bank.max_processes: "), problems


def test_config_validate_names_the_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "ledgergate.yaml"
    config.write_text(IDENTITY + "servers:\n  remote:\n    url: 'http://127.0.0.1:1/mcp'\n    max_processes: 4\n")
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0
    assert "line 5: servers.remote.max_processes: applies only to a stdio server" in run.stdout + run.stderr, run


# ── servers.<name>.max_processes_per_principal: one identity's share of those children ─────────────
# One identity could hold every slot (`max_sessions_per_principal`, 64, is more than `max_processes`, 32);
# by default it now gets a quarter of them (at least 1), and a value that would limit nothing is refused.

def test_an_identity_gets_a_quarter_of_a_stdio_servers_processes_unless_told() -> None:
    settings = parse_config(IDENTITY + "servers:\n  big: {command: [srv]}\n  small: {command: srv, max_processes: 2}\n"
                            "  mid: {command: srv, max_processes: 10}\n"
                            "  told: {command: srv, max_processes: 4, max_processes_per_principal: 4}\n", env={})
    shares = {name: (server.max_processes_per_principal, server.principal_process_cap)
              for name, server in settings.servers.items()}
    assert shares == {"big": (None, 8), "small": (None, 1), "mid": (None, 2), "told": (4, 4)}, shares


def test_the_share_may_be_given_before_max_processes_and_may_equal_it() -> None:
    settings = parse_config(IDENTITY + "servers:\n  bank:\n    command: [srv]\n    max_processes_per_principal: 3\n"
                            "    max_processes: 3\n", env={})
    assert settings.servers["bank"].principal_process_cap == 3


@pytest.mark.parametrize(("lines", "line", "limit"), [
    ("    max_processes_per_principal: 33\n", 5, 32),  # over the default max_processes
    ("    max_processes: 4\n    max_processes_per_principal: 5\n", 6, 4),
    ("    max_processes_per_principal: 5\n    max_processes: 4\n", 5, 4),  # the key's own line, wherever it is
])
def test_a_share_above_max_processes_is_refused_with_its_key_and_line(lines: str, line: int, limit: int) -> None:
    problems = _problems(f"servers:\n  bank:\n    command: [srv]\n{lines}")
    assert problems == [(
        f"line {line}: servers.bank.max_processes_per_principal: must be at most this server's max_processes "
        f"({limit}): one identity can never run more children than the server runs in all, so the key would "
        "limit nothing")], problems


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_share_below_one_is_refused_with_its_key_and_line(value: str) -> None:
    problems = _problems(f"servers:\n  bank:\n    command: [srv]\n    max_processes_per_principal: {value}\n")
    assert problems == [("line 5: servers.bank.max_processes_per_principal: must be at least 1: below that no "
                         "session of this server could ever open")], problems


@pytest.mark.parametrize("value", ["", "many", "2.5", "[2]"])
def test_a_share_must_be_a_whole_number(value: str) -> None:
    problems = _problems(f"servers:\n  bank:\n    command: [srv]\n    max_processes_per_principal: {value}\n")
    assert len(problems) == 1 and problems[0].startswith("line 5: servers.bank.max_processes_per_principal: "), problems
    assert "unknown" not in problems[0], problems  # the value is judged, not the key


def test_a_share_is_refused_for_a_url_server_with_its_key_and_line() -> None:
    problems = _problems("servers:\n  remote:\n    url: 'http://127.0.0.1:1/mcp'\n    max_processes_per_principal: 2\n")
    assert problems == [(
        "line 5: servers.remote.max_processes_per_principal: applies only to a stdio server (one with 'command'): "
        "the gateway starts no processes for a 'url' server, so the key would limit nothing; remove it")], problems
