"""The data path end to end: official SDK clients in every mode, through a real gateway
(`ledgergate serve`), to real upstreams of both eras and both transports:

* server-everything (Streamable HTTP, handshake era only, npm),
* the demo bank server (stdio child process, SDK),
* a stateless 2026-07-28 server (Streamable HTTP, SDK).

Tokens come from a real OpenID provider (oauth2-mock-server).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import os
import signal
import subprocess
import sys

import pytest
import yaml
from mcp.shared.exceptions import MCPError

from tests.support import gateway as gw
from tests.support.client import MODERN, MODES, Recorder, connect
from tests.support.oidc import Provider
from tests.support.integration import POLICIES
from tests.support.procs import free_port

pytestmark = pytest.mark.node


JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def raw_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """initialize over raw HTTP; the headers every later request of that session carries."""
    init = await http.post(url, headers=JSON_HEADERS, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    return {**JSON_HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}


TOOL_CASES = {
    # server: (tool, arguments, text it must show, structured key it must have or None)
    "everything": ("get-structured-content", {"location": "New York"}, "temperature", "temperature"),
    "bank": ("lookup_customer", {"customer_id": "C-1001"}, "Alice", "customer_id"),
    "stateless": ("add", {"a": 2, "b": 3}, "5", "sum"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("server", list(TOOL_CASES))
async def test_list_and_call_tools(gateway: gw.RunningGateway, token: str, mode: str, server: str) -> None:
    tool, args, text, key = TOOL_CASES[server]
    async with connect(gateway.url(server), token, mode) as client:
        expected_era = "legacy" if mode == "legacy" else MODERN
        assert (client.protocol_version == MODERN) == (expected_era == MODERN)
        names = {t.name for t in (await client.list_tools()).tools}
        assert tool in names
        result = await client.call_tool(tool, args)
        assert not result.is_error, result
        assert any(text in getattr(c, "text", "") for c in result.content) or text in json.dumps(
            result.structured_content)
        assert result.structured_content is not None and key in result.structured_content


@pytest.mark.parametrize("mode", MODES)
async def test_echo_text_through_reference_server(gateway: gw.RunningGateway, token: str, mode: str) -> None:
    async with connect(gateway.url("everything"), token, mode) as client:
        result = await client.call_tool("echo", {"message": "hello through the gateway"})
        assert result.content[0].text == "Echo: hello through the gateway"


@pytest.mark.parametrize("mode", MODES)
async def test_progress_from_long_running_operation(gateway: gw.RunningGateway, token: str, mode: str) -> None:
    rec = Recorder()
    async with connect(gateway.url("everything"), token, mode, rec) as client:
        result = await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 4},
                                        progress_callback=rec.on_progress)
        assert not result.is_error
        assert [p for p, _, _ in rec.progress] == [1, 2, 3, 4]
        assert all(total == 4 for _, total, _ in rec.progress)


@pytest.mark.parametrize("mode", MODES)
async def test_progress_over_stdio(gateway: gw.RunningGateway, token: str, mode: str) -> None:
    rec = Recorder()
    async with connect(gateway.url("bank"), token, mode, rec) as client:
        report = await client.call_tool("slow_report", {"steps": 3, "delay": 0.01}, progress_callback=rec.on_progress)
        assert report.structured_content is not None
        assert [(p, t) for p, t, _ in rec.progress] == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_prompts(gateway: gw.RunningGateway, token: str, mode: str) -> None:
    async with connect(gateway.url("everything"), token, mode) as client:
        resources = (await client.list_resources()).resources
        assert resources, "server-everything lists resources"
        content = await client.read_resource(resources[0].uri)
        assert content.contents and str(content.contents[0].uri) == str(resources[0].uri)
        templates = (await client.list_resource_templates()).resource_templates
        assert templates
        prompts = (await client.list_prompts()).prompts
        names = {p.name for p in prompts}
        assert "simple-prompt" in names
        prompt = await client.get_prompt("simple-prompt")
        assert prompt.messages
    async with connect(gateway.url("bank"), token, mode) as client:
        branches = await client.read_resource("bank://branches")
        assert "BR-100" in branches.contents[0].text
        review = await client.get_prompt("fraud_review", {"customer_id": "C-1002"})
        assert review.messages


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_and_sampling_round_trip_over_stdio(gateway: gw.RunningGateway, token: str,
                                                               mode: str) -> None:
    """Handshake clients get the server's requests relayed; 2026-07-28 clients get input-required results."""
    rec = Recorder(elicit_content={"confirm": True, "reason": "checked by phone"})
    async with connect(gateway.url("bank"), token, mode, rec) as client:
        confirmed = await client.call_tool("confirm_large_action", {"action": "wire transfer", "amount": 50000})
        assert confirmed.structured_content == {"action": "wire transfer", "amount": 50000.0,
                                                "decision": "approved", "reason": "checked by phone"}
        assert len(rec.elicitations) == 1 and "50,000.00" in rec.elicitations[0].message
        summary = await client.call_tool("summarize_customer", {"customer_id": "C-1003"})
        assert summary.structured_content is not None and summary.structured_content["model"] == "test-llm"
        assert len(rec.samplings) == 1


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_input_required_from_stateless_upstream(gateway: gw.RunningGateway, token: str, mode: str) -> None:
    """A 2026-07-28 upstream asks for input: passed through to modern clients, bridged for handshake ones."""
    rec = Recorder(elicit_content={"name": "Grace"})
    async with connect(gateway.url("stateless"), token, mode, rec) as client:
        result = await client.call_tool("ask_name", {"greeting": "Hi"})
        assert not result.is_error, result
        assert "Grace" in result.content[0].text
        assert len(rec.elicitations) == 1


