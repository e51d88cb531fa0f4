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
    base = tmp_path_factory.mktemp("demo")
    data_dir = base / "data"
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
        running.tokens = {m.group(1).lower().replace("_", "-"): m.group(2)
                          for m in TOKEN_LINE.finditer(running.output())}
        yield running
    finally:
        proc.stop()


RAW = Bank().customers["C-1001"]


def test_prints_everything_a_user_needs(demo: Demo) -> None:
    out = demo.output()
    assert set(demo.tokens) == {"alice", "bob", "carol", "nightly-ci"}
    assert demo.url in out
    assert re.search(r"Issuer \(OIDC\)\s+http://127\.0\.0\.1:\d+", out)
    assert f"ledgergate audit verify --config {demo.dir / 'ledgergate.yaml'}" in out
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
        call = asyncio.create_task(client.call_tool(
            "transfer_funds", {"from_account": "A-2001", "to_account": "A-2002", "amount": 50000}))
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


def test_zz_stops_cleanly_and_the_ledger_verifies(demo: Demo) -> None:
    demo.proc.stop()
    assert demo.proc.proc.returncode == 0, demo.output()[-3000:]
    assert "stopped;" in demo.output()
    verify = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config",
                             str(demo.dir / "ledgergate.yaml")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verified" in verify.stdout
