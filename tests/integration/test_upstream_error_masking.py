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
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inprocess import scripted_upstream, serving
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

    def __init__(self, status: int, refuse_initialize: bool = False, message: str | None = None) -> None:
        self.status = status
        self.refuse_initialize = refuse_initialize
        self.message = message or f"lookup failed for SSN {SSN}, card {CARD}"
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
            body["error"] = {"code": -32000, "message": self.message}
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


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
    async with scripted_upstream(app) as upstream:
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
    async with scripted_upstream(app) as upstream:
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


# ── the text of a failure is masked whole, then shortened ─────────────────────────────────────────────
#: what is left of the values when text is cut before it is masked (no detector matches a part)
PARTS = ("123-45-67", "23-45-6789", "45-67", "4111 1111", "1111 1111 11")
FILLER = "the ledger service could not find the customer record it was asked for, "


def words(n: int) -> str:
    """`n` characters of prose without a digit in it."""
    return (FILLER * (n // len(FILLER) + 1))[:n]


def assert_no_part(text: str) -> None:
    assert_masked(text)
    for part in PARTS:
        assert part not in text, text


def at(position: int) -> str:
    """An upstream's failure whose SSN starts at `position` of its message, then a card number."""
    lead = "lookup failed: " + words(position - len("lookup failed: ") - len(" SSN ")) + " SSN "
    assert len(lead) == position
    return f"{lead}{SSN} card {CARD}"


@pytest.mark.parametrize("message", [
    at(191),  # the old cut at 200 characters left "123-45-67"
    at(195) + " " + words(40),
    at(250) + " " + words(5_000),  # longer than any cut: masked whole, then shortened for the client
    at(32 * 1024 - len("upstream answered HTTP 500 ") - 5),  # straddles the bound on what is masked at all
], ids=["ssn-at-the-cut", "ssn-across-the-cut", "long", "at-the-bound"])
async def test_an_upstream_error_is_masked_whole_before_it_is_shortened(
        message: str, tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    """A value straddling the point where the text is shortened reached the client, the log and the ledger
    as "123-45-67" (a part no detector matches), which the caller's partial view ("***-**-6789") completes:
    the text is masked whole first. The client's message keeps the request id to quote."""
    app = FailingServer(500, message=message)
    async with scripted_upstream(app) as upstream, \
            serving(tmp_path, provider.issuer, {"failing": {"url": upstream}}, POLICY) as base:
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
    assert "HTTP 500 lookup failed: the ledger service" in error["message"]
    assert error["message"].endswith(f"quote request id {error['data']['requestId']} to support"), error
    assert_no_part(answer.text)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "lookup failed: the ledger service" in logged
    assert_no_part(logged)
    recorded = ledger_text(tmp_path)
    assert "lookup failed: the ledger service" in recorded
    assert_no_part(recorded)


def test_a_value_at_the_bound_of_what_is_masked_is_never_kept_in_part() -> None:
    """Past its bound a text is not masked whole: whatever straddles the bound, nothing of a value is kept
    (the filler has no digit, so any digit in the output is part of a value), and the cut is marked."""
    from ledgergate.masking.engine import Masker
    from ledgergate.masking.settings import MaskingSettings
    from ledgergate.upstream.base import CUT_MARK, mask_quoted

    masker = Masker.from_settings(MaskingSettings.model_validate({}))

    def mask(text: str) -> str:
        return str(masker.mask_for_ledger(text)[0])

    limit = 200
    for start in range(limit - 45, limit + 2):
        text = words(start - 4) + f"SSN {SSN} and card {CARD} " + words(300)
        for shown in (None, 120, 1000):
            quoted = mask_quoted(text, mask, shown, limit=limit)
            assert not any(c.isdigit() for c in quoted), (start, shown, quoted)
            assert quoted.endswith(CUT_MARK) and quoted.startswith(words(40))
    assert mask_quoted(f"SSN {SSN}", mask) == mask(f"SSN {SSN}")  # within the bound: masked whole, uncut


async def test_a_stdio_servers_long_stderr_line_is_masked_before_it_is_shortened(
        tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    """A stderr line was cut at 2,000 characters and masked after: an SSN across the cut reached the log
    as "123-45-67". Masked whole, then shortened: nothing of it is logged."""
    script = tmp_path / "long_stderr_server.py"
    line = at(1_991) + " " + words(50_000)
    script.write_text(
        "import sys\n"
        "from mcp.server.mcpserver import MCPServer\n"
        f"print({line!r}, file=sys.stderr, flush=True)\n"
        "server = MCPServer(name='long', version='1.0.0', log_level='WARNING')\n"
        "@server.tool()\n"
        "def noop() -> str:\n"
        "    return 'ok'\n"
        "server.run('stdio')\n")
    policy = [{**POLICY[0], "match": {"groups": ["staff"], "servers": ["long"]}}]
    with caplog.at_level(logging.INFO, logger="ledgergate"):
        async with serving(tmp_path, provider.issuer, {"long": {"command": [sys.executable, str(script)]}},
                           policy) as base:
            headers = {**HEADERS, "Authorization": f"Bearer {provider.token('alice', ['staff'])}"}
            async with httpx.AsyncClient(timeout=10) as http:
                opened = await initialize(http, f"{base}/mcp/long", headers)
                assert opened.status_code == 200, opened.text
            deadline = asyncio.get_running_loop().time() + 10
            while "lookup failed: the ledger" not in caplog.text and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)  # stderr is read beside the answers
    said = [r.getMessage() for r in caplog.records if "stderr" in r.getMessage()]
    assert any("lookup failed: the ledger" in m for m in said), caplog.text
    assert all(len(m) < 2_100 for m in said)  # still shortened for the log
    assert_no_part(caplog.text)


async def test_a_legacy_sse_client_gets_an_upstreams_initialize_failure_masked_and_recorded(
        tmp_path: Path, provider: Provider) -> None:
    """The legacy HTTP+SSE transport answered a failed upstream initialize with the upstream's words in the
    clear (Streamable HTTP masks them) and left no record of the refusal: masked, and recorded masked."""
    app = FailingServer(500, refuse_initialize=True)
    async with scripted_upstream(app) as upstream, \
            serving(tmp_path, provider.issuer, {"failing": {"url": upstream}}, POLICY) as base:
        auth = {"Authorization": f"Bearer {provider.token('alice', ['staff'])}"}
        async with httpx.AsyncClient(timeout=10, headers=auth) as http, \
                http.stream("GET", f"{base}/mcp/failing/sse", headers={"Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            endpoint = None
            async for got in lines:
                if got.startswith("data: "):
                    endpoint = got[6:]
                    break
            assert endpoint is not None
            posted = await http.post(f"{base}{endpoint}", json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}})
            assert posted.status_code == 202
            answer = None
            async for got in lines:
                if got.startswith("data: "):
                    answer = got[6:]
                    break
    assert answer is not None
    message = json.loads(answer)["error"]["message"]
    assert "HTTP 503" in message and "lookup failed for SSN" in message
    assert_masked(answer)
    recorded = ledger_text(tmp_path)
    refused = [json.loads(r) for r in recorded.splitlines() if '"request.refused"' in r]
    assert any("lookup failed for SSN" in r["error"] and r["server"] == "failing" for r in refused), recorded
    assert_masked(recorded)


async def test_a_stateless_clients_listen_stream_gets_an_upstreams_initialize_failure_masked(
        tmp_path: Path, provider: Provider) -> None:
    """A 2026-07-28 client whose first request is `subscriptions/listen`: the upstream session is opened once
    the SSE stream has begun, so its failure went out as the stream's event, past the endpoint's masking
    (transport/core.py `pump` and `fill` now show it through `Pipeline.masked_error`)."""
    app = FailingServer(500, refuse_initialize=True)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}
    async with scripted_upstream(app) as upstream, \
            serving(tmp_path, provider.issuer, {"failing": {"url": upstream}}, POLICY) as base:
        headers = {**HEADERS, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen",
                   "Authorization": f"Bearer {provider.token('alice', ['staff'])}"}
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(f"{base}/mcp/failing", headers=headers, json={
                "jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen",
                "params": {"notifications": {"toolsListChanged": True}, "_meta": meta}})
    assert "lookup failed for SSN" in answer.text
    assert_masked(answer.text)


class OddInitializeServer(FailingServer):
    """Answers `initialize` with HTTP 200 and a JSON-RPC answer of an odd shape."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(200)
        self.answer = answer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = json.loads(await read_body(receive) or b"{}")
        body = {"jsonrpc": "2.0", "id": request.get("id"), **self.answer}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"mcp-session-id", b"s")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.mark.parametrize("answer, said", [
    ({"error": "licence check failed"}, "neither a result nor an error object"),
    ({"error": {"code": -1, "message": 42}}, "neither a result nor an error object"),
    ({"result": ["not", "an", "object"]}, "a result that is not an object"),
    ({"result": "ok"}, "a result that is not an object"),
    ({}, "neither a result nor an error object"),
])
async def test_an_initialize_answer_of_an_odd_shape_is_a_precise_502_not_a_500(tmp_path: Path, provider: Provider,
                                                                             answer: dict[str, Any],
                                                                             said: str) -> None:
    """`(final or {}).get("error", {}).get(...)` raised AttributeError on `"error": "text"`, and a result that
    was not an object failed later: a 500 "internal gateway error" naming no server."""
    async with scripted_upstream(OddInitializeServer(answer)) as upstream, \
            serving(tmp_path, provider.issuer, {"failing": {"url": upstream}}, POLICY) as base, \
            httpx.AsyncClient(timeout=10) as http:
        r = await initialize(http, f"{base}/mcp/failing",
                             {**HEADERS, "Authorization": f"Bearer {provider.token('alice', ['staff'])}"})
    assert r.status_code == 502, r.text
    assert "initialize failed" in r.text and said in r.text
