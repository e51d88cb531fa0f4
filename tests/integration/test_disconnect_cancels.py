"""A 2026-07-28 client cancels a call by closing its connection; a real gateway (`ledgergate serve`) must
read it so, and a handshake-era client's disconnect must stay what the spec says it is: no cancellation.

The stateless revision has no `notifications/cancelled` from the client: its client cancels by dropping the
request's connection. On the JSON answer path (and the stateless SSE one) the gateway did not watch for that:
the call ran on upstream until its answer or the server timeout, the upstream was never told, and the ledger
recorded a normal outcome for an answer nobody received. Now the connection's loss (noticed where the server
sees it, with no task per call) ends the call as a client's own cancellation does: the upstream gets
`notifications/cancelled` with the gateway's id for the call, the outcome is recorded (`rpc.response`,
`cancelled: true`, reason `client_disconnected`), a call held for approval is released with its approval
left pending (and nothing is forwarded when it is approved), and nothing leaks.

The upstream is a scripted handshake-era server (it records every message it gets, with its session) with
`nap*` tools: an SSE head at once, then nothing (or, with `ticks`, a progress notification every 0.2 s)
until `seconds` pass or the call is cancelled; `nap-ask` first asks the client something (an elicitation),
which a stateless client answers by sending the call again with its answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import gateway as gw
from tests.support.inprocess import scripted_upstream
from tests.support.oidc import Provider
from tests.support.scripted_handshake import ScriptedHandshake
from tests.support.upstream import read_body

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "hangup-test", "version": "1"}}
POLICIES = [
    {"name": "held-naps-need-approval", "match": {"servers": ["scripted"], "tools": ["nap-held"]},
     "effect": "approve", "approvers": {"groups": ["approvers"]}},
    {"name": "staff", "match": {"groups": ["staff"]}, "effect": "allow"},
    {"name": "staff-elicitation", "match": {"groups": ["staff"], "methods": ["elicitation/create"]}, "effect": "allow"},
]
#: how soon after the hangup the upstream must have been told (a nap lasts far longer)
PROMPT = 5.0
NAP = 30.0


class Napping(ScriptedHandshake):
    """`ScriptedHandshake` with `nap*` tools, each call's end kept in `ended` ((session, upstream id) →
    "answered" or "cancelled")."""

    def __init__(self) -> None:
        super().__init__(late_seconds=2.0)
        self.ended: dict[tuple[str | None, Any], str] = {}

    def naps(self, name: str) -> list[tuple[str | None, dict[str, Any]]]:
        return [(s, m) for s, m in self.calls() if str((m.get("params") or {}).get("name")) == name]

    def cancelled_ids(self) -> set[tuple[str | None, Any]]:
        return {(s, (m.get("params") or {}).get("requestId")) for s, m in self.cancellations()}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        body = await read_body(receive)
        message = json.loads(body or b"{}")
        params = message.get("params") or {}
        if message.get("method") != "tools/call" or not str(params.get("name", "")).startswith("nap"):
            async def again() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}
            await super().__call__(scope, again, send)
            return
        session = dict(scope["headers"]).get(b"mcp-session-id", b"").decode() or None
        self.received.append((session, message))
        mid, args = message["id"], params.get("arguments") or {}
        token = (params.get("_meta") or {}).get("progressToken")
        cancelled = self._cancel_of(session, mid)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
        if params.get("name") == "nap-ask":
            ask = {"jsonrpc": "2.0", "id": f"ask-{mid}", "method": "elicitation/create", "params": {
                "message": "nap?", "requestedSchema": {"type": "object", "properties": {}}}}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(ask)}\n\n".encode(),
                        "more_body": True})
            while not any(m.get("id") == ask["id"] and "method" not in m for _, m in self.received):
                await asyncio.sleep(0.05)
        deadline = asyncio.get_running_loop().time() + float(args.get("seconds", NAP))
        tick = 0
        try:
            while not cancelled.is_set():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    self.ended[(session, mid)] = "answered"
                    answer = {"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "napped"}]}}
                    await send({"type": "http.response.body", "body": f"data: {json.dumps(answer)}\n\n".encode()})
                    return
                if args.get("ticks") and token is not None:
                    tick += 1
                    note = {"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": tick}}
                    await send({"type": "http.response.body", "body": f"data: {json.dumps(note)}\n\n".encode(),
                                "more_body": True})
                try:
                    await asyncio.wait_for(cancelled.wait(), min(left, 0.2))
                except TimeoutError:
                    pass
            self.ended[(session, mid)] = "cancelled"  # sends nothing more, as server-everything does
            try:
                await asyncio.wait_for(self.release.wait(), 30)
            except TimeoutError:
                pass
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            return


class Setup:
    def __init__(self, upstream: Napping, gateway: gw.RunningGateway, alice: str, bob: str) -> None:
        self.upstream, self.gateway, self.alice, self.bob = upstream, gateway, alice, bob


async def start(tmp_path: Path, idp: Provider, upstream_url: str) -> gw.RunningGateway:
    return await asyncio.to_thread(gw.start, tmp_path, idp.issuer, {"scripted": {"url": upstream_url, "timeout": 60}},
                                   POLICIES, {"approvals": {"hold": "60s", "timeout": "10m", "grant_window": "5m"}})


@pytest.fixture
async def setup(tmp_path: Path, provider: Provider) -> AsyncIterator[Setup]:
    upstream = Napping()
    try:
        async with scripted_upstream(upstream) as url:
            gateway = await start(tmp_path, provider, url)
            try:
                yield Setup(upstream, gateway, provider.token("alice", ["staff"]), provider.token("bob", ["approvers"]))
            finally:
                upstream.release.set()
                await asyncio.to_thread(gateway.stop)
    finally:
        upstream.release.set()


# ── a client on a raw connection, so that the test closes it when it chooses ──
class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def head(self) -> str:
        """The response head, once it has come."""
        return (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 15)).decode("latin-1")

    async def until(self, marker: bytes) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(marker), 15)

    def hang_up(self, abort: bool = False) -> None:
        if abort:
            self.writer.transport.abort()  # RST
        else:
            self.writer.close()  # FIN


async def post(setup: Setup, body: dict[str, Any], headers: dict[str, str]) -> Raw:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.gateway.port)
    data = json.dumps(body).encode()
    lines = ["POST /mcp/scripted HTTP/1.1", f"Host: 127.0.0.1:{setup.gateway.port}",
             f"Authorization: Bearer {setup.alice}", "Content-Type: application/json",
             f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    await writer.drain()
    return Raw(reader, writer)


def modern_call(rpc_id: Any, name: str, arguments: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": {**META, **meta}}}


def modern_headers(name: str, sse: bool) -> dict[str, str]:
    return {"Accept": "application/json, text/event-stream" if sse else "application/json",
            "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": name}


async def eventually(what: str, check: Callable[[], Any], within: float = PROMPT) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g}s")
        await asyncio.sleep(0.05)


#: the records that end a call
ENDINGS = ("rpc.response", "approval.held", "request.refused", "append.abandoned")


def outcomes_of(records: list[dict[str, Any]], target: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The call's rpc.request, and the records that end it (the progress it relayed is no ending)."""
    [request] = [r for r in records if r["event"] == "rpc.request" and r.get("target") == target]
    return request, [r for r in records if r.get("request_id") == request["request_id"] and r["event"] in ENDINGS]