async def test_session_delete_ends_the_session(gateway: gw.RunningGateway, token: str) -> None:
    async with gateway.http(token) as http:
        session_headers = await raw_session(http, gateway.url("everything"))
        ping = await http.post(gateway.url("everything"), headers=session_headers,
                               json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
        assert ping.status_code == 200 and ping.json()["result"] == {}
        deleted = await http.delete(gateway.url("everything"), headers=session_headers)
        assert deleted.status_code == 200
        after = await http.post(gateway.url("everything"), headers=session_headers,
                                json={"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert after.status_code == 404
        assert "session" in after.json()["error"]["message"]


async def test_session_is_bound_to_its_principal(gateway: gw.RunningGateway, provider: Provider,
                                                 token: str) -> None:
    other = provider.token("mallory", ["staff"])
    async with gateway.http(token) as alice, gateway.http(other) as mallory:
        session_headers = await raw_session(alice, gateway.url("everything"))
        hijack = await mallory.post(gateway.url("everything"), headers=session_headers,
                                    json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert hijack.status_code == 403
        assert "another identity" in hijack.json()["error"]["message"]


async def test_resume_a_broken_stream_with_last_event_id(gateway: gw.RunningGateway, token: str) -> None:
    async with gateway.http(token) as http:
        sh = await raw_session(http, gateway.url("everything"))
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 5},
                           "_meta": {"progressToken": "p7"}}}
        last_id = None
        seen = []
        async with http.stream("POST", gateway.url("everything"), headers=sh, json=call) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    last_id = line[4:]
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if len(seen) == 2:
                        break  # the client's connection drops here
        assert last_id is not None
        rest = []
        async with http.stream("GET", gateway.url("everything"),
                               headers={**sh, "Accept": "text/event-stream", "Last-Event-ID": last_id}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    rest.append(json.loads(line[6:]))
        progress = [m["params"]["progress"] for m in seen + rest if m.get("method") == "notifications/progress"]
        assert progress == [1, 2, 3, 4, 5]
        assert rest[-1]["id"] == 7 and "result" in rest[-1]


async def test_stdio_upstream_crash_gives_clear_error_then_recovers(gateway: gw.RunningGateway, token: str) -> None:
    async with connect(gateway.url("bank"), token, "legacy") as client:
        assert (await client.call_tool("lookup_customer", {"customer_id": "C-1001"})).structured_content
        children = subprocess.run(["pgrep", "-f", "-P", str(gateway.proc.proc.pid), "ledgergate.demo.bank_server"],
                                  capture_output=True, text=True).stdout.split()
        assert children, "the gateway runs the bank server as its child"
        slow = asyncio.create_task(client.call_tool("slow_report", {"steps": 50, "delay": 0.1}))
        await asyncio.sleep(0.5)
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        with pytest.raises(MCPError) as failure:
            await slow
        assert "upstream process 'bank' exited" in str(failure.value), str(failure.value)
        again = await client.call_tool("lookup_customer", {"customer_id": "C-1002"})
        assert again.structured_content and again.structured_content["customer_id"] == "C-1002"


async def test_client_authorization_is_never_forwarded(gateway: gw.RunningGateway, token: str) -> None:
    """The gateway builds upstream requests from config only: proved on the wire with an upstream that
    records the headers it receives."""
    captured: list[dict[str, str]] = []

    async def app(scope, receive, send):  # a minimal upstream that records headers and refuses
        if scope["type"] != "http":
            return
        captured.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"no"}}'})

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        # reuse the running gateway's issuer by pointing a second gateway at the capture server
        directory = gateway.dir.parent / f"capture-{port}"
        directory.mkdir()
        issuer = yaml.safe_load((gateway.dir / "ledgergate.yaml").read_text())["identity"]["oidc"][0]["issuer"]
        second = await asyncio.to_thread(gw.start, directory, issuer, {
            "capture": {"url": f"http://127.0.0.1:{port}/mcp", "headers": {"X-Upstream-Key": "from-config"}}},
            POLICIES)
        try:
            async with second.http(token) as http:
                await http.post(second.url("capture"), headers={"Accept": "application/json, text/event-stream",
                                                                "Content-Type": "application/json"},
                                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                                    "protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "1"}}})
        finally:
            await asyncio.to_thread(second.stop)
    finally:
        server.should_exit = True
        await task
    assert captured, "the gateway contacted the upstream"
    for headers in captured:
        assert "authorization" not in headers
        assert headers.get("x-upstream-key") == "from-config"
        assert token not in json.dumps(headers)


# ── bad input: precise errors, never a 500 or a traceback ──────────────────────

def _modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {**JSON_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name:
        headers["Mcp-Name"] = name
    return headers


def _modern_call(name: str, args: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": name, "arguments": args,
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}}


@pytest.mark.parametrize(("case", "status", "code_or_text"), [
    ("non_json", 400, -32700),
    ("wrong_content_type", 415, "Content-Type"),
    ("missing_accept", 406, "Accept"),
    ("unknown_server", 404, "unknown server"),
    ("header_body_mismatch", 400, -32020),
    ("oversized", 413, "exceeds"),
    ("unknown_session", 404, "session"),
    ("missing_session", 400, "Mcp-Session-Id"),
    ("batch", 400, "batch"),
    ("not_jsonrpc", 400, -32600),
    ("put", 405, "Method Not Allowed"),
    ("foreign_host", 403, "Host"),
    ("foreign_origin", 403, "Origin"),
    ("token_in_query", 401, "query string"),
])
async def test_bad_input_gets_a_precise_error(gateway: gw.RunningGateway, token: str, case: str, status: int,
                                              code_or_text: int | str) -> None:
    url = gateway.url("everything")
    async with gateway.http(token) as http:
        if case == "non_json":
            r = await http.post(url, headers=JSON_HEADERS, content=b"{not json")
        elif case == "wrong_content_type":
            r = await http.post(url, headers={**JSON_HEADERS, "Content-Type": "text/plain"}, content=b"{}")
        elif case == "missing_accept":
            r = await http.post(url, headers={"Content-Type": "application/json", "Accept": "text/html"},
                                content=b"{}")
        elif case == "unknown_server":
            r = await http.post(gateway.url("nope"), headers=JSON_HEADERS, json={})
        elif case == "header_body_mismatch":
            r = await http.post(url, headers=_modern_headers("tools/call", "get-env"),
                                json=_modern_call("echo", {"message": "x"}))
        elif case == "oversized":
            r = await http.post(url, headers=_modern_headers("tools/call", "echo"),
                                json=_modern_call("echo", {"message": "x" * 70000}))
        elif case == "unknown_session":
            r = await http.post(url, headers={**JSON_HEADERS, "Mcp-Session-Id": "bogus"},
                                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        elif case == "missing_session":
            r = await http.post(url, headers=JSON_HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        elif case == "batch":
            r = await http.post(url, headers=JSON_HEADERS, json=[{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
        elif case == "not_jsonrpc":
            r = await http.post(url, headers=JSON_HEADERS, json={"id": 1, "method": "ping"})
        elif case == "put":
            r = await http.put(url, headers=JSON_HEADERS, content=b"{}")
        elif case == "foreign_host":
            r = await http.post(url, headers={**JSON_HEADERS, "Host": "evil.example:80"}, json={})
        elif case == "foreign_origin":
            r = await http.post(url, headers={**JSON_HEADERS, "Origin": "http://evil.example"}, json={})
        elif case == "token_in_query":
            r = await http.post(url + "?access_token=abc", headers=JSON_HEADERS, json={})
        else:  # pragma: no cover
            raise AssertionError(case)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["jsonrpc"] == "2.0" and "error" in body, body
    if isinstance(code_or_text, int):
        assert body["error"]["code"] == code_or_text
    else:
        assert code_or_text.lower() in body["error"]["message"].lower()
    assert "Traceback" not in r.text


BAD_META = [{"progressToken": {"a": 1}}, {"progressToken": [1]}, {"progressToken": True}, "x", [1]]


@pytest.mark.parametrize("era", ["handshake", "modern"])
@pytest.mark.parametrize("meta", BAD_META, ids=["token-object", "token-array", "token-bool", "meta-string",
                                                 "meta-array"])
async def test_a_malformed_meta_is_invalid_params_and_the_session_goes_on(gateway: gw.RunningGateway, token: str,
                                                                          era: str, meta: Any) -> None:
    """`_meta` is an object and a progress token a string or a number (MCP's schema). Another type once
    reached the relay, where it failed as a 500 after the call's rpc.request record, with no outcome
    record after it; now it is the caller's error, before anything is forwarded."""
    url = gateway.url("everything")
    async with gateway.http(token) as http:
        if era == "handshake":
            headers = await raw_session(http, url)
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": "m"}, "_meta": meta}}
        else:
            headers = _modern_headers("tools/call", "echo")
            call = _modern_call("echo", {"message": "m"})
            call["params"]["_meta"] = {**call["params"]["_meta"], **meta} if isinstance(meta, dict) else meta
        r = await http.post(url, headers=headers, json=call)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == -32602 and "_meta" in r.json()["error"]["message"]
        call["params"]["_meta"] = {"progressToken": "p-1"} if era == "handshake" else _modern_call("echo", {})["params"]["_meta"]
        ok = await http.post(url, headers=headers, json=call)
        assert ok.status_code == 200 and "result" in ok.json(), ok.text


@pytest.mark.parametrize("server", ["everything", "bank"])
@pytest.mark.parametrize("ref", [{"a": 1}, [1], True, 1.5])
async def test_a_cancellation_naming_no_request_id_is_invalid_params(gateway: gw.RunningGateway, token: str,
                                                                     server: str, ref: Any) -> None:
    """`notifications/cancelled` with an object as `requestId` was looked up in the gateway's call tables and
    failed with a 500 (unhashable), on stdio sessions always and on HTTP ones during a call."""
    url = gateway.url(server)
    async with gateway.http(token) as http:
        headers = await raw_session(http, url)
        r = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                        "params": {"requestId": ref, "reason": "x"}})
        assert r.status_code == 400, r.text
        assert "requestId" in r.json()["error"]["message"] and "Traceback" not in r.text
        fine = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                           "params": {"requestId": 12345, "reason": "x"}})
        assert fine.status_code == 202, fine.text


@pytest.mark.parametrize("depth", [120, 125, 200])
async def test_the_deepest_message_the_gateway_admits_is_answered_by_an_sdk_server(gateway: gw.RunningGateway,
                                                                                   token: str, depth: int) -> None:
    """The official Python SDK's servers drop a request nested 200 deep without answering (the client then
    waits for the upstream timeout), so the gateway refuses anything deeper than 128 at its edge; whatever
    it admits, the SDK server over stdio answers promptly."""
    url = gateway.url("bank")
    deep: Any = "x"
    for _ in range(depth):
        deep = [deep]
    async with gateway.http(token) as http:
        headers = await raw_session(http, url)
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "lookup_customer", "arguments": {"customer_id": "C-1001", "extra": deep}}}
        r = await http.post(url, headers=headers, json=call, timeout=20)
    assert r.status_code in (200, 400), r.text[:300]
    body = r.json()
    assert body.get("id") in (3, None) and ("result" in body or "error" in body), body
    if depth > 125:  # with the message's own three levels, beyond 128
        assert r.status_code == 400 and "deeper than 128 levels" in body["error"]["message"], body


