"""A call's answer is the upstream's response to that call, and nothing else.

An upstream answering on a call's stream with a response to another id (a request it was never asked,
or a stale one) had that response taken as the call's answer: recorded in the ledger as the call's
outcome, sent to a client that never asked for it, and the real answer after it was lost. A scripted
handshake-era upstream (no packaged server misbehaves on demand) in front of the real gateway."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inprocess import scripted_upstream, serving
from tests.support.oidc import Provider
from tests.support.procs import free_port
from tests.support.upstream import read_body

pytestmark = pytest.mark.timeout(60)

#: the id the server answers under uninvited: its own text, which the log (not masked) must not quote (leak probe M1)
FOREIGN_ID = "card 4111111111111111 9999"
POLICY = [{"name": "staff", "match": {"groups": ["staff"], "servers": ["odd"]}, "effect": "allow"}]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-06-18"}


class ForeignAnswers:
    """Answers a tools/call over SSE with a response to another id first, then (unless `withhold`) its own."""

    def __init__(self, withhold: bool) -> None:
        self.withhold = withhold
        self.port = free_port()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = json.loads(await read_body(receive) or b"{}")
        if "id" not in message:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if message.get("method") == "initialize":
            body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "odd", "version": "1"}}}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"mcp-session-id", b"s")]})
            await send({"type": "http.response.body", "body": body})
            return
        events = [{"jsonrpc": "2.0", "id": FOREIGN_ID, "result": {"content": [{"type": "text", "text": "someone else's"}]}}]
        if not self.withhold:
            events.append({"jsonrpc": "2.0", "id": message["id"],
                           "result": {"content": [{"type": "text", "text": "the real answer"}]}})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events:
            await send({"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def outcomes(directory: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(directory / "data" / "ledgergate.db") as db:
        records = [json.loads(r[0]) for r in db.execute("SELECT record FROM ledger_leaves ORDER BY seq")]
    return [r for r in records if r["event"] == "rpc.response" and r.get("method") == "tools/call"]


@pytest.mark.parametrize("withhold", [False, True])
async def test_a_response_to_another_id_is_never_the_calls_answer(tmp_path: Path, provider: Provider,
                                                                  withhold: bool,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    async with scripted_upstream(ForeignAnswers(withhold)) as url, \
            serving(tmp_path, provider.issuer, {"odd": {"url": url}}, POLICY) as base, \
            httpx.AsyncClient(timeout=20, headers={**HEADERS,
                                                   "Authorization": f"Bearer {provider.token('alice', ['staff'])}"}) \
            as http:
        gw = f"{base}/mcp/odd"
        opened = await http.post(gw, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        await http.post(gw, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        r = await http.post(gw, headers=session, json={"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                                       "params": {"name": "lookup", "arguments": {}}})
    assert "someone else's" not in r.text and "9999" not in r.text, r.text
    assert "not asked on this stream" in caplog.text and "4111111111111111" not in caplog.text, caplog.text
    [outcome] = outcomes(tmp_path)
    assert "someone else's" not in json.dumps(outcome)
    if withhold:
        assert "closed the response stream before answering" in r.text and "error" in outcome, (r.text, outcome)
    else:
        assert "the real answer" in r.text and "the real answer" in json.dumps(outcome["response"])


@pytest.mark.node
async def test_sessions_recover_after_the_reference_server_restarts(tmp_path: Path, provider: Provider) -> None:
    """server-everything, restarted, answers an old session id with 400 "No valid session ID provided"
    (the spec says 404): every later call of every open gateway session failed with that 400 for good.
    Now the session is reopened, as after a 404; the call that met the lost session fails, the next runs."""
    import asyncio

    from mcp.shared.exceptions import MCPError

    from tests.support.client import connect
    from tests.support.procs import start_everything

    first = start_everything()
    port = first.port
    policy = [{"name": "staff", "match": {"groups": ["staff"], "servers": ["everything"]}, "effect": "allow"}]
    second = None
    try:
        async with serving(tmp_path, provider.issuer, {"everything": {"url": f"http://127.0.0.1:{port}/mcp"}},
                           policy) as base, \
                connect(f"{base}/mcp/everything", provider.token("alice", ["staff"]), "legacy") as client:
            assert "before" in str((await client.call_tool("echo", {"message": "before"})).content)
            first.stop()
            second = await asyncio.to_thread(start_everything, port)
            said = []
            for attempt in range(3):
                try:
                    said.append(str((await client.call_tool("echo", {"message": f"after {attempt}"})).content))
                    break
                except MCPError as exc:
                    said.append(f"error: {exc}")
            assert said[-1].startswith("[") and "after" in said[-1], said
            assert len(said) <= 2, said
    finally:
        first.stop()
        if second is not None:
            second.stop()
