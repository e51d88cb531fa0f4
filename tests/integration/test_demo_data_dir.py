"""`ledgergate demo` and its data dir, as a user meets them: a second demo started on the same folder
(the default one is shared, so a second terminal does it by accident), a start-up that fails, and the
banner's commands pasted as printed into a shell when the folder's name has a space in it.

Each test runs the real command as a child process; the demo the module starts is stopped at the end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledgergate.store.claims import LogClaim
from ledgergate.store.db import StoreURL
from tests.support.demo import READY, Demo
from tests.support.procs import Proc, free_port

BANNED = ("Traceback", "SystemExit", "uvicorn.error", "File \"")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    base = tmp_path_factory.mktemp("demo")
    data_dir = base / "my demo"  # a space: every path the banner prints must survive a shell
    port = free_port()
    log = base / "demo.log"
    proc = Proc([sys.executable, "-m", "ledgergate.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)],
                env={"PYTHONUNBUFFERED": "1"}, cwd=base, port=port, log=log)
    running = Demo(proc, port, data_dir, log, {})
    try:
        deadline = time.monotonic() + 60
        while READY not in running.output():
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not become ready:\n{running.output()[-3000:]}")
            time.sleep(0.1)
        running.tokens = json.loads((data_dir / "tokens.json").read_text())
        yield running
    finally:
        proc.stop()


def _demo(data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", "demo", "--port", str(free_port()),
                           "--data-dir", str(data_dir)], check=False, capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


def _one_line(run: subprocess.CompletedProcess[str], *words: str) -> str:
    assert run.returncode not in (0, None), (run.returncode, run.stdout, run.stderr)
    for banned in BANNED:
        assert banned not in run.stderr + run.stdout, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()
            if p.is_file() and p.suffix in (".yaml", ".json", ".py")}


async def _lookup(demo: Demo, token: str) -> httpx.Response:
    """One stateless (2026-07-28) tools/call, as the banner's curl line sends it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {},
                                 "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "lookup_customer"}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"http://127.0.0.1:{demo.port}/mcp/bank", json=body, headers=headers)


async def test_a_second_demo_on_the_same_data_dir_refuses_before_writing_anything(demo: Demo) -> None:
    """It used to rewrite the running demo's config (which that demo then reloaded: every token it had
    printed was refused), then print a traceback. Now it refuses first, in one line naming the folder and
    the pid holding it, and the running demo goes on as it was."""
    before = _snapshot(demo.dir)
    line = _one_line(_demo(demo.dir, demo.dir.parent), str(demo.dir), f"pid {demo.proc.proc.pid}", "--data-dir")
    assert line.startswith("error "), line
    assert _snapshot(demo.dir) == before
    await asyncio.sleep(1.5)  # longer than the gateway's config watcher waits between looks
    answer = await _lookup(demo, demo.tokens["alice"])
    assert answer.status_code == 200 and "Unauthorized" not in answer.text, answer.text
    assert demo.proc.proc.poll() is None


def test_a_gateway_holding_the_demo_ledger_is_named_before_anything_is_written(tmp_path: Path) -> None:
    """The same folder held otherwise: `ledgergate serve` on the demo's config (or a demo of an earlier
    version) claims the demo's log. Here this test process holds that claim, as the gateway does."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    claim = LogClaim(StoreURL("sqlite", str(data_dir / "ledgergate.db")), "demo")
    try:
        _one_line(_demo(data_dir, tmp_path), str(data_dir), f"pid {os.getpid()}", "--data-dir")
    finally:
        claim.release()
    assert not (data_dir / "ledgergate.yaml").exists()
    assert not (data_dir / "tokens.json").exists()


def test_a_gateway_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    """Whatever stops the gateway's start (here its signing key is a folder) is one line, not uvicorn's
    three error lines and the traceback of an exit from inside a task."""
    data_dir = tmp_path / "data"
    (data_dir / "ledger.key").mkdir(parents=True)
    line = _one_line(_demo(data_dir, tmp_path), "the gateway did not start", "ledger.key")
    assert "Is a directory" in line or "directory" in line


def _shell(line: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A printed line as a user pastes it: a shell with no venv on its PATH, and failglob, so an unquoted
    `?` that matches no file fails as zsh's default (`no matches found`) makes it fail."""
    return subprocess.run(["bash", "-O", "failglob", "-c", line], check=False, capture_output=True, text=True,
                          timeout=90, env={"PATH": "/usr/bin:/bin", **env})


def test_every_printed_command_runs_as_printed_from_a_folder_with_a_space(demo: Demo) -> None:
    out = demo.output()
    lines = [line.strip() for line in out.splitlines()]
    cli = next(line for line in lines if " audit verify --config " in line).split(" audit verify")[0]
    assert os.access(shlex.split(cli)[0], os.X_OK), cli
    tokens = {"ALICE_TOKEN": demo.tokens["alice"], "BOB_TOKEN": demo.tokens["bob"]}
    commands = [line for line in lines
                if (line.startswith((cli + " ", "curl -s ")) or "example_client.py" in line.split(" ")[-1]
                    or line.endswith("example_client.py' --legacy"))
                and "APPROVAL_ID" not in line and "SESSION_ID" not in line]
    expected = {"policy check": 1}  # carol's export_customers: deny
    for command in commands:
        run = _shell(command.split("   #")[0], **tokens)
        code = next((c for what, c in expected.items() if what in command), 0)
        assert run.returncode == code, (command, run.stdout, run.stderr)
        assert "no match" not in run.stderr and "Unauthorized" not in run.stdout, (command, run.stderr)
    # approvals list, the SDK client (both modes), sessions list, three curl lines, audit verify, policy check
    assert len(commands) >= 9, commands
    # the config file says how to check it, in lines that run as written too
    header = [line.removeprefix("#").strip() for line in (demo.dir / "ledgergate.yaml").read_text().splitlines()
              if line.startswith("#") and " audit verify --config " in line]
    assert header and _shell(header[0]).returncode == 0, header
    pending = next(c for c in commands if "status=pending" in c)
    assert "'http://127.0.0.1:" in pending  # quoted: `?` is a glob to zsh


def test_the_banner_says_the_snippet_is_stateless_and_how_to_get_a_session_to_replay(demo: Demo) -> None:
    """The SDK snippet speaks 2026-07-28, which opens no session: `sessions list` said "no sessions"
    after it, and the console's replay was empty. The banner says so and prints the legacy run, whose
    session the printed `sessions list` then shows."""
    out = demo.output()
    assert re.search(r"stateless revision 2026-07-28.*no session", out), out
    lines = [line.strip() for line in out.splitlines()]
    legacy = next(line for line in lines if line.endswith("example_client.py' --legacy"))
    listing = next(line for line in lines if " sessions list --config " in line)
    run = _shell(legacy, ALICE_TOKEN=demo.tokens["alice"])
    assert run.returncode == 0 and "lookup_customer" in run.stdout, run.stdout + run.stderr
    run = _shell(listing)
    assert run.returncode == 0 and "alice" in run.stdout and "bank" in run.stdout, run.stdout + run.stderr
