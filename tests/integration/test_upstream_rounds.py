"""A stateless (2026-07-28) client's input-required rounds, recorded, bound and re-decided.

Real parts: a gateway (`ledgergate serve`) in front of the demo bank twice: over HTTP, where it speaks
2026-07-28 and answers `confirm_large_action` with an input-required round (the SDK's `Resolve(Elicit)`),
and over stdio, where it speaks the handshake era and asks mid-call (the gateway then pauses the call
under a `requestState` of its own, `lgw1.`).

* F1: over the 2026-07-28 upstream, the client's retry carries its answers (`inputResponses`) and the
  upstream acts on them; no record held them (the retry's `rpc.request` repeats the first round's args).
  Now each answer is recorded (`rpc.reply`, masked for the ledger, under the retry's request id) before the
  retry is forwarded, and a caller the policy in force no longer lets answer `elicitation/create` cannot
  answer such a round.
* F1b: the upstream's `requestState` was not bound to the caller: bob finished alice's round with her
  state. It is now sealed by the gateway (`lgu1.`) for the principal, server and request it was given for.
* F8: a call paused on an input request finished after an emergency deny rule was loaded; its retry is
  now decided again, and the call is refused, cancelled upstream and recorded.
* F6: a handshake client's approval-gated call that the 2026-07-28 upstream answers input-required asked the
  approvers twice for the same call (each round was a new call); the later rounds of the same client request
  now run under the approval the first round was released by.
* N3: the same for a stateless client: each `lgu1.` retry of an approved call asked for a new approval and each
  approved retry lost its answers, so the call never finished. The round now names the approval that released
  its call, and its retry runs under it, answers and all.
* N4: an `lgu1.` state could be replayed for its lifetime; a round is now answered once, on any replica.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import gateway as gw
from tests.support.client import Recorder, connect
from tests.support.oidc import Provider
from tests.support.procs import Proc, free_port

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}
TOOL = "confirm_large_action"
ARGS = {"action": "wire", "amount": 5}
POLICIES = [
    {"name": "staff-all", "match": {"groups": ["staff"]}, "effect": "allow"},
    {"name": "staff-answers", "match": {"groups": ["staff"], "methods": ["elicitation/create"]}, "effect": "allow"},
    {"name": "large-actions", "match": {"servers": ["bankm"], "tools": [TOOL]}, "when": "double(args.amount) > 10000.0",
     "effect": "approve", "approvers": {"groups": ["approvers"], "count": 1}},
]
#: a held call is answered "waiting for approval" after `hold`: a round asking the approvers again fails the call
APPROVALS = {"approvals": {"hold": "8s", "timeout": "10m", "grant_window": "2m"}}


@pytest.fixture(scope="module")
def bank_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    proc = Proc([*gw.BANK_ARGV, "--transport", "http", "--port", str(port)], port=port,
                log=tmp_path_factory.mktemp("bank") / "bank.log")
    yield proc
    proc.stop()


def servers(bank_http: Proc) -> dict[str, Any]:
    return {"bankm": {"url": f"http://127.0.0.1:{bank_http.port}/mcp"}, "bank": {"command": gw.BANK_ARGV}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: Provider, bank_http: Proc) -> Iterator[gw.RunningGateway]:
    running = gw.start(tmp_path_factory.mktemp("gateway"), idp.issuer, servers(bank_http), POLICIES, APPROVALS)
    yield running
    running.stop()


@pytest.fixture
def fresh_gateway(tmp_path: Path, idp: Provider, bank_http: Proc) -> Iterator[gw.RunningGateway]:
    """A gateway of the test's own, whose config the test changes."""
    running = gw.start(tmp_path, idp.issuer, servers(bank_http), POLICIES)
    yield running
    running.stop()


async def call(http: httpx.AsyncClient, gateway: gw.RunningGateway, server: str, request_id: int,
               params: dict[str, Any]) -> httpx.Response:
    """One 2026-07-28 `tools/call` of `confirm_large_action`, as a stateless client sends it."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": TOOL}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": TOOL, "arguments": ARGS, **params, "_meta": META}}
    return await http.post(gateway.url(server), headers=headers, json=body)


def answer_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer, from a JSON body or the last event of a stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        return events[-1]
    return dict(response.json())


async def first_round(http: httpx.AsyncClient, gateway: gw.RunningGateway, server: str) -> tuple[str, str]:
    """Call the tool; the input-required round's (input key, requestState)."""
    result = answer_of(await call(http, gateway, server, 1, {}))["result"]
    assert result["resultType"] == "input_required", result
    return next(iter(result["inputRequests"])), result["requestState"]


