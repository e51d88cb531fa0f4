"""Just-in-time approvals through a real gateway: the official SDK client in both protocol eras,
real OIDC tokens, server-everything as the upstream, decisions over the REST API, SQLite and a
real PostgreSQL with two gateway processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.client import MODERN, Recorder, connect
from tests.support.oidc import Provider
from tests.support.pg import throwaway_schema, url_for
from tests.support.procs import Proc, free_port

pytestmark = pytest.mark.node

POLICIES = [
    {"name": "staff-sums", "match": {"groups": ["staff"], "servers": ["everything"], "tools": ["echo", "get-sum"]},
     "effect": "allow", "mask": "standard"},
    {"name": "large-sums-need-approval", "match": {"servers": ["everything"], "tools": ["get-sum"]},
     "when": "args.a > 1000", "effect": "approve", "approvers": {"groups": ["approvers"], "count": 1}},
    {"name": "staff-modern-add", "match": {"groups": ["staff"], "servers": ["modern"], "tools": ["add"]},
     "effect": "allow"},
    {"name": "large-adds-need-approval", "match": {"servers": ["modern"], "tools": ["add"]}, "when": "args.a > 1000",
     "effect": "approve", "approvers": {"groups": ["approvers"]}},
    {"name": "big-b-needs-a-reason", "match": {"servers": ["everything"], "tools": ["get-sum"]},
     "when": "args.a <= 1000 && args.b > 100000", "effect": "approve",
     "approvers": {"groups": ["approvers"], "justification": "required"}},
    {"name": "wires-need-two", "match": {"servers": ["everything"], "tools": ["echo"]},
     "when": 'args.message.startsWith("wire")', "effect": "approve", "approvers": {"groups": ["approvers"], "count": 2}},
]
APPROVALS = {"hold": "4s", "timeout": "10m", "grant_window": "2m"}


def servers(upstream: Proc) -> dict[str, Any]:
    return {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}


@pytest.fixture(scope="module")
def modern_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """An SDK server that speaks nothing but 2026-07-28."""
    port = free_port()
    proc = Proc([*gw.STATELESS_ARGV, "--port", str(port), "--modern-only"], port=port,
                log=tmp_path_factory.mktemp("modern") / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: Provider, upstream: Proc,
            modern_upstream: Proc) -> Iterator[gw.RunningGateway]:
    both = {**servers(upstream), "modern": {"url": f"http://127.0.0.1:{modern_upstream.port}/mcp"}}
    running = gw.start(tmp_path_factory.mktemp("approvals"), idp.issuer, both, POLICIES, {"approvals": APPROVALS})
    yield running
    running.stop()


class People:
    def __init__(self, idp: Provider) -> None:
        self.alice = idp.token("alice", ["staff"])
        self.bob = idp.token("bob", ["approvers"])
        self.erin = idp.token("erin", ["approvers"])
        self.carol = idp.token("carol", ["staff", "approvers"])  # may approve, but never her own calls
        self.dave = idp.token("dave", ["staff"])


@pytest.fixture(scope="module")
def people(idp: Provider) -> People:
    return People(idp)


async def pending(gateway: gw.RunningGateway, token: str, requester: str, exclude: set[str] = frozenset(),
                  timeout: float = 15.0) -> dict[str, Any]:
    """The newest pending approval requested by `requester` (as an approver sees it)."""
    deadline = time.monotonic() + timeout
    async with gateway.http(token) as http:
        while time.monotonic() < deadline:
            r = await http.get(f"{gateway.base}/api/v1/approvals", params={"status": "pending"})
            assert r.status_code == 200, r.text
            mine = [a for a in r.json()["approvals"] if requester in json.dumps(a["requester"])
                    and a["id"] not in exclude]
            if mine:
                return mine[0]
            await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval from {requester}")


async def decide(gateway: gw.RunningGateway, token: str, approval_id: str, verdict: str,
                 reason: str = "checked the ticket") -> httpx.Response:
    async with gateway.http(token) as http:
        return await http.post(f"{gateway.base}/api/v1/approvals/{approval_id}/{verdict}", json={"reason": reason})


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


# ── held, then released ──────────────────────────────────────────────────────
async def test_handshake_client_is_held_with_notices_and_completes_once_approved(gateway: gw.RunningGateway,
                                                                                people: People) -> None:
    rec = Recorder()
    async with connect(gateway.url("everything"), people.alice, "legacy", rec) as client:
        call = asyncio.create_task(client.call_tool("get-sum", {"a": 5000, "b": 7}))
        approval = await pending(gateway, people.bob, "alice")
        assert approval["status"] == "pending" and approval["rule"] == "large-sums-need-approval"
        started = time.monotonic()
        assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
        result = await asyncio.wait_for(call, 10)
        released_after = time.monotonic() - started
    assert "5007" in text_of(result) and not result.is_error
    assert released_after < 2.0
    assert any(approval["id"] in json.dumps(getattr(log, "data", log), default=str) for log in rec.logs), rec.logs
    events = gateway.records()
    kinds = [r["event"] for r in events if r.get("approval") == approval["id"]]
    assert kinds[:4] == ["approval.requested", "approval.decided", "approval.granted", "approval.executed"]
    forwarded = [r for r in events if r["event"] == "rpc.request" and r.get("approval") == approval["id"]]
    assert len(forwarded) == 1, "the approved call ran exactly once"


async def test_modern_client_retries_with_sealed_state_and_completes(gateway: gw.RunningGateway,
                                                                      people: People) -> None:
    async with connect(gateway.url("everything"), people.alice, MODERN) as client:
        call = asyncio.create_task(client.call_tool("get-sum", {"a": 6000, "b": 1}))
        approval = await pending(gateway, people.bob, "alice")
        await asyncio.sleep(5.0)  # past approvals.hold: the client has its input-required state and retried
        assert not call.done()
        assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
        result = await asyncio.wait_for(call, 10)
    assert "6001" in text_of(result)
    held = [r for r in gateway.records() if r["event"] == "approval.held" and r.get("approval") == approval["id"]]
    assert held, "the first round ended with the state handed to the client"


async def test_a_denial_reaches_the_client_with_its_reason(gateway: gw.RunningGateway, people: People) -> None:
    for mode in ("legacy", MODERN):
        async with connect(gateway.url("everything"), people.alice, mode) as client:
            call = asyncio.create_task(client.call_tool("get-sum", {"a": 7000 + len(mode), "b": 0}))
            approval = await pending(gateway, people.bob, "alice")
            assert (await decide(gateway, people.bob, approval["id"], "deny", "no transfers on Fridays")).status_code == 200
            with pytest.raises(Exception) as refused:
                result = await asyncio.wait_for(call, 10)
                assert result.is_error, "a denied call must not return a result"
            assert "no transfers on Fridays" in str(refused.value), (mode, str(refused.value))


# ── who may decide ───────────────────────────────────────────────────────────
async def test_requester_and_non_approvers_cannot_decide(gateway: gw.RunningGateway, people: People) -> None:
    async with connect(gateway.url("everything"), people.carol, "legacy") as client:
        call = asyncio.create_task(client.call_tool("get-sum", {"a": 8000, "b": 2}))
        approval = await pending(gateway, people.bob, "carol")
        own = await decide(gateway, people.carol, approval["id"], "approve")
        assert own.status_code == 403 and "you requested this call" in own.json()["error"]
        outsider = await decide(gateway, people.dave, approval["id"], "approve")
        assert outsider.status_code == 403
        async with gateway.http(people.bob) as http:
            assert (await http.get(f"{gateway.base}/api/v1/approvals/{approval['id']}")).json()["status"] == "pending"
        assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
        assert "8002" in text_of(await asyncio.wait_for(call, 10))
    refused = [r for r in gateway.records() if r["event"] == "auth.forbidden" and r.get("approval") == approval["id"]]
    assert sorted(r["principal"]["subject"] for r in refused) == ["carol", "dave"], "each 403 is in the ledger"
    async with gateway.http(people.bob) as http:
        odd = await http.get(f"{gateway.base}/api/v1/approvals", params={"limit": "\u00b2"})
    assert odd.status_code == 400 and "limit" in odd.json()["error"]


async def test_two_approvers_are_needed_when_the_rule_says_two(gateway: gw.RunningGateway, people: People) -> None:
    async with connect(gateway.url("everything"), people.alice, "legacy") as client:
        call = asyncio.create_task(client.call_tool("echo", {"message": "wire 10000 to acct 9"}))
        approval = await pending(gateway, people.bob, "alice")
        assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
        again = await decide(gateway, people.bob, approval["id"], "approve")
        assert again.status_code == 409, "the same person cannot count twice"
        await asyncio.sleep(0.5)
        assert not call.done(), "one approval of two must not release the call"
        assert (await decide(gateway, people.erin, approval["id"], "approve")).status_code == 200
        assert "wire 10000" in text_of(await asyncio.wait_for(call, 10))


# ── exactly once, exactly this call ──────────────────────────────────────────
MODERN_HEADERS = {"Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
                  "Mcp-Method": "tools/call", "Mcp-Name": "get-sum"}
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


async def raw_call(gateway: gw.RunningGateway, token: str, args: dict[str, Any], expect: int = 200,
                   **extra: Any) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "get-sum", "arguments": args, "_meta": META, **extra}}
    async with gateway.http(token) as http:
        r = await http.post(gateway.url("everything"), headers=MODERN_HEADERS, json=body)
    assert r.status_code == expect, r.text
    return r.json()


async def test_one_approval_runs_one_call_and_changed_arguments_need_a_new_one(gateway: gw.RunningGateway,
                                                                             people: People) -> None:
    first = await raw_call(gateway, people.dave, {"a": 9000, "b": 3})
    state = first["result"]["requestState"]
    approval = await pending(gateway, people.bob, "dave")
    assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200

    changed = await raw_call(gateway, people.dave, {"a": 9000, "b": 4}, 400, requestState=state)
    assert "error" in changed and "different call" in changed["error"]["message"]
    stolen = await raw_call(gateway, people.alice, {"a": 9000, "b": 3}, 400, requestState=state)
    assert "error" in stolen and "another caller" in stolen["error"]["message"]

    done = await raw_call(gateway, people.dave, {"a": 9000, "b": 3}, requestState=state)
    assert "9003" in json.dumps(done["result"]), "refusals above consumed nothing"
    replayed = await raw_call(gateway, people.dave, {"a": 9000, "b": 3}, requestState=state)
    assert "error" in replayed and "already ran" in replayed["error"]["message"]
    repeated = await raw_call(gateway, people.dave, {"a": 9000, "b": 3})
    assert repeated["result"]["resultType"] == "input_required", "the same call again needs a new approval"
    fresh = await pending(gateway, people.bob, "dave")
    assert fresh["id"] != approval["id"]


# ── survives a restart; expiry ───────────────────────────────────────────────
async def test_a_pending_approval_survives_a_restart(tmp_path: Path, idp: Provider, upstream: Proc,
                                                     people: People) -> None:
    running = await asyncio.to_thread(gw.start, tmp_path, idp.issuer, servers(upstream), POLICIES,
                                      {"approvals": APPROVALS})
    try:
        first = await raw_call(running, people.alice, {"a": 4242, "b": 0})
        approval = await pending(running, people.bob, "alice")
        await asyncio.to_thread(running.stop)
        running = await asyncio.to_thread(gw.start, tmp_path, idp.issuer, servers(upstream), POLICIES,
                                          {"approvals": APPROVALS}, port=running.port)
        assert (await pending(running, people.bob, "alice"))["id"] == approval["id"]
        assert (await decide(running, people.bob, approval["id"], "approve")).status_code == 200
        done = await raw_call(running, people.alice, {"a": 4242, "b": 0},
                              requestState=first["result"]["requestState"])
        assert "4242" in json.dumps(done["result"])
    finally:
        await asyncio.to_thread(running.stop)


async def test_an_expired_approval_is_a_recorded_denial(tmp_path: Path, idp: Provider, upstream: Proc,
                                                        people: People) -> None:
    running = await asyncio.to_thread(gw.start, tmp_path, idp.issuer, servers(upstream), POLICIES,
                                      {"approvals": {"hold": "1s", "timeout": "2s"}})
    try:
        first = await raw_call(running, people.alice, {"a": 1234, "b": 0})
        await asyncio.sleep(3.5)
        late = await raw_call(running, people.alice, {"a": 1234, "b": 0}, requestState=first["result"]["requestState"])
        assert "error" in late and "expired" in late["error"]["message"], late
        assert "approval.expired" in [r["event"] for r in running.records()]
    finally:
        await asyncio.to_thread(running.stop)


# ── two replicas on one PostgreSQL ───────────────────────────────────────────
async def test_a_decision_on_one_replica_releases_the_call_held_on_another(tmp_path: Path, idp: Provider,
                                                                          upstream: Proc, people: People) -> None:
    with throwaway_schema("lg_apr") as schema:
        extra = {"storage": url_for(schema), "approvals": APPROVALS}
        a = await asyncio.to_thread(gw.start, tmp_path / "a", idp.issuer, servers(upstream), POLICIES,
                                    {**extra, "audit": {**gw.AUDIT, "replica": "a"}})
        b = await asyncio.to_thread(gw.start, tmp_path / "b", idp.issuer, servers(upstream), POLICIES,
                                    {**extra, "audit": {**gw.AUDIT, "replica": "b"}})
        try:
            async with connect(b.url("everything"), people.alice, "legacy") as client:
                call = asyncio.create_task(client.call_tool("get-sum", {"a": 3333, "b": 3}))
                approval = await pending(a, people.bob, "alice")
                started = time.monotonic()
                assert (await decide(a, people.bob, approval["id"], "approve")).status_code == 200
                result = await asyncio.wait_for(call, 10)
                across = time.monotonic() - started
            assert "3336" in text_of(result)
            assert across < 2.0, f"released {across:.2f}s after the decision on the other replica"
        finally:
            await asyncio.to_thread(a.stop)
            await asyncio.to_thread(b.stop)


# ── the Tasks extension: a task to poll ──────────────────────────────────────
TASKS_META = {"io.modelcontextprotocol/protocolVersion": MODERN,
              "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}


async def modern_post(gateway: gw.RunningGateway, token: str, method: str, params: dict[str, Any],
                      name: str | None = None) -> httpx.Response:
    headers = {**MODERN_HEADERS, "Mcp-Method": method}
    headers.pop("Mcp-Name")
    if name:
        headers["Mcp-Name"] = name
    async with gateway.http(token) as http:
        return await http.post(gateway.url("everything"), headers=headers, json={
            "jsonrpc": "2.0", "id": 5, "method": method, "params": {**params, "_meta": TASKS_META}})


async def test_a_tasks_client_polls_a_task_that_runs_once_approved(gateway: gw.RunningGateway,
                                                                   people: People) -> None:
    created = (await modern_post(gateway, people.alice, "tools/call",
                                 {"name": "get-sum", "arguments": {"a": 5555, "b": 1}}, "get-sum")).json()["result"]
    assert created["resultType"] == "task" and created["status"] == "working", created
    task_id = created["taskId"]
    polled = (await modern_post(gateway, people.alice, "tasks/get", {"taskId": task_id})).json()["result"]
    assert polled["status"] == "working" and "apr_" in polled["statusMessage"]
    other = (await modern_post(gateway, people.dave, "tasks/get", {"taskId": task_id})).json()
    assert "error" in other, "another identity cannot poll the task"

    approval = await pending(gateway, people.bob, "alice")
    assert approval["id"] in polled["statusMessage"]
    assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
    for _ in range(100):
        polled = (await modern_post(gateway, people.alice, "tasks/get", {"taskId": task_id})).json()["result"]
        if polled["status"] != "working":
            break
        await asyncio.sleep(0.1)
    assert polled["status"] == "completed" and "5556" in json.dumps(polled["result"]), polled
    ran = [r for r in gateway.records() if r["event"] == "rpc.request" and r.get("approval") == approval["id"]]
    assert len(ran) == 1


async def test_a_task_held_at_shutdown_is_recorded_and_its_approval_runs_the_call_sent_again(
        tmp_path: Path, idp: Provider, upstream: Proc, people: People) -> None:
    """A task waiting for its approval was cancelled at shutdown without a word: no record of its end, and a
    client polling it after the restart was told only "unknown task". Now its end is recorded (`approval.held`,
    reason `shutdown`, naming the task), the approval stays pending, the poll says what to do, and the
    identical call sent again once approved runs once."""
    running = await asyncio.to_thread(gw.start, tmp_path, idp.issuer, servers(upstream), POLICIES,
                                      {"approvals": APPROVALS})
    args = {"a": 6161, "b": 1}
    try:
        created = (await modern_post(running, people.alice, "tools/call", {"name": "get-sum", "arguments": args},
                                     "get-sum")).json()["result"]
        assert created["resultType"] == "task", created
        approval = await pending(running, people.bob, "alice")
        await asyncio.to_thread(running.stop)
        held = [r for r in running.records() if r["event"] == "approval.held" and r.get("task") == created["taskId"]]
        assert len(held) == 1 and held[0]["reason"] == "shutdown" and held[0]["approval"] == approval["id"], held
        running = await asyncio.to_thread(gw.start, tmp_path, idp.issuer, servers(upstream), POLICIES,
                                          {"approvals": APPROVALS}, port=running.port)
        poll = (await modern_post(running, people.alice, "tasks/get", {"taskId": created["taskId"]})).json()
        assert "send the identical call again" in poll["error"]["message"], poll
        assert (await pending(running, people.bob, "alice"))["id"] == approval["id"], "the approval stays pending"
        assert (await decide(running, people.bob, approval["id"], "approve")).status_code == 200
        again = await raw_call(running, people.alice, args)
        assert "6162" in json.dumps(again["result"]), again
        ran = [r for r in running.records() if r["event"] == "rpc.request" and r.get("approval") == approval["id"]]
        assert len(ran) == 1
    finally:
        await asyncio.to_thread(running.stop)

# ── a rule that needs the requester's justification ─────────────────────────
async def approval_of(gateway: gw.RunningGateway, token: str, approval_id: str) -> dict[str, Any]:
    async with gateway.http(token) as http:
        return (await http.get(f"{gateway.base}/api/v1/approvals/{approval_id}")).json()


async def test_justification_is_asked_by_elicitation_in_both_eras(gateway: gw.RunningGateway,
                                                                  people: People) -> None:
    for mode, b in (("legacy", 200001), (MODERN, 200002)):
        rec = Recorder(elicit_content={"justification": f"month-end close ({mode})"})
        async with connect(gateway.url("everything"), people.alice, mode, rec) as client:
            call = asyncio.create_task(client.call_tool("get-sum", {"a": 1, "b": b}))
            approval = await pending(gateway, people.bob, "alice")
            assert rec.elicitations, f"{mode}: the gateway asked why"
            assert approval["justification"] == f"month-end close ({mode})"
            assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
            assert str(b + 1) in text_of(await asyncio.wait_for(call, 10))


async def test_justification_from_meta_or_the_call_is_refused(gateway: gw.RunningGateway, people: People) -> None:
    refused = await raw_call(gateway, people.dave, {"a": 1, "b": 300000})
    assert "error" in refused and "io.ledgergate/justification" in refused["error"]["message"]
    given = await raw_call(gateway, people.dave, {"a": 1, "b": 300001},
                           _meta={**META, "io.ledgergate/justification": "reconciling ticket FIN-42"})
    assert given["result"]["resultType"] == "input_required"
    approval = await pending(gateway, people.bob, "dave")
    assert approval["justification"] == "reconciling ticket FIN-42"


async def test_a_handshake_client_over_a_modern_only_upstream_is_held_and_released(gateway: gw.RunningGateway,
                                                                                   people: People) -> None:
    """The bridge keeps working under approvals: a 2025 client, a 2026-07-28-only server."""
    async with connect(gateway.url("modern"), people.alice, "legacy") as client:
        call = asyncio.create_task(client.call_tool("add", {"a": 2500, "b": 5}))
        approval = await pending(gateway, people.bob, "alice")
        assert approval["rule"] == "large-adds-need-approval"
        assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
        result = await asyncio.wait_for(call, 10)
    assert result.structured_content["sum"] == 2505


# ── a call that waited runs under the config in force when it is approved ───
def reconfigure(gateway: gw.RunningGateway, change: Any) -> None:
    """Edit the running gateway's config and signal it (SIGHUP), as an operator would."""
    import signal

    import yaml

    path = gateway.dir / "ledgergate.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    gateway.proc.proc.send_signal(signal.SIGHUP)


