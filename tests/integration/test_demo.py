"""`ledgergate demo` end to end: the real command as a subprocess, the official SDK client with
the tokens it prints, the demo policies and masking, then `ledgergate audit verify` on its data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from ledgergate.demo.data import Bank
from tests.support.client import connect
from tests.support.procs import Proc, free_port

READY = "ledgergate demo is running"
TOKEN_LINE = re.compile(r"^export ([A-Z_]+)_TOKEN=(\S+)$", re.MULTILINE)


@dataclass
class Demo:
    proc: Proc
    port: int
    dir: Path
    log: Path
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp/bank"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo as a user starts it: no --data-dir, so its data goes to the per-user state dir
    (here XDG_STATE_HOME points into the test's directory), never into the working directory."""
    base = tmp_path_factory.mktemp("demo")
    work = base / "checkout"
    work.mkdir()
    data_dir = base / "state" / "ledgergate" / "demo"
    port = free_port()
    log = base / "demo.log"
    proc = Proc([sys.executable, "-m", "ledgergate.cli", "demo", "--port", str(port)],
                env={"PYTHONUNBUFFERED": "1", "XDG_STATE_HOME": str(base / "state")}, cwd=work, port=port, log=log)
    running = Demo(proc, port, data_dir, log, {})
    try:
        deadline = time.monotonic() + 60
        while READY not in running.output():
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not become ready:\n{running.output()[-3000:]}")
            time.sleep(0.1)
        running.tokens = {m.group(1).lower().replace("_", "-"): m.group(2)
                          for m in TOKEN_LINE.finditer(running.output())}
        yield running
    finally:
        proc.stop()


RAW = Bank().customers["C-1001"]


def _printed_cli(out: str) -> str:
    """The command the demo tells the user to run for `audit verify`."""
    found = re.search(r"^\s*(\S+) audit verify --config (\S+)$", out, re.MULTILINE)
    assert found, out
    return found.group(1)


def test_prints_everything_a_user_needs(demo: Demo) -> None:
    out = demo.output()
    assert set(demo.tokens) == {"alice", "bob", "carol", "nightly-ci"}
    assert demo.url in out
    issuer = re.search(r"Issuer \(OIDC\)\s+http://127\.0\.0\.1:(\d+)\s+\(the demo's second port, (\d+)", out)
    assert issuer and issuer.group(1) == issuer.group(2), out
    assert f"Data           {demo.dir}" in out
    assert f"audit verify --config {demo.dir / 'ledgergate.yaml'}" in out
    assert "mcp.client.client import Client" in out and "streamable_http_client" in out
    assert "curl -s " + demo.url in out
    assert json.loads((demo.dir / "tokens.json").read_text()) == demo.tokens
    assert (demo.dir / "tokens.json").stat().st_mode & 0o077 == 0
    # the generated config is what the CLI verbs load
    check = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config",
                            str(demo.dir / "ledgergate.yaml")], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


async def test_alice_sees_allowed_tools_and_masked_pii(demo: Demo) -> None:
    async with connect(demo.url, demo.tokens["alice"], "auto") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"lookup_customer", "list_transactions", "export_customers", "transfer_funds"} <= names
        result = await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
        assert not result.is_error, result
        text = result.content[0].text
        structured = json.dumps(result.structured_content)
        assert RAW.name in text  # not PII under the standard profile
        for raw in (RAW.ssn, RAW.card_number):
            assert raw not in text and raw not in structured
        assert f"***-**-{RAW.ssn[-4:]}" in text  # partial: the last four stay visible
        assert RAW.card_number[-4:] in text
        assert result.structured_content["ssn"] == f"***-**-{RAW.ssn[-4:]}"
        assert result.structured_content["card_number"].endswith(RAW.card_number[-4:])
        account_number = Bank().accounts[RAW.account_id].account_number
        assert result.structured_content["account_number"] == "*" * (len(account_number) - 4) + account_number[-4:]

        resource = await client.read_resource("bank://customers/C-1001")
        assert RAW.ssn not in resource.contents[0].text



