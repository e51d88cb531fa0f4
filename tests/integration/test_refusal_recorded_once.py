"""A refused 2026-07-28 call is recorded once. A call refused before any upstream session was open (its target
or policy checked first, so a refusal opens nothing) got its `policy.denied` or `rpc.refused` record, and then
the transport's `request.refused` for the same refusal: one denial counted twice in the ledger, in SIEM
exports and in the metrics (DoS probe D7). A real gateway (`ledgergate serve`) before server-everything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ledgergate.store.ledger_store import open_ledger_store
from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.procs import Proc

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
POLICIES = [{"name": "echo-only", "match": {"groups": ["staff"], "tools": ["echo"]}, "effect": "allow"}]


def records(directory: Path) -> list[dict[str, Any]]:
    store = open_ledger_store("sqlite:///./data/ledgergate.db", directory)
    try:
        return [json.loads(r.record) for r in store.rows(store.logs()[0][0], 0, 1 << 30)]
    finally:
        store.close()


async def test_a_refused_modern_call_is_recorded_once(tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    running = await asyncio.to_thread(gw.start, tmp_path, idp.issuer,
                                      {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES)
    try:
        async with running.http(idp.token("alice", ["staff"])) as http:
            for rpc_id, (tool, args) in enumerate((("get-sum", {"a": 1, "b": 2}), ("echo", ["not", "an", "object"]))):
                r = await http.post(running.url("everything"), headers={
                    "Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                    "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}, json={
                    "jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                    "params": {"name": tool, "arguments": args, "_meta": META}})
                assert "error" in r.json(), r.text
    finally:
        await asyncio.to_thread(running.stop)
    events = [r["event"] for r in records(tmp_path) if r.get("principal", {}).get("subject") == "alice"]
    assert events.count("policy.denied") == 1 and events.count("rpc.refused") == 1, events
    assert "request.refused" not in events, events
