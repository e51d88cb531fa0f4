"""`ledgergate sessions list|show|replay|export` on the demo's ledger after real SDK sessions: the
calls in order with masked payloads, filters, the replay recorded as who looked at what, and an
exported session that verifies offline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from ledgergate.demo.data import Bank
from tests.support.client import connect
from tests.support.demo import Demo, start_demo

RAW = Bank().customers["C-1001"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("sessions"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sessions(demo: Demo) -> dict[str, Any]:
    async def work() -> None:
        async with connect(demo.url, demo.tokens["alice"], "legacy") as client:
            await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
            await client.call_tool("list_transactions", {"account_id": "A-2001", "limit": 2})
        async with connect(demo.url, demo.tokens["carol"], "legacy") as client:
            with pytest.raises(MCPError):
                await client.call_tool("export_customers", {})

    asyncio.run(work())
    run = demo.cli("sessions", "list", "--config", str(demo.config), "--json")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    return {s["principal"]["subject"]: s for s in found}


def test_list_counts_and_filters(demo: Demo, sessions: dict[str, Any]) -> None:
    alice, carol = sessions["alice"], sessions["carol"]
    assert (alice["server"], alice["denials"]) == ("bank", 0)
    assert alice["calls"] >= 2  # two tool calls, and whatever else the SDK asked (tools/list)
    assert carol["calls"] >= carol["denials"] >= 1  # a call refused by policy is still a call carol made
    assert alice["tools"] == ["list_transactions", "lookup_customer"]

    def ids(*flags: str) -> set[str]:
        run = demo.cli("sessions", "list", "--config", str(demo.config), "--json", *flags)
        assert run.returncode == 0, run.stderr
        return {s["session"] for s in json.loads(run.stdout)}

    assert ids("--principal", "carol") == {carol["session"]}
    assert ids("--decision", "deny") == {carol["session"]}
    assert ids("--tool", "lookup_customer") == {alice["session"]}
    assert ids("--server", "nope") == set()
    assert ids("--since", "2999-01-01T00:00:00Z") == set()
    assert {alice["session"], carol["session"]} <= ids("--until", "2999-01-01T00:00:00Z")
    run = demo.cli("sessions", "list", "--config", str(demo.config), "--decision", "maybe")
    assert run.returncode == 2 and "--decision" in run.stderr
    table = demo.cli("sessions", "list", "--config", str(demo.config))
    assert alice["session"] in table.stdout and "alice" in table.stdout


def test_replay_shows_calls_in_order_masked_and_is_recorded(demo: Demo, sessions: dict[str, Any]) -> None:
    sid = sessions["alice"]["session"]
    run = demo.cli("sessions", "replay", "--config", str(demo.config), "--by", "auditor-ann", "--", sid)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    lines = [line for line in text.splitlines() if line.strip()]
    events = [line.split()[1] for line in lines[1:]]
    assert events[0] == "session.opened"
    calls = [line for line in lines if line.split()[1] == "rpc.request" and line.split()[2] != "tools/list"]
    assert "lookup_customer" in calls[0] and "list_transactions" in calls[1]
    assert text.index("lookup_customer") < text.index("list_transactions")
    assert "decision=allow" in calls[0] and "rule=analysts-read" in calls[0]
    assert "latency=" in text
    assert RAW.ssn not in text and RAW.card_number not in text and RAW.email not in text
    assert "US_SSN" in text  # the ledger's masked form of the SSN in the looked-up record
    doc = json.loads(demo.cli("sessions", "replay", "--config", str(demo.config), "--json", "--", sid).stdout)
    times = [st["time"] for st in doc["timeline"]]
    assert times == sorted(times) and doc["timeline"][0]["offset_ms"] == 0
    looks = [r for r in demo.records() if r["event"] == "session.replayed" and r.get("replayed_session") == sid]
    assert {r["viewer"]["subject"] for r in looks} >= {"auditor-ann"}
    assert all(r["log"] == "demo-cli" for r in looks)
    # a replay is not part of the session it looks at
    again = json.loads(demo.cli("sessions", "show", "--config", str(demo.config), "--json", "--", sid).stdout)
    assert again["records"] == len(doc["timeline"])


def test_unknown_session_is_refused(demo: Demo) -> None:
    run = demo.cli("sessions", "replay", "nope", "--config", str(demo.config))
    assert run.returncode == 1 and "no session" in run.stderr
    assert not [r for r in demo.records() if r.get("replayed_session") == "nope"]


def test_export_of_one_session_verifies_offline(demo: Demo, sessions: dict[str, Any], tmp_path: Path) -> None:
    sid = sessions["carol"]["session"]
    import time

    bundle = tmp_path / "carol.json"
    deadline = time.monotonic() + 30
    while True:  # the demo signs a checkpoint every 5 s; the bundle proves records against one
        run = demo.cli("sessions", "export", "--config", str(demo.config), "-o", str(bundle), "--", sid)
        assert run.returncode == 0, run.stderr
        doc = json.loads(bundle.read_text())
        held = [json.loads(r) for entry in doc["logs"] for r in entry.get("records", [])]
        if "newer records" not in run.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert held and all(r["session"] == sid for r in held)
    assert any(r["event"] == "policy.denied" for r in held)
    check = demo.cli("audit", "verify-bundle", str(bundle), "--public-key", str(demo.dir / "ledger.key.pub"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert any(r["event"] == "session.exported" and r.get("exported_session") == sid for r in demo.records())
