"""Approval webhooks against real HTTP receivers on 127.0.0.1: signed JSON bodies a receiver can verify,
Slack bodies, retries with backoff, and a receiver that is down or hangs delaying nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.settings import ApprovalsSettings, WebhookSettings
from ledgergate.approvals.webhooks import SIGNATURE_HEADER, WebhookNotifier, verify
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec-0123456789abcdef"
ALICE = Principal("http://idp.test", "alice", groups=frozenset({"staff"}))
BOB = Principal("http://idp.test", "bob", groups=frozenset({"approvers"}))
RAW = {"account": "DE89370400440532013000", "ssn": "123-45-6789", "amount": 9000}
MASKED = {"account": "DE89**************3000", "ssn": "***-**-6789", "amount": 9000}


class Receiver:
    """A real HTTP server on 127.0.0.1 that records what it is sent and answers `statuses` in turn."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path-x"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


async def wait_for(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def make(tmp_path: Path, hooks: list[WebhookSettings], **kw: Any) -> tuple[ApprovalService, WebhookNotifier,
                                                                                 Ledger]:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    led = await Ledger.open(AuditSettings(replica="a", checkpoint_interval=0), url, tmp_path)
    notifier = WebhookNotifier(hooks, console_url="https://gw.example/ui/approvals", **kw)
    await notifier.start()
    svc = ApprovalService(open_store(url), led.append, ApprovalsSettings(), notifier=notifier,
                          args_key=led.subkey("approval-arguments"))
    await svc.start(background=False)
    return svc, notifier, led


async def request(svc: ApprovalService, args: Any = RAW) -> Any:
    return await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer", arguments=args,
                             masked_args=MASKED, rule="big", policy_version="v1",
                             approvers=ApproverSpec(("approvers",), (), 1))


async def shutdown(svc: ApprovalService, notifier: WebhookNotifier, led: Ledger) -> None:
    await svc.close()
    await notifier.close(drain=0.5)
    await led.close()


async def test_json_bodies_are_signed_and_carry_the_masked_preview_only(tmp_path: Path, receiver: Receiver) -> None:
    svc, notifier, led = await make(tmp_path, [WebhookSettings(url=receiver.url, format="json", secret=SECRET)])
    try:
        a = await request(svc)
        await svc.decide(a.id, BOB, "approve", "checked the invoice")
        await wait_for(lambda: len(receiver.received) == 3)
    finally:
        await shutdown(svc, notifier, led)
    events = []
    for headers, body, got_at in receiver.received:
        header = headers[SIGNATURE_HEADER.lower()]
        t, v1 = (p.split("=", 1)[1] for p in header.split(","))
        # The receiver's own check, written from the documented scheme (not our helper).
        expected = hmac.new(SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected) and abs(got_at - int(t)) < 5
        assert verify(SECRET, header, body, got_at) and not verify(SECRET, header, body + b" ", got_at)
        assert not verify(SECRET, header, body, got_at + 3600)  # a replay an hour later is refused
        assert not verify("another-secret-123456", header, body, got_at)
        doc = orjson.loads(body)
        assert doc["approval"]["id"] == a.id and doc["approval"]["arguments"] == MASKED
        assert doc["approval"]["url"] == f"https://gw.example/ui/approvals/{a.id}"
        assert headers["x-ledgergate-event"] == doc["event"] and headers["x-ledgergate-delivery"] == doc["delivery"]
        assert b"123-45-6789" not in body and b"DE89370400440532013000" not in body
        events.append(doc["event"])
    # Two workers send in parallel: arrival order is not promised (the body carries the approval's state).
    assert sorted(events) == ["approval.decided", "approval.granted", "approval.requested"]
    assert notifier.stats.sent == 3 and notifier.stats.failed == 0


async def test_slack_bodies_say_who_what_and_how_to_decide(tmp_path: Path, receiver: Receiver) -> None:
    svc, notifier, led = await make(tmp_path, ApprovalsSettings(webhooks=[receiver.url]).webhooks)
    try:
        a = await request(svc)
        await wait_for(lambda: len(receiver.received) == 1)
    finally:
        await shutdown(svc, notifier, led)
    headers, body, _ = receiver.received[0]
    assert SIGNATURE_HEADER.lower() not in headers
    text = orjson.loads(body)["text"]
    assert set(orjson.loads(body)) == {"text"}
    assert "alice" in text and "transfer" in text and a.id in text and "group approvers" in text
    assert "***-**-6789" in text and "123-45-6789" not in text


