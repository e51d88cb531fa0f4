"""`notifications/cancelled` from a handshake-era client, through a real gateway.

The gateway numbers requests afresh towards each upstream session, so a client's `requestId` means
nothing upstream. A cancellation naming no call of this client's in flight was sent on as it came,
read in the gateway's numbering, and cancelled whichever call the upstream knew by that number
(server-everything, the demo bank server over stdio, a scripted server that shows the wire); and a
call the client did cancel was held until the upstream timeout when it had no first message yet or
would be answered as plain JSON, then recorded as an upstream timeout.

Now a cancellation is sent on only with the upstream id of a call that client (its session) has in
flight, and recorded as dropped otherwise; a call its client cancels ends after the grace period
wherever it waits, recorded as cancelled and answered -32800.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.inprocess import scripted_upstream, serving
from tests.support.oidc import Provider
from tests.support.scripted_handshake import ScriptedHandshake

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]

JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
POLICY = [{"name": "staff", "match": {"groups": ["staff"]}, "effect": "allow"}]
#: well inside the server `timeout` the scripted server runs with (30 s): the call ended for the
#: cancellation, not for the timeout
PROMPT = 6.0


def records(directory: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(directory / "data" / "ledgergate.db") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT record FROM ledger_leaves ORDER BY seq")]


def cancel(request_id: Any, reason: str = "test") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id,
                                                                             "reason": reason}}


def call(request_id: Any, name: str, arguments: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    init = await http.post(url, headers=JSON_HEADERS, json={
        "jsonrpc": "2.0", "id": "init", "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200, init.text
    headers = {**JSON_HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether it came as JSON or as the last event of an SSE stream."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()  # type: ignore[no-any-return]
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    answers = [e for e in events if "method" not in e]
    assert answers, response.text
    return answers[-1]  # type: ignore[no-any-return]


class Scripted:
    def __init__(self, upstream: ScriptedHandshake, base: str, directory: Path, token: str) -> None:
        self.upstream, self.base, self.directory, self.token = upstream, base, directory, token

    @property
    def url(self) -> str:
        return f"{self.base}/mcp/scripted"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(30, read=20),
                                 headers={"Authorization": f"Bearer {self.token}"})


@pytest.fixture
async def scripted(tmp_path: Path, provider: Provider) -> AsyncIterator[Scripted]:
    upstream = ScriptedHandshake(late_seconds=2.0)
    try:
        async with scripted_upstream(upstream) as url, \
                serving(tmp_path, provider.issuer, {"scripted": {"url": url, "timeout": 30}}, POLICY) as base:
            try:
                yield Scripted(upstream, base, tmp_path, provider.token("alice", ["staff"]))
            finally:
                upstream.release.set()  # what it still holds ends now, so neither server waits on it
    finally:
        upstream.release.set()


# ── a cancellation naming no call of this client's is dropped, recorded, never forwarded ──
async def test_a_cancellation_naming_no_call_of_the_clients_is_dropped_and_recorded(scripted: Scripted) -> None:
    """p08: with call "A" in flight (upstream id 1), a cancellation of `1`, an id the client never used,
    went upstream as it came and cancelled "A". Now nothing reaches the upstream, "A" is answered, and
    each dropped cancellation is in the ledger as dropped; so is one sent while nothing is in flight
    (the session then kept no id map, and the cancellation went out as it came)."""
    async with scripted.http() as http:
        headers = await open_session(http, scripted.url)
        running = asyncio.create_task(http.post(scripted.url, headers=headers, json=call("A", "late")))
        await asyncio.sleep(0.5)
        for ref in (1, "1", "B"):
            r = await http.post(scripted.url, headers=headers, json=cancel(ref))
            assert r.status_code == 202, r.text
        answered = answer_of(await running)
        idle = await http.post(scripted.url, headers=headers, json=cancel(1))
        assert idle.status_code == 202
    assert answered["id"] == "A" and answered["result"]["content"][0]["text"] == "late", answered
    assert scripted.upstream.cancellations() == [], "a cancellation naming no call of the client's went upstream"
    notes = [r for r in records(scripted.directory) if r["event"] == "rpc.notification"
             and r["message"].get("method") == "notifications/cancelled"]
    assert [r["message"]["params"]["requestId"] for r in notes] == [1, "1", "B", 1]
    assert all(r.get("dropped") == "not_in_flight" and r.get("forwarded") is False for r in notes), notes


async def test_a_client_cannot_cancel_another_clients_call(scripted: Scripted) -> None:
    """Ids are the client's own: a second session (same identity) cancelling "A" ends only its own "A",
    upstream under its own session and its own upstream id; the first session's "A" is answered."""
    async with scripted.http() as http:
        first = await open_session(http, scripted.url)
        second = await open_session(http, scripted.url)
        theirs = asyncio.create_task(http.post(scripted.url, headers=first, json=call("A", "late")))
        await asyncio.sleep(0.3)
        nothing = await http.post(scripted.url, headers=second, json=cancel("A"))  # the second has no "A" yet
        assert nothing.status_code == 202
        mine = asyncio.create_task(http.post(scripted.url, headers=second, json=call("A", "late")))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert (await http.post(scripted.url, headers=second, json=cancel("A"))).status_code == 202
        ended = answer_of(await mine)
        elapsed = time.monotonic() - started
        kept = answer_of(await theirs)
    assert kept["result"]["content"][0]["text"] == "late", kept
    assert ended["error"]["code"] == -32800 and elapsed < PROMPT, (ended, elapsed)
    [(session, sent)] = scripted.upstream.cancellations()
    [(first_session, _), (second_session, second_call)] = scripted.upstream.calls("late")
    assert session == second_session != first_session
    assert sent["params"]["requestId"] == second_call["id"], (sent, second_call)
    notes = [r for r in records(scripted.directory) if r["event"] == "rpc.notification"
             and r["message"].get("method") == "notifications/cancelled"]
    assert notes[0].get("dropped") == "not_in_flight"
    assert "dropped" not in notes[1] and notes[1]["forwarded"] is True and notes[1]["cancels"].startswith("req_")


