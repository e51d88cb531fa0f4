"""What a hostile handshake-era server sends beside its answers, through a real gateway (in this
interpreter) in front of a scripted server.

* A message carrying a `method` and a `result` (with the call's own id) is neither a request nor an
  answer (JSON-RPC 2.0 §4, §5). It was relayed to the client as a server-to-client request under the
  call's id, and the call lost its answer. Now it is dropped (and logged): the call goes on to its
  answer, or fails cleanly (502, recorded) when none comes. So is a server request whose id is no id.
* A progress notification for a token the client's call never had (MCP, Progress: "MUST only
  reference tokens that were provided in an active request") was relayed to the client. Now it is
  recorded as a server message, marked dropped, and not relayed; on the session's standalone stream
  too, where only tokens of this client's calls in flight pass.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inprocess import scripted_upstream, serving
from tests.support.oidc import Provider
from tests.support.scripted_handshake import ScriptedHandshake

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]

JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
POLICY = [{"name": "staff", "match": {"groups": ["staff"]}, "effect": "allow"},
          {"name": "staff-server-requests", "match": {"groups": ["staff"], "methods": [
              "sampling/createMessage", "elicitation/create", "roots/list"]}, "effect": "allow"}]


def records(directory: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(directory / "data" / "ledgergate.db") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT record FROM ledger_leaves ORDER BY seq")]


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()]
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


class Env:
    def __init__(self, upstream: ScriptedHandshake, base: str, directory: Path, token: str) -> None:
        self.upstream, self.base, self.directory, self.token = upstream, base, directory, token
        self.url = f"{base}/mcp/scripted"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=20, headers={"Authorization": f"Bearer {self.token}"})

    async def session(self, http: httpx.AsyncClient) -> dict[str, str]:
        init = await http.post(self.url, headers=JSON_HEADERS, json={
            "jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {"sampling": {}, "roots": {}},
                "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200, init.text
        headers = {**JSON_HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"],
                   "MCP-Protocol-Version": "2025-06-18"}
        await http.post(self.url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        return headers


@pytest.fixture
async def env(tmp_path: Path, provider: Provider) -> AsyncIterator[Env]:
    upstream = ScriptedHandshake(late_seconds=1.5)
    async with scripted_upstream(upstream) as url, \
            serving(tmp_path, provider.issuer, {"scripted": {"url": url, "timeout": 20}}, POLICY) as base:
        try:
            yield Env(upstream, base, tmp_path, provider.token("alice", ["staff"]))
        finally:
            upstream.release.set()


def call(request_id: Any, name: str, **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {}}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_a_method_beside_a_result_is_no_server_request_and_the_call_fails_cleanly(env: Env) -> None:
    """p02 `resultmethod`: the only message for the call is the hybrid one. The client got a
    sampling/createMessage request under id 13 and then "closed the response stream before answering";
    now it gets that clean 502 alone, and the ledger has the call's outcome."""
    async with env.http() as http:
        headers = await env.session(http)
        r = await http.post(env.url, headers=headers, json=call(13, "resultmethod"))
    events = events_of(r)
    assert not any("method" in e for e in events), events
    assert r.status_code == 502 and "before answering" in r.text, r.text
    [outcome] = [x for x in records(env.directory) if x["event"] == "rpc.response" and x.get("target") == "resultmethod"]
    assert "before answering" in outcome["error"]


@pytest.mark.parametrize("tool", ["resultmethod_then_answer", "bad_request_id"])
async def test_a_message_that_is_no_request_is_dropped_and_the_call_goes_on(env: Env, tool: str) -> None:
    async with env.http() as http:
        headers = await env.session(http)
        r = await http.post(env.url, headers=headers, json=call(13, tool))
    events = events_of(r)
    assert [e for e in events if "method" in e] == [], events
    assert events[-1]["id"] == 13 and events[-1]["result"]["content"][0]["text"] == "the real answer", events
    assert not [x for x in records(env.directory) if x["event"] == "rpc.server_message"]


@pytest.mark.parametrize("token", ["mine", None])
async def test_progress_for_a_token_the_call_never_had_is_recorded_not_relayed(env: Env, token: str | None) -> None:
    async with env.http() as http:
        headers = await env.session(http)
        meta = {"progressToken": token} if token is not None else {}
        r = await http.post(env.url, headers=headers, json=call(5, "progress_other", **meta))
    progress = [e["params"]["progressToken"] for e in events_of(r) if e.get("method") == "notifications/progress"]
    assert progress == ([token] if token is not None else []), events_of(r)
    assert events_of(r)[-1]["result"]["content"][0]["text"] == "progress done"
    messages = [x for x in records(env.directory) if x["event"] == "rpc.server_message"]
    dropped = [x for x in messages if x.get("dropped")]
    assert [x["message"]["params"]["progressToken"] for x in dropped] == ["someone-else"], messages
    assert dropped[0]["dropped"] == "progress_token_not_in_call"


async def test_the_standalone_stream_relays_progress_only_for_a_call_of_this_clients(env: Env) -> None:
    """Progress on the GET stream: the token of the client's call in flight passes, a token no call of
    this client's has (`ghost`) is recorded as dropped and not relayed."""
    async with env.http() as http:
        headers = await env.session(http)
        seen: list[Any] = []

        async def standalone() -> None:
            async with http.stream("GET", env.url, headers={**headers, "Accept": "text/event-stream"}) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:])["params"]["progressToken"])
                        if seen[-1] == "t1":
                            return

        listening = asyncio.create_task(standalone())
        await asyncio.sleep(0.5)
        answered = await http.post(env.url, headers=headers, json=call(9, "late", progressToken="t1"))
        await asyncio.wait_for(listening, 10)
    assert "late" in answered.text
    assert seen == ["t1"], seen
    dropped = [x for x in records(env.directory) if x["event"] == "rpc.server_message" and x.get("dropped")]
    assert [(x["message"]["params"]["progressToken"], x["dropped"]) for x in dropped] == [
        ("ghost", "progress_token_of_no_call_in_flight")]
