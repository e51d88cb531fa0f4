"""Prometheus metrics, read off the ledger's record stream.

Every call, decision, approval and masking the gateway does is already written
to the ledger by exactly one stage, so the ledger's `append` is the one choke
point where they can all be counted: `MeteredLedger` wraps it, times it, and
counts each record that became durable. A record that failed to append counts
only as an append failure (the caller was refused; nothing it describes took
effect). Gauges that describe state rather than events (pending approvals,
checkpoint age) are read when Prometheus scrapes, by `refresh` and a custom
collector.

Label values come from config (server, rule and detector names) or from a fixed
set (outcomes, verdicts, events, MCP methods); nothing a client sends becomes a
label value, so a caller cannot grow the series count.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger("ledgergate.metrics")

#: how each record that ends a call names the call's outcome
CALL_OUTCOMES = {
    "policy.denied": "denied",
    "budget.exceeded": "rate_limited",
    "tool.drift_blocked": "drift_blocked",
    "approval.refused": "approval_refused",
}
#: approval records that close an approval, and the status each one leaves
CLOSED = {"approval.granted": "approved", "approval.denied": "denied", "approval.expired": "expired",
          "approval.cancelled": "cancelled"}
NO_RULE = "(default deny)"
#: the server label of a request to /mcp/<name> where no server has that name: a configured name is
#: letters, digits, '.', '_' or '-' (config.py), so this one cannot be taken
UNKNOWN_SERVER = "(unknown)"


def _ended(fields: Mapping[str, Any]) -> str:
    """How an `rpc.response` record says its call ended. A call its client cancelled, or the shutdown cut off,
    is recorded with an error text, but counting it as an error would page someone for a client's choice
    or a rollout."""
    if fields.get("cancelled") is True:
        return "cancelled"
    if fields.get("reason") == "shutdown":
        return "cut_off"
    return "error" if "error" in fields else "ok"


class Appender(Protocol):
    async def append(self, event: str, fields: Mapping[str, Any]) -> int: ...


class Tally:
    """A labelled counter kept as plain numbers: the event loop thread is the only writer (every
    append is awaited there) and the scrape runs there too, so it needs no lock, and an increment
    costs a dict update rather than prometheus_client's validated, locked child lookup."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...] = (), amount: float = 1) -> None:
        self.values[key] = self.values.get(key, 0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=list(self.labels))
        for key, value in self.values.items():
            family.add_metric(list(key), value)
        return family


class Spread:
    """A histogram kept as plain numbers (same reasoning as Tally)."""

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> Metric:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