async def test_missing_token_is_401_with_resource_metadata(gateway: gw.RunningGateway) -> None:
    async with gateway.http(None) as http:
        r = await http.post(gateway.url("everything"), headers=JSON_HEADERS,
                            json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.status_code == 401
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert f'resource_metadata="{gateway.base}/.well-known/oauth-protected-resource/mcp/everything"' in challenge
        meta = await http.get(f"{gateway.base}/.well-known/oauth-protected-resource/mcp/everything")
        assert meta.status_code == 200
        assert meta.json()["resource"] == f"{gateway.base}/mcp/everything"


async def test_a_websocket_upgrade_is_answered_as_plain_http(gateway: gw.RunningGateway, token: str) -> None:
    """The gateway serves no WebSocket: an upgrade request gets an ordinary JSON-RPC error, never 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write((f"GET /mcp/everything HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                      "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        assert 400 <= status < 500, head
        length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                          if line.lower().startswith("content-length:")))
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
        assert body["jsonrpc"] == "2.0" and "error" in body
    finally:
        writer.close()


async def test_expect_100_continue_is_honoured(gateway: gw.RunningGateway, token: str) -> None:
    """A client that waits for `100 Continue` before sending its body (curl does, for large bodies)
    gets it, then its answer."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write((f"POST /mcp/everything HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      "Accept: application/json, text/event-stream\r\nExpect: 100-continue\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        writer.write(body)
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        assert head.startswith("HTTP/1.1 200"), head
        length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                          if line.lower().startswith("content-length:")))
        answer = json.loads(await asyncio.wait_for(reader.readexactly(length), 10))
        assert answer["id"] == 1 and "serverInfo" in answer["result"]
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(gateway: gw.RunningGateway, token: str) -> None:
    """HTTP/1.1 pipelining: two requests in one segment get two whole answers, in request order."""
    def request(n: int) -> bytes:
        body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": f"raw{n}", "version": "1"}}}).encode()
        return (f"POST /mcp/everything HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(request(1) + request(2))
        await writer.drain()
        ids = []
        for _ in range(2):
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
            assert head.startswith("HTTP/1.1 200"), head
            length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                              if line.lower().startswith("content-length:")))
            ids.append(json.loads(await asyncio.wait_for(reader.readexactly(length), 10))["id"])
        assert ids == [1, 2]
    finally:
        writer.close()


