"""Signals of a real gateway (`ledgergate serve`) in front of server-everything, with real OIDC
tokens: the Prometheus exposition at /metrics, parsed with prometheus_client's own parser, after
allowed, denied, approval-held and masked calls; JSON log lines naming the request id; and
OpenTelemetry spans sent over OTLP/HTTP to a small receiver that decodes them with the OTLP
protobuf definitions (opentelemetry-proto), as a collector would."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import gateway as gw
from tests.support.client import MODERN, connect
from tests.support.oidc import Provider
from tests.support.procs import Proc, free_port, start_everything

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


async def test_request_metrics_never_take_a_server_name_from_the_path(gateway: gw.RunningGateway,
                                                                       idp: Provider) -> None:
    """Anyone can send a request to /mcp/<anything>. Were the path's text a label, every new name
    would be a new series kept for the process's life and /metrics would grow without end (and carry
    what a caller wrote). Such requests count under one label, and a configured server keeps its own."""
    before = await scrape(gateway)
    names = [f"no-such-server-{i}-{'x' * 100}" for i in range(40)] + ["(unknown)"]
    async with httpx.AsyncClient(timeout=10) as http:
        for name in names:
            r = await http.post(gateway.url(name), json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert r.status_code == 404, (name, r.status_code)
    after = await scrape(gateway)
    new_series = [key for key in after if key not in before]
    assert not any("no-such-server" in v for _, labels in after for _, v in labels)
    assert len(new_series) <= 16  # one label's series (a counter and a histogram), not a set per name
    assert delta(before, after, "ledgergate_http_requests_total", server="(unknown)", status="404") == len(names)
    await modern_call(gateway, idp.token("ann", ["staff"]), "echo", {"message": "counted"})
    assert delta(after, await scrape(gateway), "ledgergate_http_requests_total", server="everything",
                 status="200") == 1


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


# ── OpenTelemetry over OTLP/HTTP ────────────────────────────────────────────
class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1: decodes each ExportTraceServiceRequest into
    (resource attributes, span) pairs."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for rs in request.resource_spans:
                    resource = {kv.key: _any(kv.value) for kv in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        receiver.spans.extend((resource, span) for span in ss.spans)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _any(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def attributes(span: Any) -> dict[str, Any]:
    return {kv.key: _any(kv.value) for kv in span.attributes}


def start_traced(directory: Path, idp: Provider, upstream: Proc, extra: dict[str, Any]) -> gw.RunningGateway:
    """`ledgergate serve` under `python -X importtime`, so its log also lists every module it imports."""
    directory.mkdir(parents=True)
    port = free_port()
    config = gw.write_config(directory, port, idp.issuer,
                             {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES, extra)
    proc = Proc([sys.executable, "-X", "importtime", "-m", "ledgergate.cli", "serve", "--config", str(config)],
                env={"PYTHONUNBUFFERED": "1"}, cwd=directory, port=port, log=directory / "gateway.log")
    return gw.RunningGateway(proc, port, directory)


def imported(gateway: gw.RunningGateway) -> set[str]:
    return {line.split("|")[-1].strip() for line in gateway.log().splitlines() if line.startswith("import time:")}


async def test_a_span_per_request_reaches_an_otlp_collector(tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    receiver = OtlpReceiver()
    gateway = await asyncio.to_thread(start_traced, tmp_path / "gw", idp, upstream, {
        "telemetry": {"otlp_endpoint": receiver.url, "service_name": "ledgergate-under-test"}})
    alice = idp.token("alice", ["staff"])
    try:
        assert "result" in await modern_call(gateway, alice, "echo", {"message": "arg-secret-xyz"})
        denied = await modern_call(gateway, alice, "echo", {"message": "forbidden arg-secret-xyz"})
        denied_id = denied["error"]["data"]["requestId"]
        deadline = time.monotonic() + 15
        while len([s for _, s in receiver.spans if s.name == "tools/call echo"]) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(gateway.stop)
        receiver.stop()
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    calls = {attributes(s)["ledgergate.request_id"]: (resource, s) for resource, s in receiver.spans
             if s.name == "tools/call echo"}
    assert len(calls) == 2, [s.name for _, s in receiver.spans]
    from opentelemetry.proto.trace.v1 import trace_pb2

    resource, refused = calls.pop(denied_id)
    assert resource["service.name"] == "ledgergate-under-test"
    assert refused.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert refused.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert attributes(refused) == {
        "ledgergate.server": "everything", "mcp.method.name": "tools/call", "gen_ai.tool.name": "echo",
        "ledgergate.request_id": denied_id, "ledgergate.era": "modern", "ledgergate.decision": "deny",
        "ledgergate.rule": "no-forbidden-echo", "ledgergate.outcome": "refused", "ledgergate.error_code": -32003}
    [(allowed_id, (_, allowed))] = calls.items()
    assert {k: v for k, v in attributes(allowed).items() if k != "ledgergate.request_id"} == {
        "ledgergate.server": "everything", "mcp.method.name": "tools/call", "gen_ai.tool.name": "echo",
        "ledgergate.era": "modern", "ledgergate.decision": "allow", "ledgergate.rule": "staff-echo",
        "ledgergate.outcome": "ok"}
    assert allowed.status.code != trace_pb2.Status.STATUS_CODE_ERROR
    assert allowed.end_time_unix_nano > allowed.start_time_unix_nano
    # the span's request id is the one the ledger recorded for that call
    tail = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "tail", "-n", "1000", "--config",
                           str(gateway.dir / "ledgergate.yaml")], cwd=gateway.dir, capture_output=True, text=True)
    recorded = [json.loads(line) for line in tail.stdout.splitlines() if line.startswith("{")]
    assert any(r["event"] == "rpc.request" and r["request_id"] == allowed_id
               and r["args"] == {"message": "arg-secret-xyz"} for r in recorded)
    # no argument ever reaches a span
    for _, span in receiver.spans:
        assert "arg-secret-xyz" not in repr(span)
    assert "opentelemetry.sdk.trace" in imported(gateway)


async def test_what_a_caller_chose_reaches_a_span_masked_and_the_collectors_password_no_log(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    """A span's name and target attribute carried the call's target as sent (leak probe H2): a tool named
    with a card number, a resource URI with an SSN in its query went to the collector in the clear although the
    ledger masked them; and the start-up line quoted `otlp_endpoint` with its credentials (M2)."""
    receiver = OtlpReceiver()
    host = receiver.url.removeprefix("http://")
    gateway = await asyncio.to_thread(start_traced, tmp_path / "gw", idp, upstream, {
        "telemetry": {"otlp_endpoint": f"http://collector:OtlpPassw0rd@{host}"},
        "policies": [{"name": "staff", "match": {"groups": ["staff"]}, "effect": "allow"}]})  # forwarded: spans
    alice = idp.token("alice", ["staff"])
    try:
        assert (await modern_call(gateway, alice, "pay-4111111111111111", {"message": "x"}))["id"] == 1
        async with gateway.http(alice) as http:
            r = await http.post(gateway.url("everything"), headers={
                "Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "resources/read", "Mcp-Name": "bank://customers/C-1?ssn=123-45-6789"}, json={
                "jsonrpc": "2.0", "id": 2, "method": "resources/read",
                "params": {"uri": "bank://customers/C-1?ssn=123-45-6789", "_meta": META}})
            assert r.status_code == 200 and r.json()["id"] == 2, r.text
        deadline = time.monotonic() + 15
        while len(receiver.spans) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(gateway.stop)
        receiver.stop()
    names = sorted(span.name for _, span in receiver.spans)
    assert "tools/call pay-[CREDIT_CARD]" in names, names
    assert any(n.startswith("resources/read bank://customers/C-1?ssn=[US_SSN]") for n in names), names
    for _, span in receiver.spans:
        assert "4111111111111111" not in repr(span) and "123-45-6789" not in repr(span)
    log = gateway.log()
    assert "spans go to http://" in log and "OtlpPassw0rd" not in log and "collector:" not in log


async def test_with_telemetry_off_the_sdk_is_never_imported(tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    gateway = await asyncio.to_thread(start_traced, tmp_path / "gw", idp, upstream, {})
    alice = idp.token("alice", ["staff"])
    try:
        assert "result" in await modern_call(gateway, alice, "echo", {"message": "untraced"})
        assert "error" in await modern_call(gateway, alice, "echo", {"message": "forbidden"})
    finally:
        await asyncio.to_thread(gateway.stop)
    modules = imported(gateway)
    assert "ledgergate.gateway.pipeline" in modules and "ledgergate.gateway.telemetry" in modules
    assert not {m for m in modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))}
