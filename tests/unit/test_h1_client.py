"""The upstream HTTP/1.1 client against a real asyncio HTTP server (uvicorn): keep-alive reuse,
streamed bodies, timeouts that never retry, broken servers, and a stale kept-alive connection."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn

from ledgergate.upstream.h1 import H1Error, H1Pool, H1Timeout
from tests.support.upstream import read_body


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    def __init__(self) -> None:
        self.hits = 0
        self.connections: set[int] = set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        self.hits += 1
        self.connections.add(scope["client"][1])
        path = scope["path"]
        if path == "/slow":
            await asyncio.sleep(2)
        if path == "/busy":  # counts the requests being handled at once
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(0.2)
            self.in_flight -= 1
        if path == "/late-body":  # the head at once, the body after a pause
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await asyncio.sleep(0.3)
            await send({"type": "http.response.body", "body": b"late"})
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
                await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b""})
            return
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"echo":' + (body or b"null") + b"}"})


@pytest.fixture()
async def server():
    app = App()
    port = _port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off",
                                        timeout_keep_alive=1))
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    yield app, port
    srv.should_exit = True
    await task


async def test_reuses_one_keep_alive_connection(server) -> None:
    app, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/mcp")
    for i in range(5):
        r = await pool.request("POST", f"http://127.0.0.1:{port}/mcp", {"Content-Type": "application/json"},
                               str(i).encode(), 5)
        assert r.status == 200 and await r.read(5) == b'{"echo":%d}' % i
        r.release()
    assert app.hits == 5 and len(app.connections) == 1
    await pool.close()


async def test_streams_body_chunks_as_they_come(server) -> None:
    _, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    r = await pool.request("GET", f"http://127.0.0.1:{port}/stream", {}, None, 5)
    chunks = []
    while (c := await r.next_chunk(5)) is not None:
        chunks.append(c)
    r.release()
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and len(chunks) >= 2
    await pool.close()


async def test_timeout_is_reported_and_never_retried(server) -> None:
    app, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    warm = await pool.request("GET", f"http://127.0.0.1:{port}/x", {}, None, 5)
    await warm.read(5)
    warm.release()
    with pytest.raises(H1Timeout):
        await pool.request("GET", f"http://127.0.0.1:{port}/slow", {}, None, 0.3)
    assert app.hits == 2  # the slow request reached the server once, on the reused connection
    await pool.close()


async def test_stale_kept_alive_connection_is_replaced(server) -> None:
    app, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    r = await pool.request("GET", f"http://127.0.0.1:{port}/a", {}, None, 5)
    await r.read(5)
    r.release()
    await asyncio.sleep(1.6)  # the server closes idle keep-alive connections after 1 s
    r = await pool.request("GET", f"http://127.0.0.1:{port}/b", {}, None, 5)
    assert r.status == 200
    r.release()
    assert len(app.connections) == 2
    await pool.close()


async def test_refuses_other_origins_and_header_injection(server) -> None:
    _, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    with pytest.raises(H1Error):
        await pool.request("GET", "http://127.0.0.2:1/", {}, None, 1)
    for headers in ({"X": "a\r\nInjected: 1"}, {"X": "a\nInjected: 1"}, {"X": "a\rb"},
                    {"X\r\nInjected": "1"}, {"A": "ok", "X": "b\n"}, {"X": "\r", "Y": "\n"}):
        with pytest.raises(H1Error, match="line break"):
            await pool.request("GET", f"http://127.0.0.1:{port}/", headers, None, 1)
    await pool.close()


async def test_connection_refused_is_a_clear_error() -> None:
    pool = H1Pool(f"http://127.0.0.1:{_port()}/")
    with pytest.raises(H1Error, match="cannot connect"):
        await pool.request("GET", pool.origin.scheme + "://127.0.0.1:%d/" % pool.origin.port, {}, None, 1)


async def test_garbage_response_is_a_clear_error() -> None:
    async def handle(reader, writer):  # noqa: ANN001
        await reader.read(1000)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    with pytest.raises(H1Error):
        await pool.request("GET", f"http://127.0.0.1:{port}/", {}, None, 2)
    srv.close()
    await pool.close()


async def test_read_stops_at_the_limit(server) -> None:
    _, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    r = await pool.request("POST", f"http://127.0.0.1:{port}/x", {}, b"1" * 5000, 5)
    with pytest.raises(H1Error, match="exceeds 1000 bytes"):
        await r.read(5, limit=1000)
    r.release()
    await pool.close()


async def test_a_modern_servers_json_rpc_error_with_a_4xx_status_reaches_the_client() -> None:
    """A 2026-07-28 server answers a request it rejects with HTTP 400 and a JSON-RPC error body;
    the client must get that error (with its own id), not a generic "HTTP 400"."""
    from ledgergate.upstream.base import ClientHello
    from ledgergate.upstream.http import HttpModernSession, HttpPool

    async def app(scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json; charset=utf-8")]})
        await send({"type": "http.response.body",
                    "body": b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"unknown tool: nope"}}'})

    port = _port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    pool = HttpPool(f"http://127.0.0.1:{port}/mcp", {}, 5)
    try:
        session = HttpModernSession(pool, ClientHello(), {})
        request = {"jsonrpc": "2.0", "id": "client-7", "method": "tools/call", "params": {"name": "nope"}}
        messages = [m async for m in session.call(request)]
        assert messages == [{"jsonrpc": "2.0", "id": "client-7",
                             "error": {"code": -32602, "message": "unknown tool: nope"}}]
    finally:
        await pool.close()
        srv.should_exit = True
        await task


async def test_waiting_for_data_returns_with_the_first_body_bytes_and_times_out_without_them(server) -> None:
    _, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    url = f"http://127.0.0.1:{port}/late-body"
    loop = asyncio.get_running_loop()
    start = loop.time()
    r = await pool.request("GET", url, {}, None, 5)  # the head alone is enough
    assert loop.time() - start < 0.25 and not r._chunks  # noqa: SLF001
    assert await r.read(5) == b"late"
    r.release()
    start = loop.time()
    r = await pool.request("GET", url, {}, None, 5, wait_for_data=True)
    assert loop.time() - start >= 0.25 and r.status == 200 and r._chunks  # noqa: SLF001
    assert await r.read(5) == b"late"
    r.release()
    with pytest.raises(H1Timeout):
        await pool.request("GET", url, {}, None, 0.1, wait_for_data=True)
    await pool.close()


async def test_a_second_unasked_response_is_never_read_as_the_next_answer() -> None:
    """A server that answers one request twice must not have its extra answer handed to the
    next request on the same kept-alive connection."""
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while await reader.readuntil(b"\r\n\r\n"):
            requests += 1
            n = requests
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % n)
            if n == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
            await writer.drain()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    pool = H1Pool(f"http://127.0.0.1:{port}/")
    try:
        first = await pool.request("GET", f"http://127.0.0.1:{port}/", {}, None, 5)
        assert await first.read(5) == b"1"
        first.release()
        await asyncio.sleep(0.1)  # the extra answer arrives on the idle connection
        second = await pool.request("GET", f"http://127.0.0.1:{port}/", {}, None, 5)
        assert await second.read(5) == b"2"
        second.release()
    finally:
        await pool.close()
        srv.close()


class _CountingServer:
    """A real HTTP/1.1 server on asyncio streams that counts each request it reads whole,
    answering or misbehaving as told per connection and request."""

    def __init__(self, behave) -> None:  # noqa: ANN001 - behave(conn_no, req_no) -> "answer" | "close" | "garbage"
        self.behave = behave
        self.requests: list[tuple[int, int, bytes]] = []  # (connection, request on it, request line)
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_no, req_no = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                req_no += 1
                self.requests.append((conn_no, req_no, head.split(b"\r\n", 1)[0]))
                action = self.behave(conn_no, req_no)
                if action == "close":  # the request was read whole; the server may have acted on it
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                if action == "answer-then-close":
                    await writer.drain()
                    break
                if action == "answer-then-garbage":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_request_the_server_read_is_never_sent_again() -> None:
    """RFC 9110 §9.2.2: a kept-alive connection that closes after the request was written may
    have been acted on (a transfer ran); the POST reaches the server once and the caller is told."""
    srv = _CountingServer(lambda conn, req: "close" if req == 2 else "answer")
    async with srv as port:
        pool = H1Pool(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/mcp"
        first = await pool.request("POST", url, {}, b'{"warm":1}', 5)
        assert await first.read(5) == b"{}"
        first.release()
        with pytest.raises(H1Error, match="may have been processed") as info:
            await pool.request("POST", url, {}, b'{"transfer":100}', 5)
        assert "not sent again" in str(info.value)
        await asyncio.sleep(0.2)  # a retry, had there been one, would have reached the server by now
        posts = [r for r in srv.requests if r[2].startswith(b"POST")]
        assert len(posts) == 2, srv.requests  # the warm-up and the transfer, each exactly once
        assert srv.connections == 1
        await pool.close()


async def test_an_idle_connection_found_closed_before_writing_is_replaced() -> None:
    """The server closed the kept-alive connection while it sat idle, and the event loop has not
    yet run to notice: the pool checks the socket before reuse and sends on a fresh one."""
    import time

    for action in ("answer-then-close", "answer-then-garbage"):
        srv = _CountingServer(lambda conn, req, action=action: action if req == 1 else "answer")
        async with srv as port:
            pool = H1Pool(f"http://127.0.0.1:{port}/")
            url = f"http://127.0.0.1:{port}/mcp"
            first = await pool.request("POST", url, {}, b"1", 5)
            assert await first.read(5) == b"{}"
            first.release()
            time.sleep(0.2)  # blocks the loop: the close (or stray bytes) is on the socket, unseen
            second = await pool.request("POST", url, {}, b"2", 5)
            assert second.status == 200 and await second.read(5) == b"{}", action
            second.release()
            assert srv.connections == 2, action
            assert [(c, r) for c, r, _ in srv.requests] == [(1, 1), (2, 1)], (action, srv.requests)
            await pool.close()


async def test_the_connection_limit_makes_callers_wait_their_turn(server) -> None:
    """limits.upstream_connections reaches the pool: with 2, eight concurrent calls run two at a
    time on two connections, and all of them are answered."""
    from ledgergate.upstream.http import HttpPool

    app, port = server
    pool = HttpPool(f"http://127.0.0.1:{port}/busy", {}, 5, limit=2)

    async def call(i: int) -> bytes:
        r = await pool.post({"i": i}, {})
        try:
            return await r.read(5)
        finally:
            r.release()

    answers = await asyncio.gather(*(call(i) for i in range(8)))
    assert answers == [b'{"echo":{"i":%d}}' % i for i in range(8)]
    assert app.most_in_flight == 2 and len(app.connections) == 2, (app.most_in_flight, app.connections)
    await pool.close()


async def test_a_caller_waits_a_bounded_time_for_a_connection_and_nothing_is_sent(server) -> None:
    app, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/", max_connections=1, pool_timeout=0.3)
    holder = asyncio.create_task(pool.request("GET", f"http://127.0.0.1:{port}/slow", {}, None, 5))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(H1Error, match="connections to 127.0.0.1:%d are in use" % port) as info:
        await pool.request("POST", f"http://127.0.0.1:{port}/x", {}, b"{}", 5)
    assert 0.25 <= loop.time() - start < 1.5
    assert "not sent" in str(info.value) and not isinstance(info.value, H1Timeout)
    assert app.hits == 1  # only the slow request reached the server
    (await holder).release()
    # once the place is free again, the next call goes through on the same connection
    r = await pool.request("POST", f"http://127.0.0.1:{port}/x", {}, b"{}", 5)
    assert r.status == 200 and await r.read(5) == b'{"echo":{}}'
    r.release()
    assert len(app.connections) == 1
    await pool.close()


async def test_a_cancelled_waiter_passes_its_turn_on(server) -> None:
    _, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/", max_connections=1, pool_timeout=5)
    first = await pool.request("GET", f"http://127.0.0.1:{port}/x", {}, None, 5)
    await first.read(5)
    gone = asyncio.create_task(pool.request("GET", f"http://127.0.0.1:{port}/x", {}, None, 5))
    kept = asyncio.create_task(pool.request("GET", f"http://127.0.0.1:{port}/x", {}, None, 5))
    await asyncio.sleep(0.05)
    first.release()  # wakes `gone`, which is cancelled before it runs
    gone.cancel()
    r = await asyncio.wait_for(kept, 0.5)  # well before the server's 1 s keep-alive close would wake it
    assert r.status == 200
    r.release()
    await pool.close()


async def test_idle_keep_alive_connections_expire(server) -> None:
    app, port = server
    pool = H1Pool(f"http://127.0.0.1:{port}/", keepalive_expiry=0.3)
    r = await pool.request("GET", f"http://127.0.0.1:{port}/a", {}, None, 5)
    await r.read(5)
    r.release()
    assert pool.open_connections == 1
    await asyncio.sleep(0.6)  # the server would keep it for 1 s; the pool lets go first
    assert pool.open_connections == 0
    r = await pool.request("GET", f"http://127.0.0.1:{port}/b", {}, None, 5)
    await r.read(5)
    r.release()
    assert len(app.connections) == 2
    await pool.close()


def test_the_upstream_pool_settings_have_defaults_and_are_checked() -> None:
    from ledgergate.config import ConfigError, parse_config

    limits = parse_config("{}", env={}).limits
    assert limits.upstream_keepalive_expiry == 4.0 and limits.upstream_pool_timeout == 30.0
    s = parse_config("limits:\n  upstream_keepalive_expiry: 2s\n  upstream_pool_timeout: 1m\n", env={})
    assert (s.limits.upstream_keepalive_expiry, s.limits.upstream_pool_timeout) == (2.0, 60.0)
    with pytest.raises(ConfigError, match="upstream_keepalive_expiry"):
        parse_config("limits:\n  upstream_keepalive_expiry: 0\n", env={})
