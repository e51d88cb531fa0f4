"""Every upstream call and every upstream session opening ends within the server's `timeout`, over every
transport, with a precise answer the client gets and the ledger records.

A stdio server had no timeout at all: a child that never answered a call (a hung handler, an answer
under another id) left the client waiting and the ledger with an `rpc.request` and no `rpc.response`
for good; a line with a byte that is not UTF-8 was dropped (its call hung); a child that never answered
`initialize` hung the client, and its child and session slot stayed after the client gave up, until the
principal hit `max_sessions_per_principal`. Over Streamable HTTP, an upstream that sent an SSE keep-alive
comment every second reset the read timeout for ever, each such call holding one of
`limits.upstream_connections`. A legacy HTTP+SSE upstream's calls had no bound either.

The timeout is an idle one reset only by messages: a slow call that reports its progress outlives it,
keep-alives do not. These tests serve the real gateway in-process in front of a stdio server written
with the official SDK (`tests/servers/stalling_stdio_server.py`) and scripted HTTP upstreams (no packaged
server stalls on demand), and check the client's bounded answer, the ledger's `rpc.response` for the
call, and that a later call works.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ledgergate.app import Gateway, uvicorn_config
from ledgergate.config import load_config
from ledgergate.wire.sse import SSEParser
from tests.support.gateway import write_config
from tests.support.inprocess import running
from tests.support.oidc import Provider
from tests.support.procs import ROOT, free_port
from tests.support.upstream import read_body

pytestmark = pytest.mark.timeout(90)

STALLING = [sys.executable, str(ROOT / "tests" / "servers" / "stalling_stdio_server.py")]
TIMEOUT = 1.0
#: a stdio server's: its opening is bounded too, and a child written with the SDK takes a second or more to
#: start on a busy machine (a CI run is one)
STDIO_TIMEOUT = 5.0
#: the most a bounded answer may take beyond its timeout (stopping the child of a failed opening, a busy machine)
SLACK = 3.0
#: the client gives up after this: on the old code the calls hung, and the tests fail instead of hanging
CLIENT_PATIENCE = 20.0
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-06-18"}


def policy(*servers: str) -> list[dict[str, Any]]:
    return [{"name": "staff", "match": {"groups": ["staff"], "servers": list(servers)}, "effect": "allow"}]


@pytest.fixture
def provider() -> Any:
    p = Provider()
    yield p
    p.stop()


@asynccontextmanager
async def serving(directory: Path, issuer: str, servers: dict[str, Any], limits: dict[str, Any] | None = None,
                  ) -> AsyncIterator[str]:
    """The real gateway served in this interpreter (as `tests.support.inprocess.serving`), with `limits`."""
    port = free_port()
    extra = {"limits": limits} if limits else None
    gateway = Gateway(load_config(write_config(directory, port, issuer, servers, policy(*servers), extra)))
    async with running(uvicorn.Server(uvicorn_config(gateway.asgi, "127.0.0.1", port)), "the gateway"):
        yield f"http://127.0.0.1:{port}"


def records(directory: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(directory / "data" / "ledgergate.db") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT record FROM ledger_leaves ORDER BY rowid")]


def outcome(directory: Path, request_id: str) -> dict[str, Any]:
    """The `rpc.response` the ledger holds for the call (after its `rpc.request`)."""
    mine = [r for r in records(directory) if r.get("request_id") == request_id]
    assert [r["event"] for r in mine] == ["rpc.request", "rpc.response"], mine
    return mine[1]


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a response, JSON or SSE (the last event that is not a notification)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [json.loads(e.data) for e in SSEParser().feed(response.content + b"\n\n") if e.data.strip()]
        answers = [e for e in events if "method" not in e]
        assert answers, response.text
        return answers[-1]  # type: ignore[no-any-return]
    return response.json()  # type: ignore[no-any-return]


class Client:
    """A handshake-era client speaking raw JSON-RPC to one server through the gateway, with its time bounded."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {**HEADERS, "Authorization": f"Bearer {token}"}
        self.ids = iter(range(1, 1_000_000))

    async def post(self, body: dict[str, Any]) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        response = await self.http.post(self.url, headers=self.headers, json=body, timeout=CLIENT_PATIENCE)
        return response, time.monotonic() - start

    async def initialize(self) -> tuple[httpx.Response, float]:
        response, took = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        if response.status_code == 200:
            self.headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
            await self.http.post(self.url, headers=self.headers,
                                 json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response, took

    async def call(self, name: str, arguments: dict[str, Any] | None = None,
                   meta: dict[str, Any] | None = None) -> tuple[httpx.Response, float]:
        params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
        if meta:
            params["_meta"] = meta
        return await self.post({"jsonrpc": "2.0", "id": next(self.ids), "method": "tools/call", "params": params})


def assert_timed_out(response: httpx.Response, took: float, timeout: float, status: int, words: str) -> str:
    """The call's bounded answer: `status`, a message saying what happened; the gateway's request id."""
    assert timeout <= took < timeout + SLACK, f"answered after {took:.1f}s"
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"], error
    return str(error["data"]["requestId"])


def text_of(response: httpx.Response) -> str:
    answer = answer_of(response)
    assert "result" in answer, answer
    return "".join(c.get("text", "") for c in answer["result"]["content"])


# ── stdio ─────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("tool", ["hang", "wrong_id"])
async def test_a_stdio_call_never_answered_ends_at_the_timeout_recorded_and_the_server_serves_on(
        tool: str, tmp_path: Path, provider: Provider) -> None:
    servers = {"stall": {"command": STALLING, "timeout": STDIO_TIMEOUT}}
    async with serving(tmp_path, provider.issuer, servers) as base, httpx.AsyncClient() as http:
        client = Client(http, f"{base}/mcp/stall", provider.token("alice", ["staff"]))
        opened, _ = await client.initialize()
        assert opened.status_code == 200, opened.text
        response, took = await client.call(tool)
        request_id = assert_timed_out(response, took, STDIO_TIMEOUT, 504,
                                      f"sent nothing for this call within {STDIO_TIMEOUT:g}s")
        assert "upstream 'stall'" in response.json()["error"]["message"]
        later, _ = await client.call("echo", {"text": "still there"})  # the same child, the same session
        assert later.status_code == 200 and text_of(later) == "echo: still there", later.text
    recorded = outcome(tmp_path, request_id)
    assert "sent nothing for this call" in json.dumps(recorded["error"]), recorded


async def test_a_stdio_answer_with_a_byte_that_is_not_utf8_is_read_like_an_http_one(
        tmp_path: Path, provider: Provider) -> None:
    """Dropped as "non-JSON", the line left its call waiting; the HTTP path reads it with U+FFFD."""
    servers = {"stall": {"command": STALLING, "timeout": STDIO_TIMEOUT}}
    async with serving(tmp_path, provider.issuer, servers) as base, httpx.AsyncClient() as http:
        client = Client(http, f"{base}/mcp/stall", provider.token("alice", ["staff"]))
        assert (await client.initialize())[0].status_code == 200
        response, took = await client.call("bad_utf8")
        assert took < STDIO_TIMEOUT and response.status_code == 200, response.text
        assert text_of(response) == "bad \ufffd byte"


async def test_a_slow_stdio_call_that_reports_progress_outlives_the_timeout(tmp_path: Path,
                                                                             provider: Provider) -> None:
    """The timeout is an idle one: each progress notification shows the call is alive."""
    servers = {"stall": {"command": STALLING, "timeout": STDIO_TIMEOUT}}
    async with serving(tmp_path, provider.issuer, servers) as base, httpx.AsyncClient() as http:
        client = Client(http, f"{base}/mcp/stall", provider.token("alice", ["staff"]))
        assert (await client.initialize())[0].status_code == 200
        response, took = await client.call("slow", {"seconds": 2.2 * STDIO_TIMEOUT}, meta={"progressToken": "p-1"})
        assert took > 2 * STDIO_TIMEOUT and response.status_code == 200, (took, response.text)
        assert text_of(response).startswith("done after")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with suppress(FileNotFoundError):  # a zombie is stopped, only not yet reaped
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return False


async def test_a_stdio_server_that_never_answers_initialize_fails_the_opening_and_frees_its_slot(
        tmp_path: Path, provider: Provider) -> None:
    """Each attempt ends at the timeout with a 504 (recorded as a refusal), its child stopped and its
    session slot released: more attempts than `max_sessions_per_principal` never lock the principal out."""
    pids = tmp_path / "pids"
    stuck = {"command": STALLING, "timeout": TIMEOUT, "env": {"STALL_BEFORE_INIT": "1", "STALL_PID_FILE": str(pids)}}
    servers = {"stuck": stuck, "stall": {"command": STALLING, "timeout": STDIO_TIMEOUT}}
    token = provider.token("alice", ["staff"])
    async with serving(tmp_path, provider.issuer, servers, {"max_sessions_per_principal": 2}) as base, \
            httpx.AsyncClient() as http:
        for _ in range(3):
            response, took = await Client(http, f"{base}/mcp/stuck", token).initialize()
            assert TIMEOUT <= took < TIMEOUT + SLACK, f"answered after {took:.1f}s"
            assert response.status_code == 504, response.text
            assert f"did not complete initialize within {TIMEOUT:g}s" in response.json()["error"]["message"]
        started = [int(line) for line in pids.read_text().split()]
        assert len(started) == 3
        assert not [pid for pid in started if _running(pid)], "a child of a failed opening still runs"
        healthy = Client(http, f"{base}/mcp/stall", token)
        opened, _ = await healthy.initialize()
        assert opened.status_code == 200, opened.text
        later, _ = await healthy.call("echo", {"text": "in"})
        assert text_of(later) == "echo: in"
    refused = [r for r in records(tmp_path) if r["event"] == "request.refused" and r.get("server") == "stuck"]
    assert len(refused) == 3 and all(r["status"] == 504 for r in refused), refused


# ── Streamable HTTP: keep-alive comments reset nothing ────────────────────────────────────────────────
class PingingServer:
    """A handshake-era Streamable HTTP server: `ok` answers at once; `pinging` opens an SSE stream and sends
    keep-alives (comments, events without data) every 0.2 s and never answers; `slow` sends a progress
    notification every 0.3 s (keep-alives between) and answers after `seconds`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.pinging = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = json.loads(await read_body(receive) or b"{}")
        headers = [(b"mcp-session-id", b"upstream-session")]
        if scope["method"] != "POST" or "id" not in request:
            await send({"type": "http.response.start", "status": 202 if scope["method"] == "POST" else 405,
                        "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        params = request.get("params") or {}
        if request["method"] == "initialize":
            answer["result"] = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                "serverInfo": {"name": "pinging", "version": "1"}}
        elif request["method"] != "tools/call" or params.get("name") == "ok":
            answer["result"] = {"content": [{"type": "text", "text": "ok"}]}
        else:
            await self._stream(params, answer, headers, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*headers, (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    async def _stream(self, params: dict[str, Any], answer: dict[str, Any], headers: list[tuple[bytes, bytes]],
                      receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*headers, (b"content-type", b"text/event-stream")]})
        gone = asyncio.create_task(receive())  # http.disconnect once the gateway lets go
        keepalives = (b": ping\n\n", b"event: message\n\n", b"data:\n\n", b"event: ping\ndata: {}\n\n")
        slow = params.get("name") == "slow"
        seconds = float((params.get("arguments") or {}).get("seconds", 0))
        token = ((params.get("_meta") or {}).get("progressToken"))
        start, step = time.monotonic(), 0
        if not slow:
            self.pinging += 1
        try:
            for n in range(150):  # 30 s at most, whatever happens
                if gone.done():
                    return
                if slow and time.monotonic() - start >= seconds:
                    body = json.dumps({**answer, "result": {"content": [{"type": "text", "text": "done"}]}})
                    await send({"type": "http.response.body", "body": f"data: {body}\n\n".encode()})
                    await send({"type": "http.response.body", "body": b""})
                    return
                chunk = keepalives[n % len(keepalives)]
                if slow and n % 3 == 0 and token is not None:
                    step += 1
                    progress = {"jsonrpc": "2.0", "method": "notifications/progress",
                                "params": {"progressToken": token, "progress": step}}
                    chunk = f"event: message\ndata: {json.dumps(progress)}\n\n".encode()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await asyncio.sleep(0.1)
        finally:
            gone.cancel()
            if not slow:
                self.pinging -= 1


@asynccontextmanager
async def serve_upstream(app: Any) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="error", lifespan="off")
    async with running(uvicorn.Server(config), "the scripted upstream"):
        yield f"http://127.0.0.1:{app.port}"


async def test_keep_alives_do_not_keep_an_http_call_open_nor_hold_the_upstream_connections(
        tmp_path: Path, provider: Provider) -> None:
    """Two calls to a server that only pings, with `upstream_connections: 2`: both end at the timeout (each
    recorded), their connections come free, and another user's initialize and a call then work."""
    app = PingingServer()
    async with serve_upstream(app) as upstream, \
            serving(tmp_path, provider.issuer, {"pinging": {"url": f"{upstream}/mcp", "timeout": TIMEOUT}},
                    {"upstream_connections": 2, "upstream_pool_timeout": "2s"}) as base, \
            httpx.AsyncClient() as http:
        alice = Client(http, f"{base}/mcp/pinging", provider.token("alice", ["staff"]))
        assert (await alice.initialize())[0].status_code == 200
        answers = await asyncio.gather(alice.call("pinging"), alice.call("pinging"))
        ids = [assert_timed_out(response, took, TIMEOUT, 504, f"no message from the server for {TIMEOUT:g}s")
               for response, took in answers]
        bob = Client(http, f"{base}/mcp/pinging", provider.token("bob", ["staff"]))
        opened, took = await bob.initialize()
        assert opened.status_code == 200 and took < TIMEOUT, opened.text
        later, _ = await bob.call("ok")
        assert later.status_code == 200 and text_of(later) == "ok", later.text
    for request_id in ids:
        recorded = outcome(tmp_path, request_id)
        assert "no message from the server" in json.dumps(recorded["error"]), recorded


async def test_a_slow_http_call_that_reports_progress_outlives_the_timeout(tmp_path: Path,
                                                                            provider: Provider) -> None:
    app = PingingServer()
    async with serve_upstream(app) as upstream, \
            serving(tmp_path, provider.issuer, {"pinging": {"url": f"{upstream}/mcp", "timeout": TIMEOUT}}) as base, \
            httpx.AsyncClient() as http:
        client = Client(http, f"{base}/mcp/pinging", provider.token("alice", ["staff"]))
        assert (await client.initialize())[0].status_code == 200
        response, took = await client.call("slow", {"seconds": 2.5}, meta={"progressToken": "p-1"})
        assert took > 2 * TIMEOUT and response.status_code == 200, (took, response.text)
        assert text_of(response) == "done"


# ── legacy HTTP+SSE ───────────────────────────────────────────────────────────────────────────────────
class LegacySseServer:
    """A 2024-11-05 HTTP+SSE server: GET /sse opens the stream (the `endpoint` event, then keep-alives every
    0.2 s and the answers); POST /messages takes a message (202). `hang` is never answered, `ok` at once;
    with `answer_initialize=False`, neither is initialize."""

    def __init__(self, answer_initialize: bool = True) -> None:
        self.port = free_port()
        self.answer_initialize = answer_initialize
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await read_body(receive)  # then receive() waits for the disconnect
            await self._stream(receive, send)
            return
        message = json.loads(await read_body(receive) or b"{}")
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id")}
        if message.get("method") == "initialize" and self.answer_initialize:
            self.outbox.put_nowait({**answer, "result": {
                "protocolVersion": "2024-11-05", "capabilities": {"tools": {}},
                "serverInfo": {"name": "legacy", "version": "1"}}})
        elif message.get("method") == "tools/call" and (message.get("params") or {}).get("name") == "ok":
            self.outbox.put_nowait({**answer, "result": {"content": [{"type": "text", "text": "ok"}]}})

    async def _stream(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"event: endpoint\ndata: /messages\n\n", "more_body": True})
        gone = asyncio.create_task(receive())
        try:
            for _ in range(150):  # 30 s at most
                if gone.done():
                    return
                try:
                    message = await asyncio.wait_for(self.outbox.get(), 0.2)
                    chunk = f"event: message\ndata: {json.dumps(message)}\n\n".encode()
                except TimeoutError:
                    chunk = b": ping\n\n"
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            gone.cancel()


