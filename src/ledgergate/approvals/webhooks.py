"""Webhook notifications on approval requests, decisions and expiry.

Two body formats: a Slack-compatible incoming-webhook body (`{"text": ...}`)
and a generic JSON body signed with HMAC-SHA256 over `<unix time>.<body>`, sent
as `X-Ledgergate-Signature: t=<unix time>,v1=<hex>`. The timestamp is signed
with the body, so a receiver that refuses old timestamps refuses replays;
`X-Ledgergate-Delivery` is stable across retries, so it can also de-duplicate.

A receiver never holds an approval up: `notify` only puts a delivery on a
bounded queue and returns. Workers send in the background; a failure is
retried with exponential backoff (the retry waits on a timer, not on a
worker), a full queue drops the delivery, and both are logged and counted.
The approval itself lives in the store and the ledger either way.

Bodies carry the ledger-masked preview of the arguments, never raw values.
Webhook URLs may be secrets themselves (Slack's are), so logs name only
scheme, host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ledgergate.approvals.model import Approval, approval_url, describe_approvers, rfc3339
from ledgergate.approvals.settings import WebhookSettings
from ledgergate.identity.redact import PATH_IS_SECRET
from ledgergate.wire import jsonrpc

log = logging.getLogger("ledgergate.approvals.webhooks")

SIGNATURE_HEADER = "X-Ledgergate-Signature"
_TITLES = {
    "approval.requested": "Approval needed",
    "approval.decided": "Approval decision",
    "approval.granted": "Approved",
    "approval.denied": "Denied",
    "approval.expired": "Expired without a decision",
}
_RETRY_STATUSES = frozenset({408, 425, 429})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (replays are refused)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def where(url: str) -> str:
    """A URL as it may appear in logs: scheme, host and port, no path or query (which may be the secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_body(event: str, delivery: str, approval: Approval, console_url: str | None) -> bytes:
    return jsonrpc.dumps({"event": event, "delivery": delivery, "time": rfc3339(time.time()),
                          "approval": {**approval.public(), "url": approval_url(console_url, approval.id)}})


def slack_body(event: str, approval: Approval, console_url: str | None) -> bytes:
    b = approval.binding
    who = approval.requester.get("subject", "?")
    what = f"`{b.server}` {b.method}" + (f" `{b.target}`" if b.target else "")
    args = jsonrpc.dumps(approval.masked_args).decode()  # the caller's numbers, any size
    if len(args) > 1500:
        args = args[:1500] + "…"
    lines = [f"*{_TITLES.get(event, event)}*: {who} → {what}",
             f"rule `{b.rule}`; approvers: {describe_approvers(approval.approvers)}",
             f"arguments (masked): ```{args}```"]
    if approval.justification:
        lines.append(f"justification: {approval.justification[:500]}")
    for v in approval.decisions:
        lines.append(f"{v.verdict} by {v.display}: {v.reason[:300]}")
    lines.append(f"approval `{approval.id}` is {approval.status}; expires {rfc3339(approval.expires)}")
    url = approval_url(console_url, approval.id)
    if approval.status == "pending":
        lines.append(f"decide: {url}" if url else
                     f"decide: `ledgergate approvals approve {approval.id} --reason \"...\"` (or `deny`)")
    return jsonrpc.dumps({"text": _slack_escape("\n".join(lines))})


@dataclass
class Delivery:
    hook: WebhookSettings
    event: str
    body: bytes
    id: str = field(default_factory=lambda: "dlv_" + secrets.token_hex(12))
    attempt: int = 0


@dataclass
class WebhookStats:
    queued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0  # gave up after the last attempt, or a permanent refusal
    dropped: int = 0  # the queue was full


class WebhookNotifier:
    """Background delivery of approval notifications; see the module docstring."""

    def __init__(self, hooks: list[WebhookSettings], *, console_url: str | None = None, queue_size: int = 1000,
                 workers: int = 2, max_attempts: int = 6, base_delay: float = 0.5, max_delay: float = 60.0,
                 clock: Callable[[], float] = time.time, client: httpx.AsyncClient | None = None) -> None:
        self.hooks = hooks
        self.console_url = console_url
        self.stats = WebhookStats()
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._clock = clock
        self._client = client
        self._own_client = client is None
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._tasks = [asyncio.create_task(self._work(), name=f"webhooks-{i}") for i in range(self._workers)]

    async def close(self, drain: float = 2.0) -> None:
        """Give queued deliveries up to `drain` seconds, then stop (pending retries are dropped, counted)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain)
        for timer in self._timers:
            timer.cancel()
            self.stats.dropped += 1
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def notify(self, event: str, approval: Approval) -> None:
        """Queue one delivery per receiver; never blocks, never raises."""
        for hook in self.hooks:
            try:
                delivery = Delivery(hook, event, b"")
                delivery.body = (slack_body(event, approval, self.console_url) if hook.format == "slack"
                                 else json_body(event, delivery.id, approval, self.console_url))
            except Exception:  # noqa: BLE001 - a body that cannot be built is a bug; the approval goes on
                log.exception("webhook body for %s could not be built", event)
                self.stats.failed += 1
                continue
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        try:
            self._queue.put_nowait(delivery)
            self.stats.queued += 1
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning("webhook queue full: %s to %s dropped", delivery.event, where(delivery.hook.url))

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._send(delivery)
            except Exception:  # noqa: BLE001 - one bad delivery never stops the worker
                log.exception("webhook delivery failed unexpectedly")
            finally:
                self._queue.task_done()

    async def _send(self, delivery: Delivery) -> None:
        assert self._client is not None
        delivery.attempt += 1
        headers = {"Content-Type": "application/json", "X-Ledgergate-Event": delivery.event,
                   "X-Ledgergate-Delivery": delivery.id, "User-Agent": "ledgergate-webhooks"}
        if delivery.hook.secret:
            headers[SIGNATURE_HEADER] = sign(delivery.hook.secret, int(self._clock()), delivery.body)
        problem: str
        secret_path = PATH_IS_SECRET.set(True)  # httpx's own log line names the host only
        try:
            response: httpx.Response | None = await self._client.post(
                delivery.hook.url, content=delivery.body, headers=headers, timeout=delivery.hook.timeout)
        except httpx.HTTPError as exc:
            response, problem = None, type(exc).__name__
        finally:
            PATH_IS_SECRET.reset(secret_path)
        if response is not None:
            if response.status_code < 300:
                self.stats.sent += 1
                return
            problem = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in _RETRY_STATUSES:
                self.stats.failed += 1
                log.warning("webhook %s to %s refused (%s); not retried", delivery.event,
                            where(delivery.hook.url), problem)
                return
        if delivery.attempt >= self._max_attempts:
            self.stats.failed += 1
            log.warning("webhook %s to %s failed %d times (%s); giving up", delivery.event,
                        where(delivery.hook.url), delivery.attempt, problem)
            return
        delay = min(self._max_delay, self._base_delay * 2 ** (delivery.attempt - 1)) * random.uniform(0.8, 1.2)
        self.stats.retried += 1
        log.info("webhook %s to %s failed (%s); retry %d in %.1fs", delivery.event, where(delivery.hook.url),
                 problem, delivery.attempt, delay)
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def again() -> None:
            self._timers.discard(handle)
            self._enqueue(delivery)

        handle = loop.call_later(delay, again)
        self._timers.add(handle)


def notifier_from_settings(hooks: list[WebhookSettings], console_url: str | None) -> WebhookNotifier | None:
    return WebhookNotifier(hooks, console_url=console_url) if hooks else None


__all__ = ["SIGNATURE_HEADER", "Delivery", "WebhookNotifier", "WebhookStats", "approval_url", "json_body",
           "notifier_from_settings", "sign", "slack_body", "verify", "where"]
