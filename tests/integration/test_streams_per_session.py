"""A handshake session holds at most two event streams (GET) at once. Without a bound one identity's single
session held as many client connections as it opened GETs, `limits.max_client_connections` of them included,
and every other client was refused a connection. Real gateway, real server-everything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from tests.support import gateway as gw

ACCEPT = "application/json, text/event-stream"


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    r = await http.post(url, headers={"Accept": ACCEPT}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200, r.text
    headers = {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    sent = await http.post(url, headers={"Accept": ACCEPT, **headers},
                           json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert sent.status_code == 202, sent.text
    return headers


@asynccontextmanager
async def stream(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
    async with http.stream("GET", url, headers={"Accept": "text/event-stream", **headers}) as r:
        yield r


async def test_a_session_holds_at_most_two_event_streams_and_gets_one_back_when_one_closes(
        gateway: gw.RunningGateway, token: str) -> None:
    url = gateway.url("everything")
    async with gateway.http(token) as http:
        headers = await open_session(http, url)
        async with AsyncExitStack() as held:
            for _ in range(2):
                r = await held.enter_async_context(stream(http, url, headers))
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            third = await http.get(url, headers={"Accept": "text/event-stream", **headers})
            assert third.status_code == 409, third.text
            error = third.json()["error"]
            assert error["data"] == {"reason": "streams_per_session", "maxStreams": 2}, error
            # another session of the same identity is not affected
            other = await open_session(http, url)
            async with stream(http, url, other) as r:
                assert r.status_code == 200
        # both closed: the session may open a stream again (the gateway notices the hang-up first)
        for _ in range(50):
            async with stream(http, url, headers) as r:
                if r.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status_code == 200
    refused = [x for x in gateway.records() if x["event"] == "request.refused" and x.get("status") == 409
               and x.get("reason") == "streams_per_session"]
    assert len(refused) >= 1, "the refusal is recorded"