async def test_a_failing_receiver_is_retried_with_backoff(tmp_path: Path) -> None:
    flaky = Receiver(statuses=[500, 503, 200])
    svc, notifier, led = await make(tmp_path, [WebhookSettings(url=flaky.url, format="json", secret=SECRET)],
                                    base_delay=0.1)
    try:
        await request(svc)
        await wait_for(lambda: notifier.stats.sent == 1)
    finally:
        await shutdown(svc, notifier, led)
        flaky.stop()
    times = [t for _, _, t in flaky.received]
    assert len(times) == 3 and notifier.stats.retried == 2
    assert times[1] - times[0] >= 0.07 and times[2] - times[1] >= 0.15
    ids = {h["x-ledgergate-delivery"] for h, _, _ in flaky.received}
    assert len(ids) == 1  # the same delivery id on every attempt, so a receiver can de-duplicate


async def test_a_receiver_that_is_down_or_hangs_delays_nothing(tmp_path: Path) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)  # accepts connections in the kernel and never answers
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    down_port = down.getsockname()[1]
    down.close()  # nothing listens here
    hooks = [WebhookSettings(url=f"http://127.0.0.1:{hang.getsockname()[1]}/h", format="json", secret=SECRET,
                             timeout=30),
             WebhookSettings(url=f"http://127.0.0.1:{down_port}/h", format="slack")]
    svc, notifier, led = await make(tmp_path, hooks, queue_size=4, workers=1, base_delay=5)
    try:
        timings = []
        for i in range(10):
            started = time.monotonic()
            a = await request(svc, {"n": i})
            await svc.decide(a.id, BOB, "deny", "not today")
            timings.append(time.monotonic() - started)
        assert max(timings) < 0.5, timings
        assert notifier.stats.dropped > 0  # bounded queue: the overflow is counted, not held
        assert [x.status for x in await svc.list()] == ["denied"] * 10
    finally:
        await shutdown(svc, notifier, led)
        hang.close()


async def test_the_service_from_settings_runs_its_webhooks(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    led = await Ledger.open(AuditSettings(replica="a", checkpoint_interval=0), url, tmp_path)
    settings = ApprovalsSettings(webhooks=[{"url": receiver.url, "format": "json", "secret": SECRET}],
                                 console_url="https://gw.example/ui/approvals/")
    svc = ApprovalService.from_settings(settings, url, tmp_path, led.append, args_key=led.subkey("approval-arguments"))
    await svc.start()
    try:
        a = await request(svc)
        await wait_for(lambda: len(receiver.received) == 1)
    finally:
        await svc.close()
        await led.close()
    headers, body, got_at = receiver.received[0]
    assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body, got_at)
    assert orjson.loads(body)["approval"]["url"] == f"https://gw.example/ui/approvals/{a.id}"


@pytest.mark.parametrize("fmt", ["json", "slack"])
async def test_integers_beyond_64_bits_reach_the_receiver_exactly(tmp_path: Path, receiver: Receiver, fmt: str) -> None:
    svc, notifier, led = await make(tmp_path, [WebhookSettings(url=receiver.url, format=fmt, secret=SECRET)])
    try:
        await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer",
                          arguments={**RAW, "amount": 10**30}, masked_args={**MASKED, "amount": 10**30}, rule="big",
                          policy_version="v1", approvers=ApproverSpec(("approvers",), (), 1))
        await wait_for(lambda: len(receiver.received) == 1)
    finally:
        await shutdown(svc, notifier, led)
    body = receiver.received[0][1]
    assert b"1000000000000000000000000000000" in body
    if fmt == "json":
        assert json.loads(body)["approval"]["arguments"]["amount"] == 10**30


async def test_a_webhooks_secret_path_reaches_no_log_line(tmp_path: Path, receiver: Receiver,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A Slack webhook's path is its credential. httpx logs every request's full URL at INFO ("HTTP Request:
    POST <url>"): the gateway's log held the path of every notification sent. Now httpx's line names the
    host only, and the gateway's own lines (`where`) already did."""
    receiver.statuses = [503, 200]  # a retry, logged by the gateway, then a delivery
    with caplog.at_level(logging.INFO):
        svc, notifier, led = await make(tmp_path, ApprovalsSettings(webhooks=[receiver.url]).webhooks,
                                        base_delay=0.05)
        try:
            await request(svc)
            await wait_for(lambda: notifier.stats.sent == 1)
        finally:
            await shutdown(svc, notifier, led)
    lines = [r.getMessage() for r in caplog.records if r.name in ("httpx", "ledgergate.webhooks")
             or r.name.startswith("ledgergate.approvals")]
    assert any("HTTP Request: POST http://127.0.0.1:" in line for line in lines), lines
    assert any("retry 1" in line for line in lines), lines
    assert all("secret-path-x" not in line for line in lines), lines
