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
    for answer in (init, legacy, discover, rec_init, rec_discover):
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == -32003
        assert "may not use server" in answer.json()["error"]["message"] and "no rule allows it" in answer.json()["error"]["message"]
    # a stateless call is refused as the call it is (as any policy refusal: a JSON-RPC error)
    assert call.status_code == 200 and call.json()["error"]["code"] == -32003
    assert "no rule allows it" in call.json()["error"]["message"]
    assert "mcp-session-id" not in init.headers
    await asyncio.sleep(0.5)
    assert not env.marker.exists(), "a stdio child was started for an identity with no rule"
    assert env.upstream.requests[before:] == [], "an upstream session was opened for an identity with no rule"
    denied = [r for r in env.records() if r["event"] == "policy.denied" and r["principal"]["subject"] == "eve"]
    assert sorted(r["method"] for r in denied) == sorted(
        ["initialize", "initialize", "server/discover", "tools/call", "initialize", "server/discover"])
    assert all(r.get("stage") == "admission" for r in denied if r["method"] != "tools/call")
    assert [r["target"] for r in denied if r["method"] == "tools/call"] == ["lookup_customer"]

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


# ── item 9: refusals an investigator looks for are recorded; anonymous floods are bounded ──
async def test_another_identitys_session_is_refused_and_recorded_on_every_verb(env: Env) -> None:
    alice, mallory = env.token("alice", ["staff"]), env.token("mallory", ["staff"])
    async with env.gateway.http(alice) as mine, env.gateway.http(mallory) as theirs:
        headers = await env.session(mine, "rec")
        session_id = headers["Mcp-Session-Id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        answers = [await theirs.post(env.gateway.url("rec"), headers=headers, json=ping),
                   await theirs.get(env.gateway.url("rec"), headers={**headers, "Accept": "text/event-stream"}),
                   await theirs.delete(env.gateway.url("rec"), headers=headers)]
        async with mine.stream("GET", f"{env.gateway.url('rec')}/sse", headers={"Accept": "text/event-stream"}) as s:
            lines = s.aiter_lines()
            endpoint = await endpoint_of(lines)
            answers.append(await theirs.post(f"{env.gateway.base}{endpoint}", json=ping))
        legacy_id = endpoint.rpartition("=")[2]
        assert (await mine.post(env.gateway.url("rec"), headers=headers, json=ping)).status_code == 200
    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    foreign = [r for r in env.records() if r["event"] == "session.foreign"]
    assert [(r["session"], r["http_method"]) for r in foreign] == [
        (session_id, "POST"), (session_id, "GET"), (session_id, "DELETE"), (legacy_id, "POST")]
    assert all(r["principal"]["subject"] == "mallory" and r["server"] == "rec" and r["remote"] == "127.0.0.1"
               for r in foreign)


async def test_an_identity_the_audit_api_refuses_is_recorded(env: Env) -> None:
    async with env.gateway.http(env.token("bob", ["staff"])) as http:
        refused = await http.get(f"{env.gateway.base}/api/v1/audit/checkpoint")
    assert refused.status_code == 403
    forbidden = [r for r in env.records() if r["event"] == "auth.forbidden"]
    assert len(forbidden) == 1 and forbidden[0]["principal"]["subject"] == "bob"
    assert forbidden[0]["path"] == "/api/v1/audit/checkpoint" and forbidden[0]["remote"] == "127.0.0.1"


async def test_an_anonymous_flood_gives_few_records_whose_counts_add_up(env: Env) -> None:
    def denied() -> list[dict[str, Any]]:
        return [r for r in env.records() if r["event"] == "auth.denied" and r.get("remote") == "127.0.0.1"]

    before = denied()
    start = asyncio.get_running_loop().time()
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(500):
            headers = {**JSON_HEADERS, **({"Authorization": "Bearer not-a-token"} if i % 5 == 0 else {})}
            r = await http.post(env.gateway.url("rec"), headers=headers, json={"jsonrpc": "2.0", "id": 1,
                                                                               "method": "ping"})
            assert r.status_code == 401
    elapsed = asyncio.get_running_loop().time() - start
    for _ in range(100):  # the counts of the last interval are flushed on a timer
        new = denied()[len(before):]
        if sum(r["count"] for r in new) >= 500:
            break
        await asyncio.sleep(0.2)
    assert sum(r["count"] for r in new) == 500, [(r["reason"], r["count"]) for r in new]
    assert sum(r["count"] for r in new if r["reason"] == "missing_token") == 400
    # per (source, reason) and 5 s interval: one record at once and one flush of what it counted
    assert len(new) <= 2 * 2 * (int(elapsed / 5) + 2), f"{len(new)} records for 500 refusals in {elapsed:.1f}s"