# ── (1, 2) a stateless client that hangs up mid-call cancels it ──
@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_a_stateless_client_hanging_up_mid_call_cancels_it_upstream_and_in_the_ledger(
        setup: Setup, sse: bool) -> None:
    """JSON only: nothing of the answer has gone out when the client hangs up. SSE with progress: the answer's
    stream has begun (a progress event) when it does. Either way the call used to run on to its end upstream
    (`NAP` s), untold, and be recorded as answered; now the upstream is told within moments, with the gateway's
    own id for the call, and the outcome is recorded as cancelled by the client's disconnect."""
    name = "nap-sse" if sse else "nap-json"
    raw = await post(setup, modern_call(7, name, {"seconds": NAP, "ticks": sse}, progressToken="p7"),
                     modern_headers(name, sse))
    [(session, sent)] = await eventually("the call reached the upstream", lambda: setup.upstream.naps(name))
    if sse:
        head = await raw.head()
        assert " 200 " in head.split("\r\n")[0] and "text/event-stream" in head.lower(), head
        await raw.until(b"notifications/progress")  # the stream has begun: an event is out
    else:
        await asyncio.sleep(0.3)  # the call runs upstream; nothing of its answer has gone out
    raw.hang_up()
    hung_up = time.monotonic()

    await eventually("the upstream was told the call is cancelled",
                     lambda: (session, sent["id"]) in setup.upstream.cancelled_ids())
    assert time.monotonic() - hung_up < PROMPT
    assert setup.upstream.ended.get((session, sent["id"])) == "cancelled"
    request, after = await eventually("the outcome was recorded", lambda: (
        (found := outcomes_of(setup.gateway.records(), name))[1] and found))
    assert request["decision"] == "allow"
    [outcome] = after
    assert outcome["event"] == "rpc.response", outcome
    assert outcome["cancelled"] is True and outcome["reason"] == "client_disconnected", outcome
    assert outcome["forwarded"] is True and outcome["cancel_sent"] is True, outcome
    [note] = [m for s, m in setup.upstream.cancellations() if s == session]
    assert note["params"]["requestId"] == sent["id"], "the cancellation names the gateway's id for the call"

    # the gateway serves on, and the same client's next call is answered
    async with setup.gateway.http(setup.alice) as http:
        r = await http.post(setup.gateway.url("scripted"), headers={**modern_headers("echo", False),
                                                                    "Content-Type": "application/json"},
                            json=modern_call(8, "echo", {}))
    assert r.status_code == 200 and "ok echo" in r.text, r.text


