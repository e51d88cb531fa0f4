"""What opening and holding a handshake session costs: one upstream round trip to open (the
`notifications/initialized` goes out without being waited for, yet the server still sees it before
anything else of the session), and little memory per idle session."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import pytest
import uvicorn

from ledgergate.errors import UpstreamError
from ledgergate.gateway.sessions import GatewaySession, SessionRegistry, TooManySessions
from ledgergate.gateway.transport.handshake import HelloCache
from ledgergate.principal import Principal
from ledgergate.upstream.base import ClientHello
from ledgergate.upstream.http import HttpHandshakeSession, HttpPool
from tests.support.upstream import read_body


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A handshake-era server that logs what arrives, in order, and answers `notifications/initialized`
    slowly (or with an error)."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.initialized_delay = 0.3
        self.initialized_status = 202
        self.sessions = 0

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        message = json.loads(body) if body else {}
        method = message.get("method") or scope["method"]
        self.arrived.append(method)
        if method == "initialize":
            self.sessions += 1
            answer = {"jsonrpc": "2.0", "id": message["id"], "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "up", "version": "1"}, "instructions": "x" * 4000}}
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"mcp-session-id", f"s{self.sessions}".encode())]})
            await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
            return
        if method == "notifications/initialized":
            await asyncio.sleep(self.initialized_delay)
            self.arrived.append("initialized answered")
            await send({"type": "http.response.start", "status": self.initialized_status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = {"jsonrpc": "2.0", "id": message.get("id"), "result": {"content": []}}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


@pytest.fixture()
async def upstream():
    app = Upstream()
    port = _port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    pool = HttpPool(f"http://127.0.0.1:{port}/mcp", {}, 5.0)
    yield app, pool
    await pool.close()
    srv.should_exit = True
    await task


async def _call(session: HttpHandshakeSession) -> list[dict[str, object]]:
    return [m async for m in session.call({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                           "params": {"name": "echo", "arguments": {}}})]


async def test_open_waits_for_initialize_only_and_the_server_sees_the_handshake_in_order(upstream) -> None:
    app, pool = upstream
    session = HttpHandshakeSession(pool, ClientHello())
    started = asyncio.get_running_loop().time()
    await session.open()
    assert asyncio.get_running_loop().time() - started < app.initialized_delay  # not waited for
    assert session.alive and session.server_hello["serverInfo"] == {"name": "up", "version": "1"}
    answers = await _call(session)  # sent at once: it must wait for the notification's answer
    assert answers[-1]["id"] == 7
    assert app.arrived == ["initialize", "notifications/initialized", "initialized answered", "tools/call"]
    await session.close()


async def test_a_failed_notification_fails_the_next_request_and_the_session_is_reopened(upstream) -> None:
    app, pool = upstream
    app.initialized_delay, app.initialized_status = 0.0, 500
    session = HttpHandshakeSession(pool, ClientHello())
    await session.open()
    with pytest.raises(UpstreamError):
        await _call(session)
    assert not session.alive  # the handshake never completed: the gateway session opens a new one
    assert "tools/call" not in app.arrived


async def test_sessions_share_the_servers_hello(upstream) -> None:
    app, pool = upstream
    app.initialized_delay = 0.0
    first, second = HttpHandshakeSession(pool, ClientHello()), HttpHandshakeSession(pool, ClientHello())
    await first.open()
    await second.open()
    assert first.session_id != second.session_id
    assert first.server_hello is second.server_hello  # one 4 KB hello, not one per session
    for s in (first, second):
        await s.close()


def test_equal_client_hellos_are_one_object_and_large_ones_are_not_kept() -> None:
    cache = HelloCache()
    params = {"protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "c", "version": "1"}}
    a, b = cache.get(params, "2025-11-25"), cache.get(json.loads(json.dumps(params)), "2025-11-25")
    assert a is b and a.capabilities == {"roots": {}} and a.client_info == {"name": "c", "version": "1"}
    other = cache.get({**params, "clientInfo": {"name": "d", "version": "1"}}, "2025-11-25")
    assert other is not a and other.client_info["name"] == "d"
    big = {**params, "capabilities": {"x": "y" * 10000}}
    assert cache.get(big, "2025-11-25") is not cache.get(big, "2025-11-25")


def _principal(subject: str) -> Principal:
    return Principal(issuer="https://idp", subject=subject, groups=frozenset({"staff"}))


async def test_an_idle_session_holds_no_collections_and_the_cap_is_counted_per_principal() -> None:
    registry = SessionRegistry(idle_timeout=10.0, max_per_principal=2)
    alice, bob = _principal("alice"), _principal("bob")
    one = registry.create("srv", alice, ClientHello(), None)  # type: ignore[arg-type]
    assert not hasattr(one, "__dict__")
    assert (one._streams, one._waiting, one._relayed, one._running, one._listeners, one._lock) == (None,) * 6
    assert sys.getsizeof(one) < 250
    registry.create("srv", alice, ClientHello(), None)  # type: ignore[arg-type]
    with pytest.raises(TooManySessions):
        registry.create("srv", alice, ClientHello(), None)  # type: ignore[arg-type]
    registry.create("srv", bob, ClientHello(), None)  # type: ignore[arg-type]
    await registry.remove(one.id)
    registry.create("srv", alice, ClientHello(), None)  # type: ignore[arg-type]
    expired = await registry.expire_idle(now=one.created + 60)
    assert len(expired) == 3 and len(registry) == 0
    registry.create("srv", alice, ClientHello(), None)  # type: ignore[arg-type]
    registry.create("srv", alice, ClientHello(), None)  # type: ignore[arg-type]


def test_a_session_makes_its_collections_when_used() -> None:
    session = GatewaySession("s", "srv", "p", ClientHello(), None)  # type: ignore[arg-type]
    session.relayed.add(1)
    assert 1 in session.relayed and session.new_stream().stream_no == 1 and len(session.streams) == 1
