"""SIGTERM, as Kubernetes sends it, to a real gateway (`ledgergate serve`) in front of server-everything,
with real OIDC tokens: the gateway drains before it stops.

- at once: /readyz says not ready (the Service stops routing here) and a new call is refused with a
  precise 503 JSON-RPC error, recorded (`request.refused`);
- a call in flight that ends within `limits.drain_timeout` gets its answer;
- a call still running when the drain ends gets a JSON-RPC error with its request id (a 503 when its
  answer had not begun, the last event of its stream when it had), and its outcome is in the ledger
  (`rpc.response` with the error: it may have run upstream);
- a call held for approval is released (`approval.held`, reason shutdown) and its approval stays pending;
- the ledger is closed last: every one of those records is covered by the final signed checkpoint and
  `ledgergate audit verify` passes.

Before this, the gateway cut every call off after a fixed 5 s with uvicorn's plain-text 500 and recorded
nothing about how it ended (probe report /work/probe/ha/REPORT.md, defect 1).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.client import MODERN
from tests.support.oidc import Provider
from tests.support.procs import Proc

pytestmark = pytest.mark.node

POLICIES = [
    {"name": "staff", "match": {"groups": ["staff"], "servers": ["everything"],
                                "tools": ["echo", "get-sum", "trigger-long-running-operation"]}, "effect": "allow"},
    {"name": "large-sums-need-approval", "match": {"servers": ["everything"], "tools": ["get-sum"]},
     "when": "args.a > 1000", "effect": "approve", "approvers": {"groups": ["approvers"]}},
]
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
DRAIN = 3.0
#: what the gateway answers (ledgergate.errors SHUTTING_DOWN, ledgergate.gateway.pipeline CUT_OFF), written out here so
#: this file also runs, and fails, against a gateway without them
SHUTTING_DOWN = -32016
CUT_OFF = "the gateway shut down before the call's answer; it may have run upstream"


def start(directory: Path, idp: Provider, upstream: Proc, limits: dict[str, Any] | None = None) -> gw.RunningGateway:
    return gw.start(directory, idp.issuer, {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES,
                    {"approvals": {"hold": "40s", "timeout": "10m"}, **({"limits": limits} if limits else {})})


async def modern(http: httpx.AsyncClient, gateway: gw.RunningGateway, rpc_id: int, tool: str,
                 args: dict[str, Any]) -> httpx.Response:
    """A 2026-07-28 call that takes a JSON answer only (nothing of it is sent before the answer)."""
    return await http.post(gateway.url("everything"), headers={
        "Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call", "Mcp-Name": tool}, json={
        "jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": META}})


async def streamed(http: httpx.AsyncClient, gateway: gw.RunningGateway, rpc_id: int, seconds: int,
                   began: asyncio.Event) -> list[dict[str, Any]]:
    """A handshake-era call whose answer is an SSE stream that has begun (progress events) when the drain
    ends; returns every JSON-RPC message of the stream."""
    url = gateway.url("everything")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    hello = await http.post(url, headers=headers, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert hello.status_code == 200, hello.text
    headers = {**headers, "Mcp-Session-Id": hello.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
    done = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert done.status_code == 202, done.text
    messages: list[dict[str, Any]] = []
    async with http.stream("POST", url, headers=headers, json={
            "jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
            "params": {"name": "trigger-long-running-operation", "arguments": {"duration": seconds, "steps": seconds},
                       "_meta": {"progressToken": "p1"}}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                messages.append(json.loads(line[5:]))
                began.set()
    return messages


def cli(gateway: gw.RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args, "--config",
                           str(gateway.dir / "ledgergate.yaml")], cwd=gateway.dir, capture_output=True, text=True,
                          check=False, timeout=120)


async def wait_pending(http: httpx.AsyncClient, gateway: gw.RunningGateway) -> dict[str, Any]:
    for _ in range(150):
        listed = (await http.get(f"{gateway.base}/api/v1/approvals", params={"status": "pending"})).json()
        if listed["approvals"]:
            return listed["approvals"][0]
        await asyncio.sleep(0.1)
    raise AssertionError("the call was never held for approval")


def exited(gateway: gw.RunningGateway, within: float) -> int:
    return gateway.proc.proc.wait(within)


async def test_sigterm_drains_then_answers_and_records_every_call_it_cuts_off(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    gateway = await asyncio.to_thread(start, tmp_path, idp, upstream, {"drain_timeout": f"{DRAIN:g}s"})
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["approvers"])
    try:
        async with gateway.http(alice) as http, gateway.http(bob) as approver:
            began = asyncio.Event()
            stream = asyncio.create_task(streamed(http, gateway, 41, 30, began))
            long = asyncio.create_task(modern(http, gateway, 42, "trigger-long-running-operation",
                                              {"duration": 30, "steps": 3}))
            held = asyncio.create_task(modern(http, gateway, 43, "get-sum", {"a": 5000, "b": 1}))
            approval = await wait_pending(approver, gateway)
            await asyncio.wait_for(began.wait(), 10)
            short = asyncio.create_task(modern(http, gateway, 44, "trigger-long-running-operation",
                                               {"duration": 1, "steps": 1}))
            await asyncio.sleep(0.3)
            assert not (long.done() or held.done() or short.done())

            gateway.proc.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            await asyncio.sleep(0.3)
            # at once: out of rotation, and a new call is refused with nothing forwarded
            ready = await http.get(f"{gateway.base}/readyz")
            assert ready.status_code == 503 and ready.json()["ready"] is False, ready.text
            assert "shutting down" in ready.json()["checks"]["shutdown"]
            refused = await modern(http, gateway, 45, "echo", {"message": "too late"})
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["id"] == 45 and body["error"]["code"] == SHUTTING_DOWN, body
            assert "shutting down" in body["error"]["message"] and body["error"]["data"]["forwarded"] is False
            refused_id = body["error"]["data"]["requestId"]

            # in flight and done within the drain: answered as usual
            done = await short
            assert done.status_code == 200 and "result" in done.json(), done.text

            # still running when the drain ends: a JSON-RPC error naming it, not a plain-text 500
            cut = await long
            waited = time.monotonic() - sent
            assert DRAIN - 0.5 <= waited < DRAIN + 5, waited
            assert cut.status_code == 503 and cut.headers["content-type"].startswith("application/json"), cut.text
            body = cut.json()
            assert body["id"] == 42 and body["error"]["code"] == SHUTTING_DOWN, body
            assert body["error"]["message"].startswith(CUT_OFF), body
            long_id = body["error"]["data"]["requestId"]
            assert long_id in body["error"]["message"] and body["error"]["data"]["forwarded"] is True

            # held for approval: released, naming the approval that stays pending
            released = await held
            assert released.status_code == 503, released.text
            body = released.json()
            assert body["id"] == 43 and body["error"]["code"] == SHUTTING_DOWN, body
            assert body["error"]["data"]["approvalId"] == approval["id"] and approval["id"] in body["error"]["message"]
            held_id = body["error"]["data"]["requestId"]

            # an answer already streaming: the error is its last event, with the call's id
            events = await asyncio.wait_for(stream, 10)
            final = events[-1]
            assert final.get("id") == 41 and final["error"]["code"] == SHUTTING_DOWN, events[-3:]
            assert final["error"]["message"].startswith(CUT_OFF)
            stream_id = final["error"]["data"]["requestId"]
        assert await asyncio.to_thread(exited, gateway, 20) == -signal.SIGTERM
    finally:
        await asyncio.to_thread(gateway.stop)

    log = gateway.log()
    assert "Internal Server Error" not in log and "ASGI callable returned without starting response" not in log, log
    recorded = gateway.records()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for record in recorded:
        if record.get("request_id"):
            by_request.setdefault(record["request_id"], []).append(record)
    for rid in (long_id, stream_id):
        outcome = [r for r in by_request[rid] if r["event"] == "rpc.response"]
        assert len(outcome) == 1 and outcome[0]["error"] == CUT_OFF and outcome[0]["reason"] == "shutdown", \
            by_request[rid]
        assert any(r["event"] == "rpc.request" for r in by_request[rid])
    [release] = [r for r in by_request[held_id] if r["event"] == "approval.held"]
    assert release["approval"] == approval["id"] and release["reason"] == "shutdown"
    assert not any(r["event"] == "rpc.request" for r in by_request[held_id])  # nothing was forwarded
    [refusal] = by_request[refused_id]
    assert refusal["event"] == "request.refused" and refusal["status"] == 503 and refusal["code"] == SHUTTING_DOWN
    assert refusal["principal"]["subject"] == "alice"
    # every forwarded call has exactly one outcome
    for rid, its in by_request.items():
        if any(r["event"] == "rpc.request" and r.get("method") == "tools/call" for r in its):
            assert len([r for r in its if r["event"] == "rpc.response"]) == 1, (rid, its)
    # closed last: the final checkpoint covers those records, and the ledger verifies
    verified = cli(gateway, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    sizes = re.findall(r"^ledgergate/\S+\n(\d+)\n", (gateway.dir / "data" / "witness.log").read_text(), re.MULTILINE)
    assert int(sizes[-1]) == max(r["seq"] for r in recorded) + 1, sizes[-3:]
    # the approval stays in the store: another replica, or this one restarted, lets the retry run once approved
    pending = cli(gateway, "approvals", "show", approval["id"], "--json")
    assert pending.returncode == 0 and json.loads(pending.stdout)["status"] == "pending", pending.stdout


async def test_a_second_signal_ends_the_drain_at_once(tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    """With the default drain (60 s), an operator's second SIGTERM (or Ctrl-C) ends it now: the call still
    running is answered and recorded all the same."""
    gateway = await asyncio.to_thread(start, tmp_path, idp, upstream)
    try:
        async with gateway.http(idp.token("alice", ["staff"])) as http:
            long = asyncio.create_task(modern(http, gateway, 7, "trigger-long-running-operation",
                                              {"duration": 30, "steps": 3}))
            await asyncio.sleep(1.0)
            gateway.proc.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert not long.done()  # the drain waits for it
            gateway.proc.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            cut = await long
            waited = time.monotonic() - sent
        assert cut.status_code == 503, cut.text
        assert waited < 4, waited
        body = cut.json()
        assert body["id"] == 7 and body["error"]["code"] == SHUTTING_DOWN and body["error"]["message"].startswith(CUT_OFF)
        assert await asyncio.to_thread(exited, gateway, 20) == -signal.SIGTERM
    finally:
        await asyncio.to_thread(gateway.stop)
    rid = body["error"]["data"]["requestId"]
    assert [r["event"] for r in gateway.records() if r.get("request_id") == rid] == ["rpc.request", "rpc.response"]


def test_the_constants_here_are_the_gateways() -> None:
    from ledgergate.gateway import pipeline

    assert (pipeline.SHUTTING_DOWN, pipeline.CUT_OFF) == (SHUTTING_DOWN, CUT_OFF)


async def test_sdk_clients_of_both_transports_get_the_cut_off_as_their_calls_error(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    """The official SDK client over Streamable HTTP (handshake era) and over legacy HTTP+SSE, where the answer
    travels on the session's GET stream, which the server ends when it closes connections: the cut-off error
    is on that stream before it ends, and each client raises it for its call."""
    from mcp.client.client import Client
    from mcp.client.sse import sse_client
    from mcp.shared.exceptions import MCPError

    from tests.support.client import connect

    gateway = await asyncio.to_thread(start, tmp_path, idp, upstream, {"drain_timeout": "1s"})
    token = idp.token("alice", ["staff"])
    errors: dict[str, MCPError] = {}

    async def call(name: str, client: Client, started: asyncio.Event) -> None:
        started.set()
        try:
            await client.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 3})
        except MCPError as exc:
            errors[name] = exc

    try:
        legacy = sse_client(f"{gateway.url('everything')}/sse", headers={"Authorization": f"Bearer {token}"},
                            timeout=30)
        async with connect(gateway.url("everything"), token, "legacy") as streamable, \
                Client(legacy, mode="legacy") as old:
            started = [asyncio.Event(), asyncio.Event()]
            calls = [asyncio.create_task(call("streamable", streamable, started[0])),
                     asyncio.create_task(call("legacy-sse", old, started[1]))]
            for event in started:
                await event.wait()
            await asyncio.sleep(1.0)
            gateway.proc.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*calls), 15)
        assert await asyncio.to_thread(exited, gateway, 20) == -signal.SIGTERM
    finally:
        await asyncio.to_thread(gateway.stop)
    assert set(errors) == {"streamable", "legacy-sse"}, errors
    request_ids = set()
    for exc in errors.values():
        assert exc.error.code == SHUTTING_DOWN and exc.error.message.startswith(CUT_OFF), exc.error
        request_ids.add(exc.error.data["requestId"])
    outcomes = [r for r in gateway.records() if r["event"] == "rpc.response" and r.get("request_id") in request_ids]
    assert sorted(r["error"] for r in outcomes) == [CUT_OFF, CUT_OFF], outcomes