# ── a call resumed by the retry of an input-required answer: the retry's client hanging up ends it ──
async def test_a_stateless_retry_resuming_a_call_cancels_it_when_its_client_hangs_up(setup: Setup) -> None:
    """A server request mid-call (an elicitation) pauses a stateless client's call: it is answered
    input-required, and the client's retry with its answer resumes the same upstream call. That retry's
    client hanging up ends the call as for any other: the upstream is told, the outcome recorded."""
    name, arguments = "nap-ask", {"seconds": NAP}
    capabilities: dict[str, Any] = {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}
    first = await post(setup, modern_call(11, name, arguments, **capabilities), modern_headers(name, False))
    head = await first.head()
    body = json.loads(await asyncio.wait_for(first.reader.readexactly(
        int(re.search(r"(?i)content-length: (\d+)", head).group(1))), 15))  # type: ignore[union-attr]
    first.hang_up()
    result = body["result"]
    assert result["resultType"] == "input_required", body
    [key] = result["inputRequests"]
    retry = modern_call(11, name, arguments, **capabilities)
    retry["params"].update(requestState=result["requestState"],
                           inputResponses={key: {"action": "accept", "content": {}}})
    raw = await post(setup, retry, modern_headers(name, False))
    [(session, sent)] = setup.upstream.naps(name)
    await eventually("the upstream has the client's answer", lambda: any(
        m.get("id") == f"ask-{sent['id']}" and "method" not in m for _, m in setup.upstream.received))
    await asyncio.sleep(0.3)
    raw.hang_up()
    await eventually("the upstream was told the call is cancelled",
                     lambda: (session, sent["id"]) in setup.upstream.cancelled_ids())
    _, after = await eventually("the outcome was recorded", lambda: (
        (found := outcomes_of(setup.gateway.records(), name))[1] and found))
    [outcome] = after
    assert outcome["event"] == "rpc.response" and outcome["cancelled"] is True, outcome
    assert outcome["reason"] == "client_disconnected" and outcome["cancel_sent"] is True, outcome