# ── a call its client cancels ends after the grace period, recorded as cancelled ──
@pytest.mark.parametrize("tool", ["slow", "late"])
@pytest.mark.parametrize("accept", ["application/json, text/event-stream", "application/json"])
async def test_a_cancelled_call_without_a_first_message_ends_and_is_recorded_as_cancelled(
        scripted: Scripted, tool: str, accept: str) -> None:
    """`slow` sends nothing (no response head), `late` only an SSE head: the call waits for the upstream's
    first message, in the request's own handler (plain JSON, or SSE not begun). It was never registered
    for a cancellation, so it waited for the server `timeout` and was recorded as an upstream failure.
    Now it ends promptly after the client's cancellation: -32800, recorded as cancelled."""
    async with scripted.http() as http:
        headers = {**await open_session(http, scripted.url), "Accept": accept}
        running = asyncio.create_task(http.post(scripted.url, headers=headers, json=call(7, tool)))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        assert (await http.post(scripted.url, headers=headers, json=cancel(7, "user pressed stop"))).status_code == 202
        response = await running
        elapsed = time.monotonic() - started
        after = await http.post(scripted.url, headers=headers, json=call(8, "echo"))
    answered = answer_of(response)
    assert response.status_code == 200 and answered["id"] == 7 and answered["error"]["code"] == -32800, response.text
    assert elapsed < PROMPT, elapsed
    assert "ok echo" in after.text, "the session serves on"
    [(_, sent)] = scripted.upstream.cancellations()
    [(_, upstream_call)] = scripted.upstream.calls(tool)
    assert sent["params"]["requestId"] == upstream_call["id"]
    every = records(scripted.directory)
    [request] = [r for r in every if r["event"] == "rpc.request" and r.get("target") == tool]
    outcomes = [r for r in every if r["event"] == "rpc.response" and r["request_id"] == request["request_id"]]
    assert len(outcomes) == 1 and outcomes[0].get("cancelled") is True, outcomes
    assert "timeout" not in json.dumps(outcomes[0]) and "sent nothing" not in json.dumps(outcomes[0])
    [note] = [r for r in every if r["event"] == "rpc.notification"
              and r["message"].get("method") == "notifications/cancelled"]
    assert note["cancels"] == request["request_id"] and note["forwarded"] is True


