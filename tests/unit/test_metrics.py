"""MeteredLedger's edges that a real gateway rarely shows: a failed append counts only as a failure,
odd field shapes never fail a durable record's caller. (The counting itself is tested end to end in
tests/integration/test_signals.py.) The wrapped ledger here is a stand-in that records or raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from ledgergate.errors import LedgerUnavailable
from ledgergate.gateway.metrics import GatewayMetrics, MeteredLedger


class StandIn:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[tuple[str, Mapping[str, Any]]] = []

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        if self.fail:
            raise LedgerUnavailable("store down")
        self.written.append((event, fields))
        return len(self.written) - 1

    def hmac(self, value: Any) -> str:
        return "digest"


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_failed_append_counts_as_a_failure_and_nothing_else() -> None:
    metrics = GatewayMetrics()
    ledger = MeteredLedger(StandIn(fail=True), metrics)
    with pytest.raises(LedgerUnavailable):
        await ledger.append("rpc.response", {"server": "s", "masked": {"US_SSN": 1}})
    assert sample(metrics, "ledgergate_ledger_append_failures_total") == 1
    assert sample(metrics, "ledgergate_ledger_records_total", event="rpc.response") == 0
    assert sample(metrics, "ledgergate_calls_total", server="s", outcome="ok") == 0
    assert sample(metrics, "ledgergate_ledger_append_seconds_count") == 0


@pytest.mark.parametrize("fields", [
    {"server": 7, "masked": "not a mapping"},
    {"server": "s", "masked": {"US_SSN": "two", "EMAIL": -1, "IBAN": 2}},
    {"masked": None, "args_masked": [1, 2]},
])
async def test_odd_fields_are_counted_as_far_as_they_make_sense(fields: dict[str, Any]) -> None:
    metrics = GatewayMetrics()
    inner = StandIn()
    ledger = MeteredLedger(inner, metrics)
    assert await ledger.append("rpc.response", fields) == 0
    assert sample(metrics, "ledgergate_ledger_records_total", event="rpc.response") == 1
    assert sample(metrics, "ledgergate_masked_values_total", server="s", detector="IBAN", where="answer") == \
        (2 if fields.get("server") == "s" else 0)
    assert sample(metrics, "ledgergate_masked_values_total", server="s", detector="EMAIL", where="answer") == 0
    assert ledger.hmac(1) == "digest"  # everything but append is the wrapped ledger's


async def test_a_server_to_client_refusal_is_a_decision_but_not_a_call() -> None:
    metrics = GatewayMetrics()
    ledger = MeteredLedger(StandIn(), metrics)
    await ledger.append("policy.denied", {"server": "s", "rule": None, "direction": "server-to-client"})
    await ledger.append("policy.denied", {"server": "s", "rule": "r1"})
    assert sample(metrics, "ledgergate_policy_decisions_total", decision="deny", rule="(default deny)") == 1
    assert sample(metrics, "ledgergate_policy_decisions_total", decision="deny", rule="r1") == 1
    assert sample(metrics, "ledgergate_calls_total", server="s", outcome="denied") == 1


async def test_a_call_its_client_cancelled_or_a_shutdown_cut_off_is_not_counted_as_an_error() -> None:
    """The fields are those `Bridge._cancelled` and `Pipeline.cut_off` record (`rpc.response` with an error
    text): before, both were counted as `error`, beside the upstream's failures an alert watches."""
    metrics = GatewayMetrics()
    ledger = MeteredLedger(StandIn(), metrics)
    await ledger.append("rpc.response", {"server": "s", "error": "cancelled by the client", "cancelled": True})
    await ledger.append("rpc.response", {"server": "s", "error": {"code": -32016}, "reason": "shutdown"})
    await ledger.append("rpc.response", {"server": "s", "error": {"code": -32603, "message": "boom"}})
    await ledger.append("rpc.response", {"server": "s", "response": {"content": []}})
    assert sample(metrics, "ledgergate_calls_total", server="s", outcome="cancelled") == 1
    assert sample(metrics, "ledgergate_calls_total", server="s", outcome="cut_off") == 1
    assert sample(metrics, "ledgergate_calls_total", server="s", outcome="error") == 1
    assert sample(metrics, "ledgergate_calls_total", server="s", outcome="ok") == 1