def test_gateway_log_has_no_traceback_or_token(gateway: gw.RunningGateway, token: str) -> None:
    log = gateway.log()
    assert token not in log
    assert "Traceback" not in log, log[-3000:]


async def test_subscriptions_listen_over_a_stateless_upstream(gateway: gw.RunningGateway, token: str) -> None:
    async with connect(gateway.url("stateless"), token, MODERN) as client:
        async with client.listen(tools_list_changed=True, resource_subscriptions=["test://greeting"]) as sub:
            await client.call_tool("touch", {})
            seen = []
            async with asyncio.timeout(10):
                async for event in sub:
                    seen.append(type(event).__name__)
                    if len(seen) == 2:
                        break
    assert set(seen) == {"ResourceUpdated", "ToolsListChanged"}


async def test_subscriptions_listen_over_a_handshake_upstream(gateway: gw.RunningGateway, token: str) -> None:
    """A 2026-07-28 client's listen becomes resources/subscribe on the principal's upstream session;
    server-everything's updates come back on the listen stream."""
    async with connect(gateway.url("everything"), token, MODERN) as client:
        uri = (await client.list_resources()).resources[0].uri
        async with client.listen(resource_subscriptions=[str(uri)]) as sub:
            assert str(uri) in (sub.honored.resource_subscriptions or [])
            await client.call_tool("toggle-subscriber-updates", {})
            try:
                async with asyncio.timeout(20):
                    async for event in sub:
                        assert type(event).__name__ == "ResourceUpdated" and str(event.uri) == str(uri)
                        break
            finally:
                await client.call_tool("toggle-subscriber-updates", {})