async def test_a_legacy_sse_call_never_answered_ends_at_the_timeout_recorded(tmp_path: Path,
                                                                           provider: Provider) -> None:
    app = LegacySseServer()
    servers = {"legacy": {"url": f"http://127.0.0.1:{app.port}/sse", "transport": "sse", "timeout": TIMEOUT}}
    async with serve_upstream(app), serving(tmp_path, provider.issuer, servers) as base, httpx.AsyncClient() as http:
        client = Client(http, f"{base}/mcp/legacy", provider.token("alice", ["staff"]))
        assert (await client.initialize())[0].status_code == 200
        response, took = await client.call("hang")
        request_id = assert_timed_out(response, took, TIMEOUT, 504, f"sent nothing for this call within {TIMEOUT:g}s")
        later, _ = await client.call("ok")
        assert later.status_code == 200 and text_of(later) == "ok", later.text
    assert "sent nothing for this call" in json.dumps(outcome(tmp_path, request_id)["error"])


async def test_a_legacy_sse_server_that_never_answers_initialize_fails_the_opening(tmp_path: Path,
                                                                                  provider: Provider) -> None:
    app = LegacySseServer(answer_initialize=False)
    servers = {"legacy": {"url": f"http://127.0.0.1:{app.port}/sse", "transport": "sse", "timeout": TIMEOUT}}
    async with serve_upstream(app), serving(tmp_path, provider.issuer, servers) as base, httpx.AsyncClient() as http:
        response, took = await Client(http, f"{base}/mcp/legacy", provider.token("alice", ["staff"])).initialize()
        assert TIMEOUT <= took < TIMEOUT + SLACK and response.status_code == 504, response.text
        assert f"did not complete the SSE handshake within {TIMEOUT:g}s" in response.json()["error"]["message"]


# ── what resets the HTTP read timeout ─────────────────────────────────────────────────────────────────