class GatewayMetrics:
    """Every series the gateway exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ledgergate_http_requests_total", "MCP HTTP requests by server and status",
                                ["server", "status"], registry=r)
        self.latency = Histogram("ledgergate_http_request_seconds", "MCP HTTP request time (to response start)",
                                 ["server"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
        self.calls = Tally("ledgergate_calls",
                           "Client requests by server and how they ended: ok, error (the upstream's or the "
                           "gateway's), cancelled (by the client), cut_off (by a shutdown), denied, rate_limited, "
                           "drift_blocked, approval_refused", ("server", "outcome"))
        self.decisions = Tally("ledgergate_policy_decisions",
                               "Policy decisions by effect (allow, deny, approve) and rule", ("decision", "rule"))
        self.approvals_requested = Tally("ledgergate_approvals_requested", "Approvals requested, by rule", ("rule",))
        self.approval_decisions = Tally("ledgergate_approval_decisions",
                                        "Approvers' decisions, by verdict (approve, deny)", ("verdict",))
        self.approvals_closed = Tally("ledgergate_approvals_closed",
                                      "Approvals closed, by final status (approved, denied, expired, cancelled)",
                                      ("status",))
        self.approval_latency = Spread("ledgergate_approval_decision_seconds",
                                       "Time from an approval's request to each decision on it",
                                       (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400))
        self.masked = Tally("ledgergate_masked_values",
                            "Values masked, by server and detector; where=answer: in what a client received, "
                            "where=ledger: in arguments written to the ledger", ("server", "detector", "where"))
        self.records = Tally("ledgergate_ledger_records", "Ledger records made durable, by event", ("event",))
        self.append_seconds = Spread("ledgergate_ledger_append_seconds",
                                     "Time for a ledger record to become durable (group commit included)",
                                     (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.append_failures = Tally("ledgergate_ledger_append_failures",
                                     "Ledger appends that failed (the caller was refused)")
        self.state = StateCollector((self.calls, self.decisions, self.approvals_requested, self.approval_decisions,
                                     self.approvals_closed, self.approval_latency, self.masked, self.records,
                                     self.append_seconds, self.append_failures))
        r.register(self.state)

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """Count what one durable record says happened."""
        self.records.inc((event,))
        server = fields.get("server")
        server = server if isinstance(server, str) else ""
        if event == "rpc.request":
            decision = fields.get("decision")
            if decision == "allow":
                self.decisions.inc(("allow", _rule(fields)))
            self._masked(server, fields.get("args_masked"), "ledger")
        elif event == "rpc.response":
            self.calls.inc((server, _ended(fields)))
            self._masked(server, fields.get("masked"), "answer")
        elif event in CALL_OUTCOMES:
            if event == "policy.denied":
                self.decisions.inc(("deny", _rule(fields)))
            if fields.get("direction") is None:  # a server-to-client message refused is not a call
                self.calls.inc((server, CALL_OUTCOMES[event]))
            self._masked(server, fields.get("args_masked"), "ledger")
        elif event == "approval.requested":
            rule = _rule(fields)
            self.decisions.inc(("approve", rule))
            self.approvals_requested.inc((rule,))
        elif event == "approval.decided":
            verdict = fields.get("verdict")
            if verdict in ("approve", "deny"):
                self.approval_decisions.inc((verdict,))
        elif event in CLOSED:
            self.approvals_closed.inc((CLOSED[event],))

    def _masked(self, server: str, counts: Any, where: str) -> None:
        if counts and isinstance(counts, dict):  # records carry plain dicts; most carry an empty one
            for detector, n in counts.items():
                if isinstance(n, int) and n > 0:
                    self.masked.inc((server, str(detector), where), n)


def _rule(fields: Mapping[str, Any]) -> str:
    rule = fields.get("rule")
    return rule if isinstance(rule, str) and rule else NO_RULE


class MeteredLedger:
    """The ledger, counted: `append` is timed and each durable record observed; everything else
    (hmac, subkey, proofs, close) is the wrapped ledger's own."""

    def __init__(self, ledger: Any, metrics: GatewayMetrics) -> None:
        self._ledger = ledger
        self._metrics = metrics
        #: looks up when an approval was requested (epoch seconds), for the decision latency
        self.approval_created: Callable[[str], Any] | None = None
        self._lookups: set[asyncio.Task[None]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        started = time.perf_counter()
        try:
            index: int = await self._ledger.append(event, fields)
        except BaseException:
            self._metrics.append_failures.inc()
            raise
        self._metrics.append_seconds.observe(time.perf_counter() - started)
        try:
            self._metrics.observe(event, fields)
            if event == "approval.decided" and self.approval_created is not None:
                self._time_decision(fields.get("approval"), time.time())
        except Exception as exc:  # noqa: BLE001 - counting never fails a durable record's caller
            log.warning("metrics: could not count a %s record: %s", event, exc)
        return index

    def _time_decision(self, approval_id: Any, decided: float) -> None:
        """Observe request-to-decision time once the approval's request time is read (in the background:
        deciding is not held up; the approval may have been requested on another replica)."""
        if not isinstance(approval_id, str):
            return
        lookup = self.approval_created
        assert lookup is not None

        async def observe() -> None:
            try:
                created = await lookup(approval_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("metrics: no request time for approval %s: %s", approval_id, exc)
                return
            if isinstance(created, (int, float)):
                self._metrics.approval_latency.observe(max(0.0, decided - created))

        task = asyncio.get_running_loop().create_task(observe())
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)


class StateCollector(Collector):
    """What prometheus_client asks for at scrape time: the tallies as they stand, and gauges that
    `refresh` (async, may touch the stores) filled just before."""

    def __init__(self, tallies: tuple[Tally | Spread, ...] = ()) -> None:
        self.tallies = tallies
        self.pending_approvals: float | None = None
        self.checkpoint_age: float | None = None
        self.unsigned_records: float | None = None
        self.ledger_size: float | None = None

    def collect(self) -> Iterator[Metric]:
        for tally in self.tallies:
            yield tally.family()
        gauges = (
            ("ledgergate_approvals_pending", "Approvals waiting for a decision (all replicas: read from the store)",
             self.pending_approvals),
            ("ledgergate_ledger_checkpoint_age_seconds",
             "Seconds since this replica's log was last covered by a signed checkpoint (since start, if never)",
             self.checkpoint_age),
            ("ledgergate_ledger_unsigned_records", "Records of this replica's log newer than its last signed "
                                                   "checkpoint", self.unsigned_records),
            ("ledgergate_ledger_records", "Records in this replica's log", self.ledger_size),
        )
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], math.nan if value is None else value)
            yield family

    async def refresh(self, ledger: Any, pending: Callable[[], Any] | None, started: float) -> None:
        """Read the state gauges; one that cannot be read reports NaN (and the reason is logged)."""
        now = time.time()
        try:
            self.pending_approvals = float(await pending()) if pending is not None else None
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: pending approvals not read: %s", exc)
            self.pending_approvals = None
        if ledger is None:
            self.checkpoint_age = self.unsigned_records = self.ledger_size = None
            return
        try:
            latest = await ledger.latest_checkpoint()
            size = ledger.size
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: latest checkpoint not read: %s", exc)
            self.checkpoint_age = self.unsigned_records = self.ledger_size = None
            return
        self.ledger_size = float(size)
        if latest is None:
            self.checkpoint_age, self.unsigned_records = now - started, float(size)
        else:
            signed = datetime.fromisoformat(latest.created.replace("Z", "+00:00")).timestamp()
            self.checkpoint_age = max(0.0, now - signed)
            self.unsigned_records = float(max(0, size - latest.size))