# ── a call held for approval, its client gone: released, the approval left for the retry ──
async def test_a_stateless_client_hanging_up_while_held_for_approval_forwards_nothing(setup: Setup) -> None:
    """The held call used to wait on, and run upstream once approved, for a client that had gone. Now it is
    released at the hangup (`approval.held`, reason `client_disconnected`), the approval stays pending, an
    approval then forwards nothing, and the identical call sent again runs on that approval."""
    arguments = {"seconds": 0.1}
    raw = await post(setup, modern_call(9, "nap-held", arguments), modern_headers("nap-held", False))
    async with setup.gateway.http(setup.bob) as approver:
        async def pending() -> list[dict[str, Any]]:
            listed = (await approver.get(f"{setup.gateway.base}/api/v1/approvals", params={"status": "pending"}))
            return listed.json()["approvals"]  # type: ignore[no-any-return]

        deadline = time.monotonic() + 15
        while not (approvals := await pending()):
            assert time.monotonic() < deadline, "the call was never held for approval"
            await asyncio.sleep(0.1)
        [approval] = approvals
        raw.hang_up()
        held = await eventually("the release was recorded", lambda: [
            r for r in setup.gateway.records() if r["event"] == "approval.held" and r.get("reason") == "client_disconnected"])
        assert held[0]["approval"] == approval["id"], held
        assert [a["id"] for a in await pending()] == [approval["id"]], "the approval stays pending"

        decided = await approver.post(f"{setup.gateway.base}/api/v1/approvals/{approval['id']}/approve",
                                      json={"reason": "fine"})
        assert decided.status_code == 200, decided.text
        await asyncio.sleep(1.5)
        assert setup.upstream.naps("nap-held") == [], "a call was forwarded for a client that had gone"

    async with setup.gateway.http(setup.alice) as http:
        retry = await http.post(setup.gateway.url("scripted"), headers={
            **modern_headers("nap-held", False), "Content-Type": "application/json"},
            json=modern_call(10, "nap-held", arguments))
    assert retry.status_code == 200 and "napped" in retry.text, retry.text
    assert len(setup.upstream.naps("nap-held")) == 1