async def test_a_large_transfer_waits_for_bob_and_runs_once_he_approves(demo: Demo) -> None:
    """The story the demo tells: alice's large transfer is held; bob approves it with the command the
    demo printed; the held call completes."""
    config = demo.dir / "ledgergate.yaml"
    printed = demo.output()
    assert f"ledgergate approvals approve APPROVAL_ID" in printed and f"--by bob --config {config}" in printed
    assert f"http://127.0.0.1:{demo.port}/api/v1/approvals/APPROVAL_ID/approve" in printed
    async with connect(demo.url, demo.tokens["alice"], "legacy") as client:
        call = asyncio.create_task(client.call_tool(  # over the $10,000 threshold, within A-2004's balance
            "transfer_funds", {"from_account": "A-2004", "to_account": "A-2002", "amount": 12500}))
        approval_id = None
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {demo.tokens['bob']}"}) as bob:
            for _ in range(200):
                listed = (await bob.get(f"http://127.0.0.1:{demo.port}/api/v1/approvals",
                                        params={"status": "pending"})).json()["approvals"]
                if listed:
                    approval_id = listed[0]["id"]
                    break
                await asyncio.sleep(0.1)
        assert approval_id is not None and not call.done()
        approve = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "ledgergate.cli", "approvals", "approve", approval_id, "--reason",
            "checked with the customer", "--by", "bob", "--config", str(config)],
            capture_output=True, text=True, timeout=60)
        assert approve.returncode == 0, approve.stdout + approve.stderr
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error and result.structured_content["status"] == "completed"


async def test_carol_is_denied_bulk_export_by_name(demo: Demo) -> None:
    async with connect(demo.url, demo.tokens["carol"], "auto") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"lookup_customer", "list_transactions"}
        with pytest.raises(MCPError) as failure:
            await client.call_tool("export_customers", {})
        assert "no-bulk-export-for-contractors" in str(failure.value)
        result = await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
        assert RAW.ssn[-4:] not in result.content[0].text  # strict profile: redacted outright
        assert "[US_SSN]" in result.content[0].text
        assert RAW.name not in result.content[0].text and "[PERSON]" in result.content[0].text


async def test_ci_service_account_may_only_list_transactions(demo: Demo) -> None:
    async with connect(demo.url, demo.tokens["nightly-ci"], "legacy") as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"list_transactions"}
        result = await client.call_tool("list_transactions", {"account_id": "A-2001", "limit": 3})
        assert not result.is_error and result.structured_content["count"] == 3
        with pytest.raises(MCPError) as failure:
            await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
        assert "denied by policy" in str(failure.value)


def test_printed_python_example_runs(demo: Demo) -> None:
    run = subprocess.run([sys.executable, str(demo.dir / "example_client.py")], capture_output=True, text=True,
                         env={**os.environ, "ALICE_TOKEN": demo.tokens["alice"]}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "lookup_customer" in run.stdout and f"***-**-{RAW.ssn[-4:]}" in run.stdout
    assert RAW.ssn not in run.stdout


def test_follow_up_commands_run_without_an_activated_venv(demo: Demo) -> None:
    """The printed `ledgergate` is a path that runs as printed from a shell whose PATH has no venv."""
    cli = _printed_cli(demo.output())
    assert "/" in cli and os.access(cli, os.X_OK), cli
    run = subprocess.run(f"{cli} config validate --config {demo.dir / 'ledgergate.yaml'}", shell=True,
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line.strip() for line in demo.output().splitlines()]
    listing = next(line for line in lines if " approvals list --config " in line)
    run = subprocess.run(listing, shell=True, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})  # exactly as printed
    assert run.returncode == 0, run.stdout + run.stderr
    approve = next(line for line in lines if " approvals approve APPROVAL_ID " in line)
    assert approve.startswith(cli + " "), approve
    sdk = re.search(r"^  (\S+ \S+example_client\.py)$", demo.output(), re.MULTILINE)  # on its own line
    assert sdk, demo.output()
    run = subprocess.run(sdk.group(1), shell=True, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "ALICE_TOKEN": demo.tokens["alice"]})
    assert run.returncode == 0 and "lookup_customer" in run.stdout, run.stdout + run.stderr


