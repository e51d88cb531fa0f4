"""Signals of a real gateway (`ledgergate serve`) in front of server-everything, with real OIDC
tokens: the Prometheus exposition at /metrics, parsed with prometheus_client's own parser, after
allowed, denied, approval-held and masked calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import gateway as gw
from tests.support.client import MODERN, connect
from tests.support.oidc import Provider
from tests.support.procs import Proc, start_everything

pytestmark = pytest.mark.node

POLICIES = [
    {"name": "no-forbidden-echo", "match": {"servers": ["everything"], "tools": ["echo"]},
     "when": 'args.message.startsWith("forbidden")', "effect": "deny"},
    {"name": "staff-echo", "match": {"groups": ["staff"], "servers": ["everything"], "tools": ["echo", "get-sum"]},
     "effect": "allow", "mask": "standard"},
    {"name": "large-sums-need-approval", "match": {"servers": ["everything"], "tools": ["get-sum"]},
     "when": "args.a > 1000", "effect": "approve", "approvers": {"groups": ["approvers"]}},
]
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    proc = start_everything()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def idp() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: Provider, upstream: Proc) -> Iterator[gw.RunningGateway]:
    running = gw.start(tmp_path_factory.mktemp("signals"), idp.issuer,
                       {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES,
                       {"approvals": {"hold": "20s", "timeout": "10m"}})
    yield running
    running.stop()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(gateway: gw.RunningGateway) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{gateway.base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def modern_call(gateway: gw.RunningGateway, token: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    headers = {"Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": "tools/call", "Mcp-Name": tool}
    async with gateway.http(token) as http:
        r = await http.post(gateway.url("everything"), headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": META}})
    assert r.status_code in (200, 403), r.text
    return r.json()


async def test_metrics_count_calls_decisions_masking_and_the_ledger(gateway: gw.RunningGateway,
                                                                    idp: Provider) -> None:
    alice = idp.token("alice", ["staff"])
    before = await scrape(gateway)
    for i in range(3):
        assert "result" in await modern_call(gateway, alice, "echo", {"message": f"hello {i}"})
    # one answer carrying an SSN: masked for the client (answer) and in the ledger's copy of the arguments
    masked = await modern_call(gateway, alice, "echo", {"message": "my ssn is 536-22-1234"})
    assert "536-22-1234" not in json.dumps(masked)
    assert "error" in await modern_call(gateway, alice, "echo", {"message": "forbidden words"})
    assert "error" in await modern_call(gateway, alice, "get-env", {})  # no rule allows it
    await asyncio.sleep(1.5)  # a checkpoint tick (checkpoint_interval: 1s)
    after = await scrape(gateway)

    assert delta(before, after, "ledgergate_policy_decisions_total", decision="allow", rule="staff-echo") == 4
    assert delta(before, after, "ledgergate_policy_decisions_total", decision="deny", rule="no-forbidden-echo") == 1
    assert delta(before, after, "ledgergate_policy_decisions_total", decision="deny", rule="(default deny)") == 1
    assert delta(before, after, "ledgergate_calls_total", server="everything", outcome="ok") == 4
    assert delta(before, after, "ledgergate_calls_total", server="everything", outcome="denied") == 2
    assert delta(before, after, "ledgergate_masked_values_total", server="everything", detector="US_SSN",
                 where="answer") == 1
    assert delta(before, after, "ledgergate_masked_values_total", server="everything", detector="US_SSN",
                 where="ledger") == 1
    requests = delta(before, after, "ledgergate_ledger_records_total", event="rpc.request")
    responses = delta(before, after, "ledgergate_ledger_records_total", event="rpc.response")
    denials = delta(before, after, "ledgergate_ledger_records_total", event="policy.denied")
    assert (requests, responses, denials) == (4, 4, 2)
    # every durable record was timed once
    records = sum(v for (name, _), v in after.items() if name == "ledgergate_ledger_records_total") - \
        sum(v for (name, _), v in before.items() if name == "ledgergate_ledger_records_total")
    assert delta(before, after, "ledgergate_ledger_append_seconds_count") == records >= 10
    assert value(after, "ledgergate_ledger_append_seconds_bucket", le="+Inf") == \
        value(after, "ledgergate_ledger_append_seconds_count")
    # state read at scrape time: the log is signed up to date, the checkpoint is fresh
    assert value(after, "ledgergate_ledger_unsigned_records") == 0
    assert 0 <= value(after, "ledgergate_ledger_checkpoint_age_seconds") < 3
    assert value(after, "ledgergate_ledger_records") > value(before, "ledgergate_ledger_records")
    assert value(after, "ledgergate_approvals_pending") == 0
    # and the checkpoint age grows while nothing new is signed
    await asyncio.sleep(2.5)
    idle = await scrape(gateway)
    assert value(idle, "ledgergate_ledger_checkpoint_age_seconds") >= 2


async def test_metrics_follow_an_approval_from_request_to_decision(gateway: gw.RunningGateway,
                                                                   idp: Provider) -> None:
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["approvers"])
    before = await scrape(gateway)
    async with connect(gateway.url("everything"), alice, "legacy") as client:
        call = asyncio.create_task(client.call_tool("get-sum", {"a": 4000, "b": 2}))
        async with gateway.http(bob) as http:
            for _ in range(150):
                listed = (await http.get(f"{gateway.base}/api/v1/approvals", params={"status": "pending"})).json()
                if listed["approvals"]:
                    break
                await asyncio.sleep(0.1)
            [approval] = listed["approvals"]
            held = await scrape(gateway)
            assert value(held, "ledgergate_approvals_pending") == 1
            await asyncio.sleep(1.0)  # a measurable wait before the decision
            decided = await http.post(f"{gateway.base}/api/v1/approvals/{approval['id']}/approve",
                                      json={"reason": "checked"})
            assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(call, 15)
        assert "4002" in " ".join(getattr(c, "text", "") for c in result.content)
    deadline = time.monotonic() + 5
    while True:  # the decision latency is observed once the approval's request time is read back
        after = await scrape(gateway)
        if delta(before, after, "ledgergate_approval_decision_seconds_count") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    rule = "large-sums-need-approval"
    assert delta(before, after, "ledgergate_policy_decisions_total", decision="approve", rule=rule) == 1
    assert delta(before, after, "ledgergate_approvals_requested_total", rule=rule) == 1
    assert delta(before, after, "ledgergate_approval_decisions_total", verdict="approve") == 1
    assert delta(before, after, "ledgergate_approvals_closed_total", status="approved") == 1
    assert delta(before, after, "ledgergate_approval_decision_seconds_count") == 1
    waited = delta(before, after, "ledgergate_approval_decision_seconds_sum")
    assert 1.0 <= waited < 15, waited
    assert delta(before, after, "ledgergate_approval_decision_seconds_bucket", le="1.0") == 0
    assert delta(before, after, "ledgergate_approval_decision_seconds_bucket", le="15.0") == 1
    assert value(after, "ledgergate_approvals_pending") == 0


# ── JSON logs carry the request id ──────────────────────────────────────────
async def test_a_warning_logged_while_serving_a_call_names_the_request_id_the_client_quotes(
        tmp_path: Path, idp: Provider) -> None:
    dying = start_everything()
    gateway = await asyncio.to_thread(gw.start, tmp_path / "gw", idp.issuer,
                                      {"everything": {"url": f"http://127.0.0.1:{dying.port}/mcp"}}, POLICIES)
    alice = idp.token("alice", ["staff"])
    try:
        assert "result" in await modern_call(gateway, alice, "echo", {"message": "still up"})
        dying.stop()  # the upstream goes away between calls
        headers = {"Accept": "application/json", "Content-Type": "application/json",
                   "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
        async with gateway.http(alice) as http:
            r = await http.post(gateway.url("everything"), headers=headers, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "arg-never-logged"}, "_meta": META}})
        error = r.json()["error"]
        request_id = error["data"]["requestId"]
        assert request_id.startswith("req_") and f"quote request id {request_id}" in error["message"], error
    finally:
        await asyncio.to_thread(gateway.stop)
        dying.stop()
    lines = [json.loads(line) for line in gateway.log().splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("request_id") == request_id]
    assert any(line["level"] == "warning" and "upstream everything failed" in line["message"] for line in warned), \
        warned or lines[-10:]
    # lines written outside any call (startup, shutdown) carry no id
    assert any("request_id" not in line and "startup" in line["message"].lower() for line in lines), lines[:5]
    assert "arg-never-logged" not in gateway.log()
