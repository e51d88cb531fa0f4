"""What an upstream says beside its answers, when it fails or in its own log, is masked like what it
answers.

An MCP server that answers with an HTTP error status can put a JSON-RPC error in the body, and the
gateway quotes its message ("upstream answered HTTP 500 ...") so the client knows what went wrong;
a stdio server's stderr goes to the gateway's log. Neither passes the response stages (there is no
answer to mask), yet both come from the same server and can carry the same account numbers. These
tests serve the real gateway in-process in front of a scripted handshake-era server (no packaged
server fails on demand) and a stdio server written with the official SDK that logs what it is asked,
and look at what the client, the gateway's log and the ledger got.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.support.inprocess import running, serving
from tests.support.oidc import Provider
from tests.support.procs import free_port
from tests.support.upstream import read_body

pytestmark = pytest.mark.timeout(60)

SSN, CARD = "123-45-6789", "4111 1111 1111 1111"
RAW = (SSN, CARD, "4111111111111111")
POLICY = [{"name": "staff", "match": {"groups": ["staff"], "servers": ["failing"]}, "effect": "allow",
           "mask": "standard"}]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-06-18"}


class FailingServer:
    """Answers initialize (or refuses it), then answers every tools/call with `status` and a JSON-RPC
    error whose message carries an SSN and a card number."""

    def __init__(self, status: int, refuse_initialize: bool = False) -> None:
        self.status = status
        self.refuse_initialize = refuse_initialize
        self.port = free_port()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = json.loads(await read_body(receive) or b"{}")
        headers = [(b"content-type", b"application/json"), (b"mcp-session-id", b"upstream-session")]
        if "id" not in request:  # notifications
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        status, body = 200, {"jsonrpc": "2.0", "id": request["id"]}
        if request.get("method") == "initialize" and not self.refuse_initialize:
            body["result"] = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                              "serverInfo": {"name": "failing", "version": "1"}}
        else:
            status = 503 if request.get("method") == "initialize" else self.status
            body["error"] = {"code": -32000, "message": f"lookup failed for SSN {SSN}, card {CARD}"}
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@asynccontextmanager
async def serve_upstream(app: FailingServer) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="error", lifespan="off")
    async with running(uvicorn.Server(config), "the scripted upstream"):
        yield f"http://127.0.0.1:{app.port}/mcp"


@pytest.fixture
def provider() -> Any:
    p = Provider()
    yield p
    p.stop()


def ledger_text(directory: Path) -> str:
    with sqlite3.connect(directory / "data" / "ledgergate.db") as db:
        return "\n".join(r[0].decode() for r in db.execute("SELECT record FROM ledger_leaves"))


def assert_masked(text: str) -> None:
    for raw in RAW:
        assert raw not in text, text


async def initialize(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> httpx.Response:
    return await http.post(url, headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})


@pytest.mark.parametrize("status", [400, 500, 503])
async def test_an_upstream_http_error_on_a_call_is_masked_for_client_log_and_ledger(
        status: int, tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    app = FailingServer(status)
    async with serve_upstream(app) as upstream:
        async with serving(tmp_path, provider.issuer, {"failing": {"url": upstream}}, POLICY) as base:
            url = f"{base}/mcp/failing"
            headers = {**HEADERS, "Authorization": f"Bearer {provider.token('alice', ['staff'])}"}
            async with httpx.AsyncClient(timeout=10) as http:
                opened = await initialize(http, url, headers)
                assert opened.status_code == 200, opened.text
                headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
                with caplog.at_level(logging.WARNING, logger="ledgergate"):
                    answer = await http.post(url, headers=headers, json={
                        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "lookup", "arguments": {"customer": "c-1"}}})
        error = answer.json()["error"]
        assert answer.status_code == 502
        # still useful: the status, the upstream's words around the values, the request id to quote
        assert f"HTTP {status}" in error["message"] and "lookup failed for SSN" in error["message"]
        assert error["data"]["requestId"] in error["message"]
        assert_masked(answer.text)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "lookup failed for SSN" in logged  # the failure is logged, masked
        assert_masked(logged)
        recorded = ledger_text(tmp_path)
        assert "lookup failed for SSN" in recorded
        assert_masked(recorded)


async def test_an_upstream_that_refuses_initialize_is_masked_for_the_client(tmp_path: Path,
                                                                            provider: Provider) -> None:
    app = FailingServer(500, refuse_initialize=True)
    async with serve_upstream(app) as upstream:
        async with serving(tmp_path, provider.issuer, {"failing": {"url": upstream}}, POLICY) as base:
            headers = {**HEADERS, "Authorization": f"Bearer {provider.token('alice', ['staff'])}"}
            async with httpx.AsyncClient(timeout=10) as http:
                refused = await initialize(http, f"{base}/mcp/failing", headers)
        assert refused.status_code == 502
        message = refused.json()["error"]["message"]
        assert "HTTP 503" in message and "lookup failed for SSN" in message
        assert_masked(refused.text)
        assert_masked(ledger_text(tmp_path))


async def test_a_stdio_servers_stderr_reaches_the_log_masked(tmp_path: Path, provider: Provider,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The gateway logs what a stdio server writes to stderr (its own log), and servers log what they are
    asked: the lines reach the gateway's log masked, and the call still answers."""
    from tests.support.client import connect

    argv = [sys.executable, str(Path(__file__).resolve().parents[1] / "servers" / "chatty_stdio_server.py")]
    policy = [{**POLICY[0], "match": {"groups": ["staff"], "servers": ["chatty"]}}]
    with caplog.at_level(logging.INFO, logger="ledgergate"):
        async with serving(tmp_path, provider.issuer, {"chatty": {"command": argv}}, policy) as base, \
                connect(f"{base}/mcp/chatty", provider.token("alice", ["staff"]), "legacy") as client:
            result = await client.call_tool("lookup", {"customer": "C-1001"})
            assert not result.is_error and "found C-1001" in str(result.content)
            deadline = asyncio.get_running_loop().time() + 10
            while "lookup for C-1001" not in caplog.text and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)  # stderr is read beside the answer
    said = [r.getMessage() for r in caplog.records if "stderr" in r.getMessage() and "lookup for" in r.getMessage()]
    assert said, caplog.text
    assert_masked("\n".join(said))
    assert_masked(caplog.text)
