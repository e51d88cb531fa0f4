"""Issue 20 items 2, 3, 8 and 9 through a real gateway (`ledgergate serve`) with real OIDC tokens, in
front of a recording upstream (which shows what was forwarded) and the demo bank server as a stdio
child whose launcher leaves a marker file (which shows whether a child process was started).

* 2 — no call skips the policy stage: a request shaped as a notification is refused on every
  transport; an identity no rule lets use a server opens nothing upstream.
* 3 — every string that enters a record is masked: targets, tool names, clientInfo, error texts.
* 8 — a `requestState` presented by another identity is refused and still works for its owner.
* 9 — refusals of another identity's session and of the audit API are recorded; anonymous
  floods are aggregated into a bounded number of records whose counts add up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.upstream import RecordingUpstream

pytestmark = pytest.mark.node

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
POLICIES = [
    {"name": "staff-all", "match": {"groups": ["staff"]}, "effect": "allow"},
    {"name": "staff-elicitation", "match": {"groups": ["staff"], "methods": ["elicitation/create"]},
     "effect": "allow"},
    {"name": "carol-no-stream", "match": {"subjects": ["carol"], "methods": ["subscriptions/listen"]},
     "effect": "deny"},
]


class Env:
    def __init__(self, provider: Provider, upstream: RecordingUpstream, running: gw.RunningGateway,
                 marker: Path) -> None:
        self.provider, self.upstream, self.gateway, self.marker = provider, upstream, running, marker

    def token(self, sub: str, groups: list[str]) -> str:
        return self.provider.token(sub, groups)

    async def initialize(self, http: httpx.AsyncClient, server: str, client_info: dict[str, Any] | None = None
                         ) -> httpx.Response:
        return await http.post(self.gateway.url(server), headers=JSON_HEADERS, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": client_info or {"name": "t", "version": "1"}}})

    async def session(self, http: httpx.AsyncClient, server: str, client_info: dict[str, Any] | None = None
                      ) -> dict[str, str]:
        init = await self.initialize(http, server, client_info)
        assert init.status_code == 200, init.text
        return {**JSON_HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}

    async def modern(self, http: httpx.AsyncClient, server: str, message: dict[str, Any],
                     name: str | None = None) -> httpx.Response:
        headers = {**JSON_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": message["method"]}
        if name is not None:
            headers["Mcp-Name"] = name
        params = {**(message.get("params") or {}), "_meta": META}
        return await http.post(self.gateway.url(server), headers=headers, json={**message, "params": params})

    def records(self) -> list[dict[str, Any]]:
        out = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "tail", "--config",
                              str(self.gateway.dir / "ledgergate.yaml"), "-n", "1000000"],
                             cwd=self.gateway.dir, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        self.tail = out.stdout
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]


@pytest_asyncio.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    provider = Provider()
    upstream = RecordingUpstream()
    await upstream.start()
    directory = tmp_path_factory.mktemp("refusals")
    marker = directory / "bank-started"
    launcher = f"echo started >> '{marker}'; exec '{sys.executable}' -m ledgergate.demo.bank_server"
    servers = {"rec": {"url": upstream.url}, "bank": {"command": ["sh", "-c", launcher]}}
    running = await asyncio.to_thread(gw.start, directory, provider.issuer, servers, POLICIES)
    try:
        yield Env(provider, upstream, running, marker)
    finally:
        await asyncio.to_thread(running.stop)
        await upstream.stop()
        provider.stop()


async def endpoint_of(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data: "):
            return line[6:].strip()
    raise AssertionError("no endpoint event")


# ── item 2: nothing skips the policy stage ────────────────────────────────────
NOT_NOTIFICATIONS = [
    ("tools/call", {"name": "echo", "arguments": {"message": "sneaked"}}),
    ("resources/read", {"uri": "rec://docs/a.md"}),
    ("prompts/get", {"name": "p"}),
    ("ping", {}),
]


@pytest.mark.parametrize("method, params", NOT_NOTIFICATIONS)
async def test_a_request_shaped_as_a_notification_is_refused_on_every_transport(
        env: Env, method: str, params: dict[str, Any]) -> None:
    alice = env.token("alice", ["staff"])
    sneaked = {"jsonrpc": "2.0", "method": method, "params": params}
    async with env.gateway.http(alice) as http:
        headers = await env.session(http, "rec")
        before = len(env.upstream.requests)
        handshake = await http.post(env.gateway.url("rec"), headers=headers, json=sneaked)
        modern = await env.modern(http, "rec", sneaked)
        async with http.stream("GET", f"{env.gateway.url('rec')}/sse", headers={"Accept": "text/event-stream"}) as s:
            lines = s.aiter_lines()  # kept referenced: a collected iterator would close the stream
            endpoint = await endpoint_of(lines)
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
            assert (await http.post(f"{env.gateway.base}{endpoint}", json=init)).status_code == 202
            legacy = await http.post(f"{env.gateway.base}{endpoint}", json=sneaked)
            # a real notification still passes on every transport
            ok = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
            passed = await http.post(f"{env.gateway.base}{endpoint}", json=ok)
            assert passed.status_code == 202, (passed.text, legacy.text)
        assert (await http.post(env.gateway.url("rec"), headers=headers, json=ok)).status_code == 202
        assert (await env.modern(http, "rec", ok)).status_code == 202
    for answer in (handshake, modern, legacy):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["data"]["reason"] == "not_a_notification"
        assert "needs an \"id\"" in answer.json()["error"]["message"]
    await asyncio.sleep(0.3)  # anything forwarded would have arrived by now
    assert [r["method"] for r in env.upstream.requests[before:] if r.get("method") == method] == []
    ids = {a.json()["error"]["data"]["requestId"] for a in (handshake, modern, legacy)}
    refused = [r for r in env.records() if r["event"] == "rpc.refused" and r.get("request_id") in ids]
    assert len(refused) == 3 and {r["method"] for r in refused} == {method}
    assert all(r["reason"] == "not_a_notification" and r["principal"]["subject"] == "alice" for r in refused)


async def test_an_identity_no_rule_lets_use_a_server_opens_nothing_upstream(env: Env) -> None:
    eve = env.token("eve", ["visitors"])
    async with env.gateway.http(eve) as http:
        before = len(env.upstream.requests)
        init = await env.initialize(http, "bank")
        legacy = await http.get(f"{env.gateway.url('bank')}/sse", headers={"Accept": "text/event-stream"})
        discover = await env.modern(http, "bank", {"jsonrpc": "2.0", "id": 2, "method": "server/discover"})
        call = await env.modern(http, "bank", {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                               "params": {"name": "lookup_customer",
                                                          "arguments": {"customer_id": "C-1001"}}},
                                "lookup_customer")
        rec_init = await env.initialize(http, "rec")
        rec_discover = await env.modern(http, "rec", {"jsonrpc": "2.0", "id": 4, "method": "server/discover"})
    for answer in (init, legacy, discover, call, rec_init, rec_discover):
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == -32003
        assert "no policy rule lets this identity use server" in answer.json()["error"]["message"]
    assert "mcp-session-id" not in init.headers
    await asyncio.sleep(0.5)
    assert not env.marker.exists(), "a stdio child was started for an identity with no rule"
    assert env.upstream.requests[before:] == [], "an upstream session was opened for an identity with no rule"
    denied = [r for r in env.records() if r["event"] == "policy.denied" and r["principal"]["subject"] == "eve"]
    assert sorted(r["method"] for r in denied) == sorted(
        ["initialize", "initialize", "server/discover", "initialize", "initialize", "server/discover"])
    assert all(r["stage"] == "admission" and r["rule"] is None for r in denied)

    # The marker is a real witness: an allowed identity's initialize does start the child.
    async with env.gateway.http(env.token("alice", ["staff"])) as http:
        assert (await env.initialize(http, "bank")).status_code == 200
    assert env.marker.exists()


async def test_the_standalone_stream_is_authorised(env: Env) -> None:
    carol = env.token("carol", ["staff"])
    async with env.gateway.http(carol) as http:
        headers = await env.session(http, "rec")
        stream = await http.get(env.gateway.url("rec"), headers={**headers, "Accept": "text/event-stream"})
    assert stream.status_code == 403 and "carol-no-stream" in stream.json()["error"]["message"]
    denied = [r for r in env.records() if r["event"] == "policy.denied" and r["principal"]["subject"] == "carol"]
    assert [(r["method"], r["rule"]) for r in denied] == [("subscriptions/listen", "carol-no-stream")]


# ── item 8: a refusal consumes nothing ────────────────────────────────────────
async def test_another_identitys_request_state_is_refused_and_still_works_for_its_owner(env: Env) -> None:
    """A 2026-07-28 client over a handshake upstream (the bank, stdio) that asks for confirmation mid-call:
    the paused call's `requestState` presented by someone else is refused, and the owner's retry still
    finishes the same call. (The approval stage's sealed state is checked the same way by
    test_approvals_gateway.py::test_one_approval_runs_one_call_and_changed_arguments_need_a_new_one.)"""
    alice, bob = env.token("alice", ["staff"]), env.token("bob", ["staff"])
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "confirm_large_action", "arguments": {"action": "wire transfer", "amount": 50000}}}
    async with env.gateway.http(alice) as http:
        first = (await env.modern(http, "bank", call, "confirm_large_action")).json()
    result = first["result"]
    assert result["resultType"] == "input_required", first
    state = result["requestState"]
    key = next(iter(result["inputRequests"]))
    answer = {key: {"action": "accept", "content": {"confirm": True, "reason": "checked by phone"}}}
    retry = {**call, "params": {**call["params"], "requestState": state, "inputResponses": answer}}
    async with env.gateway.http(bob) as http:
        stolen = await env.modern(http, "bank", retry, "confirm_large_action")
    assert stolen.status_code == 400 and "another caller" in stolen.json()["error"]["message"]
    async with env.gateway.http(alice) as http:
        done = (await env.modern(http, "bank", retry, "confirm_large_action")).json()
        assert done["result"]["structuredContent"]["decision"] == "approved", done
        replayed = await env.modern(http, "bank", retry, "confirm_large_action")
    assert "unknown or expired" in replayed.json()["error"]["message"], "the owner's state is still used once"
    refused = [r for r in env.records() if r["event"] == "rpc.refused" and r.get("reason") == "foreign_request_state"]
    assert len(refused) == 1 and refused[0]["principal"]["subject"] == "bob"