# ── (3) a handshake-era client's disconnect is no cancellation ──
@pytest.mark.parametrize("ticks", [False, True], ids=["json", "sse"])
async def test_a_handshake_clients_disconnect_does_not_cancel_its_call(setup: Setup, ticks: bool) -> None:
    """MCP 2025-06-18: a disconnect SHOULD NOT be read as a cancellation (the client may resume the stream, or
    cancel explicitly). The call runs to its end upstream, nothing is sent to cancel it, and its answer is
    recorded as answered."""
    name = "nap-handshake-sse" if ticks else "nap-handshake-json"
    url = setup.gateway.url("scripted")
    async with setup.gateway.http(setup.alice) as http:
        base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        init = await http.post(url, headers=base, json={
            "jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200, init.text
        session = {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
        done = await http.post(url, headers={**base, **session},
                               json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202
    raw = await post(setup, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": name, "arguments": {"seconds": 3, "ticks": ticks}, "_meta": {"progressToken": "h5"}}},
        {"Accept": "application/json, text/event-stream", **session})
    [(upstream_session, sent)] = await eventually("the call reached the upstream", lambda: setup.upstream.naps(name))
    if ticks:
        await raw.until(b"notifications/progress")
    raw.hang_up()
    await eventually("the call ran to its end", lambda: setup.upstream.ended.get((upstream_session, sent["id"])),
                     within=10)
    assert setup.upstream.ended[(upstream_session, sent["id"])] == "answered"
    assert (upstream_session, sent["id"]) not in setup.upstream.cancelled_ids()
    _, after = await eventually("the outcome was recorded", lambda: (
        (found := outcomes_of(setup.gateway.records(), name))[1] and found))
    [outcome] = after
    assert outcome["event"] == "rpc.response" and not outcome.get("cancelled") and "error" not in outcome, outcome


# ── (4) many clients hanging up at every point of a call: nothing leaks, the gateway serves on ──
async def test_many_stateless_clients_hanging_up_leave_nothing_in_flight(tmp_path: Path, provider: Provider) -> None:
    """Forty clients, each hanging up at another point: at once after sending (before the call is decided or
    while its request record is written), once the upstream has the call (FIN or RST), or once its SSE stream
    has begun. Every call the upstream got is cancelled there, every request record has exactly one outcome,
    the gateway answers the next call, and at SIGTERM it finds no call in flight."""
    upstream = Napping()
    try:
        async with scripted_upstream(upstream) as url:
            gateway = await start(tmp_path, provider, url)
            setup = Setup(upstream, gateway, provider.token("alice", ["staff"]), provider.token("bob", ["approvers"]))
            try:
                await _many_hang_up(setup)
                gateway.proc.proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(gateway.proc.proc.wait, 30)
            finally:
                upstream.release.set()
                await asyncio.to_thread(gateway.stop)
    finally:
        upstream.release.set()
    log = gateway.log()
    assert re.search(r"shutting down: no new calls; none in flight", log), log[-3000:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


async def _many_hang_up(setup: Setup) -> None:
    count = 40

    async def one(i: int) -> None:
        name, sse = f"nap-many-{i}", i % 4 == 3
        raw = await post(setup, modern_call(i, name, {"seconds": NAP, "ticks": sse}, progressToken=f"m{i}"),
                         modern_headers(name, sse))
        if i % 4 == 0:
            raw.hang_up()  # at once: the call may not even have been decided yet
            return
        await eventually("the call reached the upstream", lambda: setup.upstream.naps(name), within=20)
        if sse:
            await raw.until(b"notifications/progress")
        raw.hang_up(abort=i % 4 == 2)

    await asyncio.gather(*(one(i) for i in range(count)))
    started = time.monotonic()

    def every_nap_cancelled() -> bool:
        naps = [(s, m["id"]) for s, m in setup.upstream.calls() if str(m["params"]["name"]).startswith("nap-many-")]
        return bool(naps) and all(setup.upstream.ended.get(key) == "cancelled" for key in naps) and \
            set(naps) <= setup.upstream.cancelled_ids()

    await eventually("every call the upstream got was cancelled there", every_nap_cancelled, within=15)
    assert time.monotonic() - started < 15

    def each_request_has_one_outcome() -> list[dict[str, Any]] | None:
        records = setup.gateway.records()
        requests = [r for r in records if r["event"] == "rpc.request" and str(r.get("target")).startswith("nap-many-")]
        outcomes: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if r["event"] == "rpc.response" and str(r.get("target")).startswith("nap-many-"):
                outcomes.setdefault(r["request_id"], []).append(r)
        if not requests or any(len(outcomes.get(r["request_id"], [])) != 1 for r in requests):
            return None
        return [outcomes[r["request_id"]][0] for r in requests]

    outcomes = await eventually("every request record has its outcome", each_request_has_one_outcome, within=15)
    assert all(o["cancelled"] is True and o["reason"] == "client_disconnected" for o in outcomes), outcomes
    forwarded = {m["params"]["name"] for _, m in setup.upstream.calls() if str(m["params"]["name"]).startswith("nap-many-")}
    assert len(forwarded) >= count * 3 // 4, "the calls that waited for the upstream reached it"

    async with setup.gateway.http(setup.alice) as http:
        r = await http.post(setup.gateway.url("scripted"), headers={**modern_headers("echo", False),
                                                                    "Content-Type": "application/json"},
                            json=modern_call(999, "echo", {}))
    assert r.status_code == 200 and "ok echo" in r.text, r.text