async def test_a_flood_from_many_source_addresses_is_bounded_by_the_interval_budget(env: Env) -> None:
    """Each source address got its own record at once, so a caller rotating through addresses (here 300
    loopback addresses, 127.77.x.y, each its own TCP source) wrote one `auth.denied` per address. Now an
    interval writes at most 128 at once; the rest are counted under the overflow source `*`."""
    def denied() -> list[dict[str, Any]]:
        return [r for r in env.records() if r["event"] == "auth.denied"
                and (str(r.get("remote")).startswith("127.77.") or r.get("remote") == "*")]

    async def refused(i: int) -> int:
        transport = httpx.AsyncHTTPTransport(local_address=f"127.77.{i // 200}.{1 + i % 200}")
        async with gate, httpx.AsyncClient(transport=transport, timeout=30) as http:
            r = await http.post(env.gateway.url("rec"), headers=JSON_HEADERS,
                                json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            return r.status_code

    before = len(denied())
    gate = asyncio.Semaphore(30)
    start = asyncio.get_running_loop().time()
    assert set(await asyncio.gather(*(refused(i) for i in range(300)))) == {401}
    intervals = int((asyncio.get_running_loop().time() - start) / 5) + 1
    for _ in range(100):  # the overflow's count is flushed on a timer
        new = denied()[before:]
        if sum(r["count"] for r in new) >= 300:
            break
        await asyncio.sleep(0.2)
    assert sum(r["count"] for r in new) == 300, "every refusal is counted once"
    own = [r for r in new if r["remote"] != "*"]
    assert len({r["remote"] for r in own}) == len(own) <= 128 * intervals, f"{len(own)} records of single sources"
    assert intervals == 1 or len(own) < 300, "the run was too slow to tell"
    overflow = [r for r in new if r["remote"] == "*"]
    assert overflow and all(r["aggregated"] for r in overflow)

# ── item 3: every string that enters a record is masked ──────────────────────
SSN, CARD, AWS_KEY = "536-22-8143", "4111111111111111", "AKIAIOSFODNN7EXAMPLE"


def forged_token(alg: str) -> str:
    import base64

    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64({'sub': 'x'})}.c2ln"


async def test_sensitive_data_outside_arguments_and_results_never_reaches_the_ledger(env: Env) -> None:
    alice = env.token("alice", ["staff"])
    planted = f"ssn {SSN} card {CARD} key {AWS_KEY}"
    async with env.gateway.http(alice) as http:
        headers = await env.session(http, "rec", client_info={"name": f"agent {planted}", "version": "1"})
        ask = [("resources/read", {"uri": f"rec://docs/a.md?ssn={SSN}&card={CARD}&key={AWS_KEY}"}),
               ("resources/read", {"uri": f"rec://docs/a b?ssn={SSN}&card={CARD}"}),  # refused: ambiguous
               ("tools/call", {"name": f"pay ssn {SSN} card {CARD}", "arguments": {}}),
               ("tools/call", {"name": "fail", "arguments": {"message": planted}}),
               ("prompts/get", {"name": f"prompt {AWS_KEY}"})]
        answers = []
        for n, (method, params) in enumerate(ask):
            r = await http.post(env.gateway.url("rec"), headers=headers,
                                json={"jsonrpc": "2.0", "id": 10 + n, "method": method, "params": params})
            answers.append(r)
        assert answers[1].json()["error"]["code"] == -32602  # the ambiguous URI: refused, and recorded
        assert answers[3].json()["error"]["message"].startswith("declined:")  # the upstream's own error
    async with env.gateway.http(forged_token(SSN)) as http:
        assert (await env.initialize(http, "rec")).status_code == 401
    records = env.records()
    tail = env.tail
    for secret in (SSN, CARD, AWS_KEY, SSN.replace("-", "")):
        assert secret not in tail, f"{secret} reached the ledger in the clear"
    # the records are there, masked (not missing)
    opened = [r for r in records if r["event"] == "session.opened" and "agent" in json.dumps(r.get("client"))]
    assert opened and "[US_SSN]" in opened[-1]["client"]["name"] and "[SECRET]" in opened[-1]["client"]["name"]
    targets = [r.get("target", "") for r in records if r.get("principal", {}).get("subject") == "alice"]
    assert any(t.startswith("rec://docs/a.md?ssn=[US_SSN]") for t in targets)
    assert any(t.startswith("pay ssn [US_SSN]") for t in targets)
    assert any(t.startswith("rec://docs/a b?ssn=[US_SSN]") for t in targets)
    failed = [r for r in records if r["event"] == "rpc.response" and r.get("target") == "fail"]
    assert failed and "[US_SSN]" in failed[-1]["error"]["message"]
    forged = [r for r in records if r["event"] == "auth.denied" and "signing algorithm" in (r.get("detail") or "")]
    # a token's `alg` is the caller's text: only a JWS algorithm's name is ever quoted (an SSN is not one)
    assert forged and "no JWS algorithm" in forged[-1]["detail"] and SSN not in forged[-1]["detail"]
