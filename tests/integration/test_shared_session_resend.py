"""A stateless (2026-07-28) client holds no session; the gateway keeps one shared upstream session per
principal for it. When the upstream restarted and no longer knows that session, the first call after
failed with "the upstream server lost the session; it is reopened on the next request" — the client's
problem, though it had no session to lose. The gateway now reopens its session and sends the call once
more, only when the upstream said (404, or the TypeScript SDK's 400 naming the session id) that it did
not run it, and records the resend (`rpc.resent`). A call the upstream may have run (its stream dropped
mid-call) is never sent twice; a handshake-era client's own session still fails as MCP says it must.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import gateway as gw
from tests.support.client import MODERN, connect
from tests.support.inprocess import scripted_upstream, serving
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import free_port, start_everything
from tests.support.scripted_handshake import ScriptedHandshake
from tests.support.upstream import read_body

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]


def records(directory: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(directory / "data" / "ledgergate.db") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT record FROM ledger_leaves ORDER BY seq")]


# ── the real server-everything, restarted between two calls of the real SDK client ─────────────────
@pytest.fixture(scope="module")
def restart_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def restart_gateway(tmp_path_factory: pytest.TempPathFactory, provider: Provider,
                    restart_port: int) -> Iterator[gw.RunningGateway]:
    servers = {"restarted": {"url": f"http://127.0.0.1:{restart_port}/mcp", "timeout": 20}}
    running = gw.start(tmp_path_factory.mktemp("resend-gateway"), provider.issuer, servers, POLICIES)
    yield running
    running.stop()


async def test_a_stateless_call_after_the_upstream_restarted_is_sent_again(
        restart_gateway: gw.RunningGateway, provider: Provider, restart_port: int) -> None:
    token = provider.token("restart-modern", ["staff"])
    server = start_everything(port=restart_port)
    try:
        async with connect(restart_gateway.url("restarted"), token, MODERN) as client:
            assert client.protocol_version == MODERN
            before = await client.call_tool("echo", {"message": "before"})
            assert before.content[0].text == "Echo: before", before
            server.stop()
            server = start_everything(port=restart_port)  # a new process: the gateway's session is unknown to it
            after = await client.call_tool("echo", {"message": "after the restart"})
            assert not after.is_error, after
            assert after.content[0].text == "Echo: after the restart", after
    finally:
        server.stop()
    mine = [r for r in records(restart_gateway.dir) if (r.get("principal") or {}).get("subject") == "restart-modern"]
    [resent] = [r for r in mine if r["event"] == "rpc.resent"]
    assert resent["reason"] == "upstream_session_lost" and resent["target"] == "echo", resent
    assert "lost the session" in resent["error"], resent
    same = [r for r in mine if r.get("request_id") == resent["request_id"]]
    assert [r["event"] for r in same] == ["rpc.request", "rpc.resent", "rpc.response"], same
    assert not same[-1].get("error"), same[-1]
    log = restart_gateway.log()
    assert "sent once more on a new session" in log, log[-3000:]
    assert "Traceback" not in log


async def test_a_handshake_client_still_learns_its_session_is_gone(
        restart_gateway: gw.RunningGateway, provider: Provider, restart_port: int) -> None:
    """Unchanged: a handshake-era client's own upstream session was lost, and MCP has it initialize again;
    nothing is resent for it."""
    token = provider.token("restart-legacy", ["staff"])
    server = start_everything(port=restart_port)
    try:
        async with connect(restart_gateway.url("restarted"), token, "legacy") as client:
            before = await client.call_tool("echo", {"message": "before"})
            assert before.content[0].text == "Echo: before", before
            server.stop()
            server = start_everything(port=restart_port)
            with pytest.raises(MCPError) as lost:
                await client.call_tool("echo", {"message": "after the restart"})
            assert "lost the session" in str(lost.value)
    finally:
        server.stop()
    mine = [r for r in records(restart_gateway.dir) if (r.get("principal") or {}).get("subject") == "restart-legacy"]
    assert not [r for r in mine if r["event"] == "rpc.resent"], mine


# ── a scripted upstream: a spec 404, and a call dropped mid-way that must not be sent twice ─────────
class Forgetful(ScriptedHandshake):
    """The scripted handshake server, which can forget its sessions (as a restart does: every later request
    on one is answered 404, as the transport spec says) and whose `crash` tool receives a call, begins its
    answer, then drops the connection and forgets the session: the call may have run."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: set[str] = set()
        self.forgotten: set[str] = set()
        #: messages answered 404 for their session id
        self.refused: list[dict[str, Any]] = []

    def forget_all(self) -> None:
        self.forgotten |= self.sessions

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        session = dict(scope["headers"]).get(b"mcp-session-id", b"").decode() or None
        body = await read_body(receive)
        message = json.loads(body or b"{}")
        if session is not None:
            self.sessions.add(session)
        if session in self.forgotten:
            self.received.append((session, message))
            self.refused.append(message)
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps({
                "jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "Session not found"}}).encode()})
            return
        if message.get("method") == "tools/call" and (message.get("params") or {}).get("name") == "crash":
            self.received.append((session, message))
            await self._sse_head(send)
            self.forget_all()
            raise RuntimeError("the scripted server crashes mid-call (on purpose)")
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def again() -> dict[str, Any]:
            return replay.pop() if replay else await receive()  # type: ignore[no-any-return]

        await super().__call__(scope, again, send)


def stateless_call(request_id: int, name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {
        "name": name, "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}}}


def answer_of(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()  # type: ignore[no-any-return]
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    answers = [e for e in events if "method" not in e]
    assert answers, response.text
    return answers[-1]  # type: ignore[no-any-return]


class Scripted:
    def __init__(self, upstream: Forgetful, base: str, directory: Path, token: str) -> None:
        self.upstream, self.base, self.directory, self.token = upstream, base, directory, token

    async def call(self, request_id: int, name: str) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(f"{self.base}/mcp/scripted", json=stateless_call(request_id, name), headers={
                "Authorization": f"Bearer {self.token}", "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name})
        return resp.status_code, answer_of(resp)


@pytest.fixture
async def scripted(tmp_path: Path, provider: Provider) -> AsyncIterator[Scripted]:
    upstream = Forgetful()
    try:
        async with scripted_upstream(upstream) as url, \
                serving(tmp_path, provider.issuer, {"scripted": {"url": url, "timeout": 20}}, POLICIES) as base:
            yield Scripted(upstream, base, tmp_path, provider.token("alice", ["staff"]))
    finally:
        upstream.release.set()


def _initializes(upstream: Forgetful) -> int:
    return sum(1 for _, m in upstream.received if m.get("method") == "initialize")


async def test_a_404_for_the_shared_session_reopens_it_and_sends_the_call_once_more(scripted: Scripted) -> None:
    status, first = await scripted.call(1, "one")
    assert status == 200 and first["result"]["content"][0]["text"] == "ok one", first
    assert _initializes(scripted.upstream) == 1
    scripted.upstream.forget_all()  # as a restart does
    status, second = await scripted.call(2, "two")
    assert status == 200 and second["result"]["content"][0]["text"] == "ok two", second
    assert [m["params"]["name"] for m in scripted.upstream.refused] == ["two"]  # refused once, unrun
    assert _initializes(scripted.upstream) == 2  # the shared session, reopened
    assert len(scripted.upstream.calls("two")) == 2  # the refused one and the one that ran
    every = records(scripted.directory)
    [resent] = [r for r in every if r["event"] == "rpc.resent"]
    assert resent["target"] == "two" and resent["reason"] == "upstream_session_lost", resent
    outcomes = [r for r in every if r["event"] == "rpc.response" and r.get("request_id") == resent["request_id"]]
    assert len(outcomes) == 1 and not outcomes[0].get("error"), outcomes


async def test_a_call_the_upstream_may_have_run_is_not_sent_twice(scripted: Scripted) -> None:
    status, first = await scripted.call(1, "one")
    assert status == 200, first
    status, crashed = await scripted.call(2, "crash")  # received, answer begun, connection dropped
    assert "error" in crashed, crashed
    assert "requestId" in crashed["error"].get("data", {}), crashed
    assert len(scripted.upstream.calls("crash")) == 1, scripted.upstream.received  # not sent again
    assert not scripted.upstream.refused
    every = records(scripted.directory)
    assert not [r for r in every if r["event"] == "rpc.resent"], every
    # the session is gone now: the next call is refused for it (404) and sent once more, as above
    status, after = await scripted.call(3, "after")
    assert status == 200 and after["result"]["content"][0]["text"] == "ok after", after
    assert len(scripted.upstream.calls("crash")) == 1
    assert [m["params"]["name"] for m in scripted.upstream.refused] == ["after"]
