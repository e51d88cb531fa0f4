"""Legacy HTTP+SSE *clients* of the gateway (`/mcp/{server}/sse` + `/mcp/{server}/messages`), driven by the
official SDK's `sse_client` with a bearer token, through the shared gateway to real upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from mcp.client.client import Client
from mcp.client.sse import sse_client

from tests.support import gateway as gw
from tests.support.client import Recorder
from tests.support.oidc import Provider

pytestmark = pytest.mark.node


async def endpoint_of(stream: httpx.Response) -> tuple[str, AsyncIterator[str]]:
    """The `endpoint` event's URL, and the line iterator, which must stay referenced: dropping it
    closes the connection (httpcore closes a stream whose iterator is finalized)."""
    lines = stream.aiter_lines()
    async for line in lines:
        if line.startswith("data: "):
            return line[6:], lines
    raise AssertionError("no endpoint event")


@contextlib.asynccontextmanager
async def legacy_connect(gateway: gw.RunningGateway, server: str, token: str,
                         rec: Recorder | None = None) -> AsyncIterator[Client]:
    rec = rec or Recorder()
    transport = sse_client(f"{gateway.url(server)}/sse", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with Client(transport, mode="legacy", elicitation_callback=rec.elicit, sampling_callback=rec.sample,
                      logging_callback=rec.log) as client:
        yield client


async def test_initialize_list_tools_and_echo(gateway: gw.RunningGateway, token: str) -> None:
    async with legacy_connect(gateway, "everything", token) as client:
        assert client.protocol_version != "2026-07-28"
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
        result = await client.call_tool("echo", {"message": "from a legacy SSE client"})
        assert not result.is_error, result
        assert result.content[0].text == "Echo: from a legacy SSE client"


async def test_progress_reaches_a_legacy_sse_client(gateway: gw.RunningGateway, token: str) -> None:
    rec = Recorder()
    async with legacy_connect(gateway, "everything", token) as client:
        result = await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3},
                                        progress_callback=rec.on_progress)
        assert not result.is_error, result
        assert [p for p, _, _ in rec.progress] == [1, 2, 3]


async def test_elicitation_round_trip_over_stdio(gateway: gw.RunningGateway, token: str) -> None:
    rec = Recorder(elicit_content={"confirm": True, "reason": "checked by phone"})
    async with legacy_connect(gateway, "bank", token, rec) as client:
        confirmed = await client.call_tool("confirm_large_action", {"action": "wire transfer", "amount": 50000})
        assert confirmed.structured_content == {"action": "wire transfer", "amount": 50000.0,
                                                "decision": "approved", "reason": "checked by phone"}
        assert len(rec.elicitations) == 1 and "50,000.00" in rec.elicitations[0].message
        summary = await client.call_tool("summarize_customer", {"customer_id": "C-1003"})
        assert summary.structured_content is not None and summary.structured_content["model"] == "test-llm"
        assert len(rec.samplings) == 1


async def test_without_a_token_the_stream_is_refused(gateway: gw.RunningGateway) -> None:
    async with gateway.http(None) as http:
        response = await http.get(f"{gateway.url('everything')}/sse", headers={"Accept": "text/event-stream"})
        assert response.status_code == 401
        assert "www-authenticate" in response.headers


async def test_messages_are_bound_to_the_identity_that_opened_the_stream(
        gateway: gw.RunningGateway, provider: Provider, token: str) -> None:
    other = provider.token("mallory", ["staff"])
    async with gateway.http(token) as alice, gateway.http(other) as mallory:
        async with alice.stream("GET", f"{gateway.url('everything')}/sse",
                                headers={"Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            endpoint, _lines = await endpoint_of(stream)
            assert endpoint.startswith("/mcp/everything/messages?session_id=")
            body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "1"}}}
            hijack = await mallory.post(f"{gateway.base}{endpoint}", json=body)
            assert hijack.status_code == 403
            unknown = await alice.post(f"{gateway.url('everything')}/messages?session_id=nope", json=body)
            assert unknown.status_code == 404
            bad = await alice.post(f"{gateway.base}{endpoint}", content=b"{not json",
                                   headers={"Content-Type": "application/json"})
            assert bad.status_code == 400


async def test_stream_close_ends_the_session(gateway: gw.RunningGateway, token: str) -> None:
    async with gateway.http(token) as http:
        async with http.stream("GET", f"{gateway.url('everything')}/sse",
                               headers={"Accept": "text/event-stream"}) as stream:
            endpoint, lines = await endpoint_of(stream)
            ping = await http.post(f"{gateway.base}{endpoint}", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert ping.status_code == 202
            async for line in lines:
                if line.startswith("data: "):
                    assert json.loads(line[6:]) == {"jsonrpc": "2.0", "id": 1, "result": {}}
                    break
        # the client hung up: the gateway notices at once (not at the next ping) and ends the session
        body = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        for _ in range(50):
            after = await http.post(f"{gateway.base}{endpoint}", json=body)
            if after.status_code == 404:
                break
            await asyncio.sleep(0.1)
        assert after.status_code == 404


async def test_a_legacy_session_runs_at_most_a_hundred_calls_at_once(gateway: gw.RunningGateway, token: str) -> None:
    """A legacy POST is answered 202 at once and its call runs in the background, so no connection bounded how
    many one session had running: one took 8,000 in 36 s (DoS probe D4). Past 100 running, a POST gets 429."""
    async with gateway.http(token) as http:
        async with http.stream("GET", f"{gateway.url('everything')}/sse",
                               headers={"Accept": "text/event-stream"}) as stream:
            endpoint, _lines = await endpoint_of(stream)
            url = f"{gateway.base}{endpoint}"
            opened = await http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
            assert opened.status_code == 202
            await asyncio.sleep(0.5)
            await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            slow = {"name": "trigger-long-running-operation", "arguments": {"duration": 4, "steps": 2}}
            statuses = [(await http.post(url, json={"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                                    "params": slow})).status_code for i in range(1, 106)]
            assert statuses[:100] == [202] * 100 and set(statuses[100:]) == {429}, statuses
            # a notification is not a call: it still passes
            note = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
            assert note.status_code == 202
