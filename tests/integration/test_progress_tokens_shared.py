"""Progress tokens are the client's own, through a real gateway (`ledgergate serve`) in front of an upstream
session several clients share: server-everything over stdio (one child, one pipe for every call) and over
the legacy HTTP+SSE transport (one event stream for every call).

A principal's 2026-07-28 clients share one upstream session, and each picks its progress tokens on its
own. Two of them calling at once with the same `progressToken` saw each other's progress: the token went
to the server as it came, the server's progress for either was routed to whichever call registered the
token last, and the first call to end left the other's progress to nobody. Now the gateway gives the
server a token of its own for each call in flight and each client gets only its own call's progress,
under the token it sent, of the type it sent (an integer stays an integer).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.procs import NODE_BIN, Proc, start_everything

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "progress-test", "version": "1"}}
TOOL = "trigger-long-running-operation"
POLICIES: list[dict[str, Any]] = [{"name": "staff", "match": {"groups": ["staff"]}, "effect": "allow"}]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": TOOL}


@pytest.fixture(scope="module")
def everything_sse() -> Iterator[Proc]:
    proc = start_everything(mode="sse")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory, provider: Provider,
                   everything_sse: Proc) -> Iterator[gw.RunningGateway]:
    servers = {
        "stdio": {"command": [str(NODE_BIN / "mcp-server-everything"), "stdio"], "timeout": 60},
        "legacy": {"url": f"http://127.0.0.1:{everything_sse.port}/sse", "transport": "sse"},
    }
    running = gw.start(tmp_path_factory.mktemp("progress-gateway"), provider.issuer, servers, POLICIES)
    yield running
    running.stop()


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()]
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


async def long_call(http: httpx.AsyncClient, url: str, rpc_id: Any, token: Any, steps: int,
                    duration: float) -> list[dict[str, Any]]:
    body = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"duration": duration, "steps": steps},
                       "_meta": {**META, "progressToken": token}}}
    response = await http.post(url, headers=HEADERS, json=body)
    assert response.status_code == 200, response.text
    return events_of(response)


@pytest.mark.parametrize("server", ["stdio", "legacy"])
@pytest.mark.parametrize("token", ["same", 7], ids=["string", "integer"])
async def test_two_clients_with_the_same_token_each_see_only_their_own_progress(
        shared_gateway: gw.RunningGateway, provider: Provider, server: str, token: Any) -> None:
    """Alice's two clients call at once with one token: one with 3 steps, the other with 5. Each gets
    exactly its own steps (1..n, of total n), every one under the token it sent (same value, same type),
    and its own answer; the ledger keeps each progress under the call's own request and the client's token."""
    url = shared_gateway.url(server)
    before = len(shared_gateway.records())
    alice = provider.token("alice", ["staff"])
    async with shared_gateway.http(alice) as first, shared_gateway.http(alice) as second:
        # the shared upstream session (a stdio child, an SSE stream) is opened before the race, and
        # server-everything's `roots/list` 350 ms after its handshake is past (it would go to a call)
        assert (await first.post(url, headers={**HEADERS, "Mcp-Method": "tools/list"}, json={
            "jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": {"_meta": META}})).status_code == 200
        await asyncio.sleep(1.0)
        mine, theirs = await asyncio.gather(long_call(first, url, 1, token, 3, 1.5),
                                            long_call(second, url, 1, token, 5, 2.0))
    seen = [[e["params"] for e in events if e.get("method") == "notifications/progress"] for events in (mine, theirs)]
    # each client its own steps only (before: the second got both calls' progress, the first none)
    assert [[(p["progress"], p["total"]) for p in progress] for progress in seen] == [
        [(i, steps) for i in range(1, steps + 1)] for steps in (3, 5)], seen
    assert all(p["progressToken"] == token and type(p["progressToken"]) is type(token)
               for progress in seen for p in progress), seen
    for events, steps in ((mine, 3), (theirs, 5)):
        answer = events[-1]
        assert answer["id"] == 1 and f"Steps: {steps}" in answer["result"]["content"][0]["text"], answer

    # the ledger: each call's progress under that call's own request, with the client's token, none dropped
    every = shared_gateway.records()[before:]
    steps_of = {r["request_id"]: r["args"]["steps"] for r in every
                if r["event"] == "rpc.request" and r.get("target") == TOOL}
    assert sorted(steps_of.values()) == [3, 5], steps_of
    for request_id, steps in steps_of.items():
        notes = [r["message"]["params"] for r in every if r["event"] == "rpc.server_message"
                 and r.get("request_id") == request_id]
        assert notes == [{"progress": i, "total": steps, "progressToken": token} for i in range(1, steps + 1)], notes
        assert all(type(n["progressToken"]) is type(token) for n in notes)
    assert not [r for r in every if r.get("dropped")], "no progress was dropped"
    assert "ledgergate-progress-" not in json.dumps(every), "the gateway's own tokens stay between it and the server"