async def test_a_legacy_sse_clients_cancelled_call_ends_and_is_recorded_as_cancelled(scripted: Scripted) -> None:
    """The legacy HTTP+SSE transport runs each call in a task of its own, which was never registered for a
    cancellation either: the call now ends after the grace period there too, its answer -32800 on the
    session's event stream."""
    async with scripted.http() as http, http.stream("GET", f"{scripted.url}/sse",
                                                    headers={"Accept": "text/event-stream"}) as stream:
        lines = stream.aiter_lines()
        endpoint = ""
        async for line in lines:
            if line.startswith("data: "):
                endpoint = f"{scripted.base}{line[6:].strip()}"
                break
        post_headers = {"Content-Type": "application/json"}
        await http.post(endpoint, headers=post_headers, json={
            "jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        await http.post(endpoint, headers=post_headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        await http.post(endpoint, headers=post_headers, json=call(5, "slow"))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await http.post(endpoint, headers=post_headers, json=cancel(5))

        async def answer_to_5() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event.get("id") == 5:
                        return event  # type: ignore[no-any-return]
            raise AssertionError("the stream ended without an answer to 5")

        answered = await asyncio.wait_for(answer_to_5(), 15)
        elapsed = time.monotonic() - started
    assert answered["error"]["code"] == -32800 and elapsed < PROMPT, (answered, elapsed)
    outcomes = [r for r in records(scripted.directory) if r["event"] == "rpc.response" and r.get("target") == "slow"]
    assert len(outcomes) == 1 and outcomes[0].get("cancelled") is True, outcomes


# ── the same against the reference server and the demo bank server over stdio ──
@pytest.mark.parametrize(("server", "tool", "arguments"), [
    ("everything", "trigger-long-running-operation", {"duration": 3, "steps": 3}),
    ("bank", "slow_report", {"steps": 10, "delay": 0.3}),
])
async def test_cancelling_an_id_the_client_never_used_leaves_its_call_alone(
        gateway: gw.RunningGateway, token: str, server: str, tool: str, arguments: dict[str, Any]) -> None:
    """p04: server-everything (Streamable HTTP) and the bank server (stdio, one pipe for every call) number
    the gateway's requests from 1, so a cancellation of `1` from a client with call "A" in flight
    cancelled "A", which then never answered. Now "A" completes."""
    url = gateway.url(server)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=15), headers={"Authorization": f"Bearer {token}"}) as http:
        headers = await open_session(http, url)
        running = asyncio.create_task(http.post(url, headers=headers, json=call("A", tool, arguments)))
        await asyncio.sleep(1.0)
        assert (await http.post(url, headers=headers, json=cancel(1))).status_code == 202
        answered = answer_of(await running)
    assert answered["id"] == "A" and "result" in answered and not answered["result"].get("isError"), answered
    [note] = [r for r in records(gateway.dir) if r["event"] == "rpc.notification"
              and r.get("session") == headers["Mcp-Session-Id"]
              and r["message"].get("method") == "notifications/cancelled"]
    assert note["dropped"] == "not_in_flight"


@pytest.mark.parametrize("accept", ["application/json, text/event-stream", "application/json"])
async def test_cancelling_a_long_operation_on_the_reference_server_ends_it_promptly(
        gateway: gw.RunningGateway, token: str, accept: str) -> None:
    """server-everything stops a cancelled operation and sends nothing more; without a progress token the
    call has had no message when the cancellation comes. It was held until the server `timeout` (300 s)
    and recorded as an upstream timeout; now it ends after the grace period, recorded as cancelled."""
    url = gateway.url("everything")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=15), headers={"Authorization": f"Bearer {token}"}) as http:
        headers = {**await open_session(http, url), "Accept": accept}
        running = asyncio.create_task(http.post(url, headers=headers, json=call(
            "A", "trigger-long-running-operation", {"duration": 20, "steps": 2})))
        await asyncio.sleep(1.0)
        started = time.monotonic()
        assert (await http.post(url, headers=headers, json=cancel("A"))).status_code == 202
        answered = answer_of(await running)
        elapsed = time.monotonic() - started
    assert answered["id"] == "A" and answered["error"]["code"] == -32800 and elapsed < PROMPT, (answered, elapsed)
    every = [r for r in records(gateway.dir) if r.get("session") == headers["Mcp-Session-Id"]]
    [request] = [r for r in every if r["event"] == "rpc.request"]
    [outcome] = [r for r in every if r["event"] == "rpc.response" and r["request_id"] == request["request_id"]]
    assert outcome["cancelled"] is True and outcome["error"] == "cancelled by the client", outcome
    [note] = [r for r in every if r["event"] == "rpc.notification"
              and r["message"].get("method") == "notifications/cancelled"]
    assert note["cancels"] == request["request_id"] and note["forwarded"] is True