def confirmation(reason: str) -> dict[str, Any]:
    return {"action": "accept", "content": {"confirm": True, "reason": reason}}


def reconfigure(gateway: gw.RunningGateway, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the running gateway's config and signal it (SIGHUP), as an operator would."""
    path = gateway.dir / "ledgergate.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    gateway.proc.proc.send_signal(signal.SIGHUP)


async def until(check: Callable[[], Any], what: str) -> None:
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


# ── F1: the answers are recorded before they are forwarded ───────────────────
async def test_answers_to_a_2026_upstreams_round_are_recorded_masked_before_the_retry_is_forwarded(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    marker = "checked-by-phone-F1"
    async with gateway.http(idp.token("alice", ["staff"])) as http:
        key, state = await first_round(http, gateway, "bankm")
        retry = {"requestState": state, "inputResponses": {key: confirmation(f"{marker}, SSN 123-45-6789")}}
        done = answer_of(await call(http, gateway, "bankm", 2, retry))
    assert done["result"]["structuredContent"]["decision"] == "approved", done
    every = gateway.records()
    requests = [r for r in every if r["event"] == "rpc.request" and r["server"] == "bankm" and r.get("target") == TOOL]
    assert len(requests) == 2 and requests[0]["args"] == requests[1]["args"], "the answers are not in the args"
    retried = requests[1]["request_id"]
    replies = [r for r in every if r["event"] == "rpc.reply" and r.get("request_id") == retried]
    assert len(replies) == 1, [r["event"] for r in every if r.get("request_id") == retried]
    reply = replies[0]
    assert reply["message"]["id"] == key and reply["asked"] == "elicitation/create", reply
    assert marker in json.dumps(reply) and "123-45-6789" not in json.dumps(reply), "recorded, masked for the ledger"
    assert every.index(reply) < every.index(requests[1]), "recorded before the retry was forwarded"


# ── F1b: the upstream's round is the caller's own ────────────────────────────
async def test_a_2026_upstreams_round_is_bound_to_its_caller_server_and_request(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["staff"])
    async with gateway.http(alice) as http:
        key, state = await first_round(http, gateway, "bankm")
    answers = {key: confirmation("bob answers alice's round")}
    async with gateway.http(bob) as http:
        stolen = await call(http, gateway, "bankm", 2, {"requestState": state, "inputResponses": answers})
    assert stolen.status_code == 400, stolen.text
    error = stolen.json()["error"]
    assert error["code"] == -32602 and "another caller" in error["message"], error
    assert error["data"]["reason"] == "foreign_request_state"
    stolen_id = error["data"]["requestId"]
    assert state.startswith("lgu1."), "the client holds the gateway's sealed round, not the upstream's state"
    async with gateway.http(alice) as http:
        others = {  # what the sealed round refuses besides another caller
            "invalid_request_state": {"requestState": state[:-4] + ("AAAA" if state[-4:] != "AAAA" else "BBBB"),
                                      "inputResponses": {key: confirmation("altered")}},
            "unasked_input": {"requestState": state, "inputResponses": {key: confirmation("x"), "more": {}}},
        }
        for reason, params in others.items():
            refused = await call(http, gateway, "bankm", 3, params)
            assert refused.status_code == 400 and refused.json()["error"]["data"]["reason"] == reason, refused.text
        done = answer_of(await call(http, gateway, "bankm", 4, {"requestState": state,
                                                                 "inputResponses": {key: confirmation("mine")}}))
    assert done["result"]["structuredContent"]["decision"] == "approved", "the owner still finishes the round"
    every = gateway.records()
    [refusal] = [r for r in every if r.get("request_id") == stolen_id]
    assert refusal["event"] == "rpc.refused" and refusal["reason"] == "foreign_request_state", refusal
    assert refusal["principal"]["subject"] == "bob"
    assert not [r for r in every if r["event"] in ("rpc.request", "rpc.reply") and r["principal"]["subject"] == "bob"]


# ── F1: an answer the policy in force refuses is not forwarded ───────────────
async def test_a_caller_the_policy_no_longer_lets_answer_elicitation_cannot_answer_the_round(
        fresh_gateway: gw.RunningGateway, idp: Provider) -> None:
    gateway = fresh_gateway
    async with gateway.http(idp.token("alice", ["staff"])) as http:
        key, state = await first_round(http, gateway, "bankm")
        reconfigure(gateway, lambda doc: doc["policies"].insert(0, {
            "name": "no-answers-now", "match": {"methods": ["elicitation/create"]}, "effect": "deny"}))

        async def reloaded() -> bool:  # a new round is refused once the rule is in force
            return "error" in answer_of(await call(http, gateway, "bankm", 1, {}))

        await asyncio.sleep(1.5)  # SIGHUP is read at once; the watcher would see it within a second too
        await until(reloaded, "the reload took effect")
        marker = "answered-after-the-deny-F1"
        refused = answer_of(await call(http, gateway, "bankm", 2, {
            "requestState": state, "inputResponses": {key: confirmation(marker)}}))
    assert "error" in refused, f"the answer went upstream: {refused}"
    error = refused["error"]
    assert error["code"] == -32003 and "elicitation/create" in error["message"], refused
    assert error["data"]["reason"] == "input_method_refused" and error["data"]["rule"] == "no-answers-now"
    every = gateway.records()
    mine = [r for r in every if r.get("request_id") == error["data"]["requestId"]]
    assert [(r["event"], r.get("method"), r.get("direction")) for r in mine] == [
        ("policy.denied", "elicitation/create", "client-to-server")], mine
    assert marker not in json.dumps(every), "an answer that was not forwarded is not recorded as one"


# ── F8: a paused call meets the policy in force when it is resumed ───────────
async def test_a_call_paused_on_input_is_refused_and_cancelled_after_an_emergency_deny_rule(
        fresh_gateway: gw.RunningGateway, idp: Provider) -> None:
    gateway = fresh_gateway
    async with gateway.http(idp.token("alice", ["staff"])) as http:
        key, state = await first_round(http, gateway, "bank")  # a handshake upstream: the gateway holds the call
        assert state.startswith("lgw1.")
        reconfigure(gateway, lambda doc: doc["policies"].insert(0, {
            "name": "freeze-confirm", "match": {"servers": ["bank"], "tools": [TOOL]}, "effect": "deny"}))

        async def reloaded() -> bool:  # a fresh call is refused once the rule is in force
            return "error" in answer_of(await call(http, gateway, "bank", 1, {}))

        await asyncio.sleep(1.5)  # (as above: a check before the reload would pause a call of its own)
        await until(reloaded, "the reload took effect")
        marker = "after-the-freeze-F8"
        retry = await call(http, gateway, "bank", 3, {"requestState": state,
                                                      "inputResponses": {key: confirmation(marker)}})
        refused = answer_of(retry)
        again = answer_of(await call(http, gateway, "bank", 4, {"requestState": state,
                                                                "inputResponses": {key: confirmation(marker)}}))
    assert "result" not in refused, refused
    error = refused["error"]
    assert error["code"] == -32003 and "no longer runs" in error["message"] and "freeze-confirm" in error["message"]
    assert error["data"]["reason"] == "policy_changed", error
    assert "unknown or expired" in again["error"]["message"], "the paused call was ended, not left waiting"
    every = gateway.records()
    paused = error["data"]["cancels"]
    outcome = [r for r in every if r["event"] == "rpc.response" and r.get("request_id") == paused]
    assert len(outcome) == 1 and outcome[0]["reason"] == "policy_changed", outcome
    assert outcome[0]["cancel_sent"] is True, "the upstream was told to stop the call"
    [refusal] = [r for r in every if r.get("request_id") == error["data"]["requestId"]]
    assert refusal["event"] == "rpc.refused" and refusal["reason"] == "policy_changed", refusal
    declined = [r for r in every if r["event"] == "rpc.reply" and r.get("reason") == "policy_changed"]
    assert len(declined) == 1 and "error" in declined[0]["message"], "the upstream's question was declined"
    assert marker not in json.dumps(every), "the client's answer never went upstream"


# ── F6: one approval for one client request, however many rounds it takes ────
async def pending(gateway: gw.RunningGateway, token: str, requester: str) -> list[dict[str, Any]]:
    async with gateway.http(token) as http:
        r = await http.get(f"{gateway.base}/api/v1/approvals", params={"status": "pending"})
    assert r.status_code == 200, r.text
    return [a for a in r.json()["approvals"] if requester in json.dumps(a["requester"])]


async def test_a_handshake_clients_approved_call_runs_its_later_rounds_under_that_approval(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["approvers"])
    rec = Recorder(elicit_content={"confirm": True, "reason": "confirmed by phone"})
    async with connect(gateway.url("bankm"), alice, "legacy", rec) as client:
        running = asyncio.create_task(client.call_tool(TOOL, {"action": "wire", "amount": 20000}))
        deadline = time.monotonic() + 15
        while not (waiting := await pending(gateway, bob, "alice")) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        [approval] = waiting
        async with gateway.http(bob) as http:
            decided = await http.post(f"{gateway.base}/api/v1/approvals/{approval['id']}/approve",
                                      json={"reason": "checked the ticket"})
        assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(running, 30)
    assert not result.is_error and result.structured_content is not None, result
    assert result.structured_content["decision"] == "approved" and len(rec.elicitations) == 1
    assert await pending(gateway, bob, "alice") == [], "the approvers were not asked again"
    every = gateway.records()
    rounds = [r for r in every if r["event"] == "rpc.request" and r.get("target") == TOOL and r["server"] == "bankm"
              and r["principal"]["subject"] == "alice" and r.get("approval") == approval["id"]]
    assert len(rounds) == 2 and rounds[0]["args"] == rounds[1]["args"], "both rounds ran under the one approval"
    assert len([r for r in every if r["event"] == "approval.requested" and r.get("approval") == approval["id"]]) == 1


# ── a round's params are accepted only where the gateway checks them ──────────
async def handshake_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """A raw handshake-era session (initialize + initialized); the headers its requests carry."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    opened = await http.post(url, headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}},
                   "clientInfo": {"name": "t", "version": "1"}}})
    assert opened.status_code == 200, opened.text
    headers |= {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    sent = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert sent.status_code == 202, sent.text
    return headers


async def test_a_handshake_client_cannot_bring_its_own_round_params_to_a_2026_upstream(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    """A handshake client's rounds are the gateway's to run (it asks the client itself): `requestState` and
    `inputResponses` a handshake client sent went to the upstream unchecked, so one identity finished another's
    round with the upstream's state (readable in the sealed round's body), and nothing recorded the answer."""
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["staff"])
    async with gateway.http(alice) as http:
        key, state = await first_round(http, gateway, "bankm")
    body = state.removeprefix("lgu1.").split(".")[0]
    upstream_state = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"]
    marker = "smuggled answer"
    refused: list[str] = []
    async with gateway.http(bob) as http:
        headers = await handshake_session(http, gateway.url("bankm"))
        for request_id, params in enumerate(({"requestState": upstream_state,
                                              "inputResponses": {key: confirmation(marker)}},
                                             {"inputResponses": {key: confirmation(marker)}},
                                             {"requestState": state}), start=10):
            r = await http.post(gateway.url("bankm"), headers=headers, json={
                "jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                "params": {"name": TOOL, "arguments": ARGS, **params}})
            error = answer_of(r)["error"]
            assert error["code"] == -32602 and error["data"]["reason"] == "unexpected_round_params", error
            refused.append(error["data"]["requestId"])
    every = gateway.records()
    ours = [r for r in every if r.get("request_id") in refused]
    assert [(r["event"], r["reason"]) for r in ours] == [("rpc.refused", "unexpected_round_params")] * 3, ours
    assert all(r["principal"]["subject"] == "bob" and marker not in json.dumps(r) for r in ours), ours


async def test_a_stateless_client_cannot_bring_round_params_to_a_handshake_era_upstream(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    """A handshake-era upstream runs no input rounds: only the gateway's own states mean anything there."""
    alice = idp.token("alice", ["staff"])
    async with gateway.http(alice) as http:
        for request_id, params in enumerate(({"requestState": "not-the-gateways"},
                                             {"inputResponses": {"confirm": confirmation("x")}}), start=20):
            error = answer_of(await call(http, gateway, "bank", request_id, params))["error"]
            assert error["code"] == -32602 and error["data"]["reason"] == "unexpected_round_params", error


# ── N3: one approval for a stateless client's call, however many rounds it takes ──
async def large_call(http: httpx.AsyncClient, gateway: gw.RunningGateway, request_id: int,
                     params: dict[str, Any]) -> dict[str, Any]:
    """A stateless client's approval-gated `confirm_large_action` (rule large-actions), its JSON-RPC answer."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": TOOL}
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"action": "wire", "amount": 20000}, **params, "_meta": META}}
    return answer_of(await http.post(gateway.url("bankm"), headers=headers, json=body, timeout=60))


async def test_a_stateless_clients_approved_call_runs_its_input_round_under_that_approval(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    """The retry of an approved call's round asked for a new approval, and each approved retry lost its answers
    (the approval stage takes them off the call), so the upstream asked again: the call never finished. The
    round now names the approval that released its call, and its retry runs under it, answers and all."""
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["approvers"])
    marker = "confirmed-by-phone-N3"
    async with gateway.http(alice) as http:
        held = asyncio.create_task(large_call(http, gateway, 1, {}))
        deadline = time.monotonic() + 15
        while not (waiting := await pending(gateway, bob, "alice")) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        [approval] = waiting
        async with gateway.http(bob) as api:
            decided = await api.post(f"{gateway.base}/api/v1/approvals/{approval['id']}/approve",
                                     json={"reason": "checked the ticket"})
        assert decided.status_code == 200, decided.text
        asked = (await asyncio.wait_for(held, 30))["result"]
        assert asked["resultType"] == "input_required" and asked["requestState"].startswith("lgu1."), asked
        key, state = next(iter(asked["inputRequests"])), asked["requestState"]
        retry = {"requestState": state, "inputResponses": {key: confirmation(marker)}}
        done = await large_call(http, gateway, 2, retry)
        replayed = await large_call(http, gateway, 3, retry)
    assert done.get("result", {}).get("structuredContent", {}).get("decision") == "approved", done
    assert await pending(gateway, bob, "alice") == [], "the approvers were not asked again"
    error = replayed["error"]
    assert error["code"] == -32602 and error["data"]["reason"] == "request_state_used", error
    every = gateway.records()
    rounds = [r for r in every if r["event"] == "rpc.request" and r.get("target") == TOOL and r["server"] == "bankm"
              and r.get("approval") == approval["id"]]
    assert len(rounds) == 2 and rounds[0]["args"] == rounds[1]["args"], "both rounds ran under the one approval"
    replies = [r for r in every if r["event"] == "rpc.reply" and r.get("request_id") == rounds[1]["request_id"]]
    assert len(replies) == 1 and marker in json.dumps(replies[0]), "the answers that went upstream are recorded"
    assert len([r for r in every if r["event"] == "approval.requested" and r.get("approval") == approval["id"]]) == 1
    assert not [r for r in every if r["event"] == "approval.requested"
                and r.get("request_id") in (rounds[1]["request_id"], error["data"]["requestId"])]
    [refusal] = [r for r in every if r.get("request_id") == error["data"]["requestId"]]
    assert refusal["event"] == "rpc.refused" and refusal["reason"] == "request_state_used", refusal


# ── N4: a round is answered once ─────────────────────────────────────────────
async def test_a_2026_upstreams_round_is_answered_once(gateway: gw.RunningGateway, idp: Provider) -> None:
    """The same `lgu1.` state, used again, resumed the upstream's action again (a person's one confirmation,
    replayed) for as long as the state was valid. A second use is now refused and recorded."""
    async with gateway.http(idp.token("carol", ["staff"])) as http:
        key, state = await first_round(http, gateway, "bankm")
        done = answer_of(await call(http, gateway, "bankm", 2, {
            "requestState": state, "inputResponses": {key: confirmation("once")}}))
        again = await call(http, gateway, "bankm", 3, {"requestState": state,
                                                       "inputResponses": {key: confirmation("twice-N4")}})
    assert done["result"]["structuredContent"]["decision"] == "approved", done
    assert again.status_code == 400, again.text
    error = again.json()["error"]
    assert error["code"] == -32602 and error["data"]["reason"] == "request_state_used", error
    every = gateway.records()
    mine = [r for r in every if r.get("request_id") == error["data"]["requestId"]]
    assert [(r["event"], r["reason"]) for r in mine] == [("rpc.refused", "request_state_used")], mine
    assert "twice-N4" not in json.dumps(every), "the replayed answer was neither forwarded nor recorded as one"