async def test_completion_through_the_gateway(gateway: gw.RunningGateway, token: str) -> None:
    import mcp_types as types

    for mode in ("legacy", MODERN):
        async with connect(gateway.url("everything"), token, mode) as client:
            result = await client.complete(types.PromptReference(type="ref/prompt", name="completable-prompt"),
                                           {"name": "department", "value": "E"})
            assert "Engineering" in result.completion.values


async def test_roots_round_trip(gateway: gw.RunningGateway, token: str) -> None:
    """server-everything asks the client for its roots; the gateway relays the request and the answer."""
    import mcp_types as types

    async def roots(_ctx: object) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        from mcp.client.client import Client
        from mcp.client.streamable_http import streamable_http_client

        async with Client(streamable_http_client(gateway.url("everything"), http_client=http), mode="legacy",
                          list_roots_callback=roots) as client:
            result = await client.call_tool("get-roots-list", {})
            text = " ".join(getattr(c, "text", "") for c in result.content)
            assert "file:///work/project" in text, text


async def test_cancellation_ends_the_call(gateway: gw.RunningGateway, token: str) -> None:
    """notifications/cancelled is forwarded (with the upstream's id for the request) and the call's stream
    ends promptly; the gateway stops relaying even if the server ignored the cancellation."""
    async with gateway.http(token) as http:
        sh = await raw_session(http, gateway.url("bank"))
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "slow_report", "arguments": {"steps": 50, "delay": 0.2},
                           "_meta": {"progressToken": "p9"}}}
        started = asyncio.get_running_loop().time()
        messages = []
        async with http.stream("POST", gateway.url("bank"), headers=sh, json=call) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    messages.append(json.loads(line[6:]))
                    if len(messages) == 1:
                        cancel = await http.post(gateway.url("bank"), headers=sh, json={
                            "jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": 9, "reason": "user pressed stop"}})
                        assert cancel.status_code == 202
        elapsed = asyncio.get_running_loop().time() - started
        # the session is still usable afterwards
        after = await http.post(gateway.url("bank"), headers=sh, json={
            "jsonrpc": "2.0", "id": 10, "method": "tools/call",
            "params": {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"}}})
        assert "C-1001" in after.text
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert len(progress) < 20 and elapsed < 6, (len(progress), elapsed)
    assert not any(m.get("id") == 9 and "result" in m for m in messages)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_server_requests_are_refused_unless_a_rule_allows_them(gateway: gw.RunningGateway,
                                                                     provider: Provider, mode: str) -> None:
    """The bank server asks the caller to confirm (elicitation); a caller whose policy names no
    server-to-client methods is never asked: the gateway answers the server with a refusal."""
    reader = provider.token("rita", ["readers"])
    rec = Recorder()
    async with connect(gateway.url("bank"), reader, mode, rec) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("confirm_large_action", {"action": "wire", "amount": 9000})
        assert "policy refuses elicitation/create" in str(refused.value)
        assert rec.elicitations == []
        assert (await client.call_tool("lookup_customer", {"customer_id": "C-1001"})).structured_content


async def test_api_key_through_the_gateway(gateway: gw.RunningGateway) -> None:
    """An API key made with the CLI works on its next request and is refused right after revoke."""
    config = str(gateway.dir / "ledgergate.yaml")
    created = subprocess.run([sys.executable, "-m", "ledgergate.cli", "apikeys", "create", "--name", "nightly-ci",
                              "--groups", "staff", "--expires", "1d", "--json", "--config", config],
                             cwd=gateway.dir, capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    assert key.startswith("lgk_") and key not in (gateway.dir / "data" / "ledgergate.db").read_bytes().decode(
        "latin-1")
    async with connect(gateway.url("everything"), key, "legacy") as client:
        assert (await client.call_tool("echo", {"message": "from ci"})).content[0].text == "Echo: from ci"
    revoked = subprocess.run([sys.executable, "-m", "ledgergate.cli", "apikeys", "revoke", "nightly-ci",
                              "--config", config], cwd=gateway.dir, capture_output=True, text=True)
    assert revoked.returncode == 0, revoked.stderr
    async with gateway.http(key) as http:
        r = await http.post(gateway.url("everything"), headers=JSON_HEADERS, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert r.status_code == 401 and "revoked" in r.headers["www-authenticate"]