def test_the_demo_data_stays_out_of_the_working_directory(demo: Demo) -> None:
    assert list((demo.dir.parents[2] / "checkout").iterdir()) == []
    assert {"ledgergate.yaml", "ledger.key", "tokens.json"} <= {p.name for p in demo.dir.iterdir()}


async def test_the_demo_auditor_reads_the_audit_api(demo: Demo) -> None:
    import httpx

    url = f"http://127.0.0.1:{demo.port}/api/v1/audit/checkpoint"
    assert re.search(rf"curl -s {re.escape(url)} -H \"Authorization: Bearer \$BOB_TOKEN\"", demo.output())
    async with httpx.AsyncClient(timeout=30) as http:
        bob = await http.get(url, headers={"Authorization": f"Bearer {demo.tokens['bob']}"})
        assert bob.status_code == 200 and bob.text.startswith("ledgergate/demo\n"), bob.text
        alice = await http.get(url, headers={"Authorization": f"Bearer {demo.tokens['alice']}"})
        assert alice.status_code == 403


def test_cli_command_prefers_the_running_script() -> None:
    from ledgergate.demo import run

    saved = sys.argv[0]
    try:
        sys.argv[0] = ".venv/bin/ledgergate"
        assert run.cli_command() == os.path.abspath(".venv/bin/ledgergate")  # runs from any folder
        sys.argv[0] = "/opt/my tools/bin/ledgergate"
        assert run.cli_command() == "'/opt/my tools/bin/ledgergate'"
        sys.argv[0] = str(Path(run.__file__).parents[1] / "cli.py")  # python -m ledgergate.cli
        beside = Path(sys.executable).parent / "ledgergate"
        assert run.cli_command() == (str(beside) if beside.exists() else f"{sys.executable} -m ledgergate.cli")
    finally:
        sys.argv[0] = saved


async def _open_event_stream(demo: Demo) -> tuple[asyncio.Task[list[str]], asyncio.Event]:
    """A handshake-era session with its GET event stream open, as SDK clients keep one."""
    import httpx

    headers = {"Authorization": f"Bearer {demo.tokens['alice']}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}
    http = httpx.AsyncClient(timeout=30)
    init = await http.post(demo.url, headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    assert (await http.post(demo.url, headers=headers,
                            json={"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
    opened = asyncio.Event()

    async def listen() -> list[str]:
        lines: list[str] = []
        try:
            async with http.stream("GET", demo.url, headers={**headers, "Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                opened.set()
                async for line in r.aiter_lines():  # raises if the stream does not end cleanly
                    lines.append(line)
        finally:
            await http.aclose()
        return lines

    return asyncio.create_task(listen()), opened


async def test_zz_stops_cleanly_and_the_ledger_verifies(demo: Demo) -> None:
    """Stopping with an event stream open ends the stream in order and prints no traceback
    (it used to wait out uvicorn's 5 s grace period, then log the cancelled stream's traceback)."""
    stream, opened = await _open_event_stream(demo)
    await asyncio.wait_for(opened.wait(), 10)
    start = time.monotonic()
    await asyncio.to_thread(demo.proc.stop)
    # held by the stream, the stop would take uvicorn's whole 5 s grace period, and more
    assert time.monotonic() - start < 5, "the open stream held the shutdown"
    await asyncio.wait_for(stream, 5)  # ended cleanly, not by a broken connection
    assert demo.proc.proc.returncode == 0, demo.output()[-3000:]
    assert "stopped;" in demo.output()
    assert "Traceback" not in demo.output(), demo.output()[-3000:]
    assert "ERROR" not in demo.output(), demo.output()[-3000:]
    verify = subprocess.run([_printed_cli(demo.output()), "audit", "verify", "--config",
                             str(demo.dir / "ledgergate.yaml")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verified" in verify.stdout