async def refused_record(gateway: gw.RunningGateway, approval_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in gateway.records() if r["event"] == "approval.refused" and r.get("approval") == approval_id]
        if found:
            return found[-1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no approval.refused record for {approval_id}")


@pytest.fixture
def fresh_gateway(tmp_path: Path, idp: Provider, upstream: Proc) -> Iterator[gw.RunningGateway]:
    running = gw.start(tmp_path, idp.issuer, servers(upstream), POLICIES,
                       {"approvals": {**APPROVALS, "hold": "20s"}})
    yield running
    running.stop()


async def test_a_task_approved_after_its_requester_was_disabled_does_not_run(fresh_gateway: gw.RunningGateway,
                                                                            people: People) -> None:
    """Off-boarding reached new requests at once, but a call waiting as a task (up to approvals.timeout)
    ran on the departed person's behalf once approved."""
    gateway = fresh_gateway
    created = (await modern_post(gateway, people.alice, "tools/call",
                                 {"name": "get-sum", "arguments": {"a": 7777, "b": 1}}, "get-sum")).json()["result"]
    assert created["resultType"] == "task", created
    approval = await pending(gateway, people.bob, "alice")
    reconfigure(gateway, lambda doc: doc["identity"].__setitem__("disabled_subjects", ["alice"]))
    for _ in range(100):
        probe = await modern_post(gateway, people.alice, "tools/call", {"name": "echo", "arguments": {"message": "x"}},
                                  "echo")
        if probe.status_code == 401:
            break
        await asyncio.sleep(0.1)
    assert probe.status_code == 401, "the reload took effect"
    assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
    refused = await refused_record(gateway, approval["id"])
    assert "disabled" in refused["reason"]
    assert not [r for r in gateway.records() if r["event"] == "rpc.request" and r.get("approval") == approval["id"]]


@pytest.mark.parametrize("change, why", [
    (lambda doc: doc["policies"].insert(0, {"name": "freeze-sums", "match": {"servers": ["everything"],
                                                                            "tools": ["get-sum"]}, "effect": "deny"}),
     "refuses it (rule freeze-sums)"),
    (lambda doc: doc["policies"].insert(0, {"name": "sums-need-the-cfo", "match": {"servers": ["everything"],
                                                                                  "tools": ["get-sum"]},
                                            "effect": "approve", "approvers": {"subjects": ["cfo"]}}),
     "another approval rule (sums-need-the-cfo)"),
    (lambda doc: doc["policies"][1].__setitem__("approvers", {"groups": ["approvers"], "count": 2}),
     "approvers of rule large-sums-need-approval have changed"),
])
async def test_a_call_approved_after_policy_changed_does_not_run(fresh_gateway: gw.RunningGateway, people: People,
                                                                change: Any, why: str) -> None:
    """An emergency deny rule (or a stricter approval rule) reached new calls, but not one already waiting:
    held on the wire, or waiting as a task."""
    gateway = fresh_gateway
    created = (await modern_post(gateway, people.alice, "tools/call",
                                 {"name": "get-sum", "arguments": {"a": 8888, "b": 1}}, "get-sum")).json()["result"]
    task_id = created["taskId"]
    task_approval = await pending(gateway, people.bob, "alice")

    async def held_call() -> str:
        from mcp.shared.exceptions import MCPError

        async with connect(gateway.url("everything"), people.alice, "legacy") as client:
            try:
                return f"ran: {text_of(await client.call_tool('get-sum', {'a': 9999, 'b': 1}))}"
            except MCPError as exc:
                return f"refused: {exc}"

    held = asyncio.create_task(held_call())
    held_approval = await pending(gateway, people.bob, "alice", exclude={task_approval["id"]})
    reconfigure(gateway, change)
    await asyncio.sleep(1.5)  # SIGHUP is read at once; the watcher would see it within a second too
    for approval in (task_approval, held_approval):
        assert (await decide(gateway, people.bob, approval["id"], "approve")).status_code == 200
    said = await asyncio.wait_for(held, 30)
    assert said.startswith("refused:") and "no longer runs" in said and why in said, said
    for _ in range(100):
        polled = (await modern_post(gateway, people.alice, "tasks/get", {"taskId": task_id})).json()["result"]
        if polled["status"] != "working":
            break
        await asyncio.sleep(0.1)
    assert polled["status"] == "failed" and why in json.dumps(polled), polled
    ran = [r for r in gateway.records() if r["event"] == "rpc.request"
           and r.get("approval") in (task_approval["id"], held_approval["id"])]
    assert ran == []
