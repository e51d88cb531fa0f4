"""Aggregated refusal records (gateway/auth.py): an anonymous flood gives a bounded number of
`auth.denied` records whose counts add up to the refusals, whatever the timing, the number of
sources, or a ledger that fails for a while. A fake clock and ledger (no I/O to wait for); the
integration test (test_gateway_refusals.py) floods a real gateway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.errors import AuthError, LedgerUnavailable
from ledgergate.gateway.auth import OVERFLOW_SOURCE, Authenticator, RefusalAggregator
from ledgergate.principal import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ledger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.failing = False

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        if self.failing:
            raise LedgerUnavailable("disk full")
        self.records.append((event, dict(fields)))
        return len(self.records) - 1

    def counted(self) -> int:
        return sum(f["count"] for e, f in self.records if e == "auth.denied")


class NoOne:
    async def authenticate(self, credential: str | None) -> Principal:
        raise AuthError("no credential", "missing_token")


KEY = ("10.0.0.1", "bank", "missing_token")


def test_first_refusal_of_an_interval_is_recorded_the_rest_counted_and_owed_once() -> None:
    clock = Clock()
    agg = RefusalAggregator(interval=5, clock=clock)
    assert agg.observe(KEY) == (KEY, 1)
    assert [agg.observe(KEY)[1] for _ in range(99)] == [None] * 99
    assert agg.due() == []  # the interval is not over
    clock.now += 5
    assert agg.due() == [(KEY, 99)]
    assert agg.due() == [] and agg.pending == 0


def test_a_count_is_carried_by_the_next_record_of_its_key() -> None:
    clock = Clock()
    agg = RefusalAggregator(interval=5, clock=clock)
    agg.observe(KEY)
    for _ in range(7):
        agg.observe(KEY)
    clock.now += 6
    assert agg.observe(KEY) == (KEY, 8)  # this one and the 7 counted before
    assert agg.pending == 0


def test_beyond_the_key_limit_refusals_share_an_overflow_key_and_nothing_is_dropped() -> None:
    clock = Clock()
    agg = RefusalAggregator(interval=5, max_keys=3, clock=clock)
    recorded = 0
    for i in range(100):
        _, count = agg.observe((f"10.0.0.{i}", "bank", "missing_token"))
        recorded += count or 0
    assert len(agg._tallies) <= 3 + 1
    clock.now += 5
    owed = agg.due()
    assert (OVERFLOW_SOURCE, "bank", "missing_token") in dict(owed)
    assert recorded + sum(c for _, c in owed) == 100


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["missing_token", "invalid_token"]),
                          st.floats(0, 3), st.booleans()), max_size=300))
def test_counts_always_add_up_and_records_are_bounded(events: list[tuple[int, str, float, bool]]) -> None:
    clock = Clock()
    agg = RefusalAggregator(interval=5, max_keys=4, clock=clock)
    start, records, total = clock.now, 0, 0
    for source, reason, wait, flush in events:
        clock.now += wait
        _, count = agg.observe((f"s{source}", "bank", reason))
        total += 1
        records += 1 if count else 0
        total -= count or 0
        if flush:
            owed = agg.due()
            records += len(owed)
            total -= sum(c for _, c in owed)
    owed = agg.drain()
    records += len(owed)
    total -= sum(c for _, c in owed)
    assert total == 0, "every refusal is in exactly one count"
    keys = 6 * 2 + 2  # sources x reasons, plus the overflow keys
    assert records <= 2 * keys * (int((clock.now - start) / 5) + 2)


async def test_the_authenticator_records_a_flood_in_few_records_and_flushes_at_close() -> None:
    clock = Clock()
    ledger = Ledger()
    auth = Authenticator(ledger, lambda *a: "Bearer", RefusalAggregator(interval=60, clock=clock))
    for _ in range(500):
        with pytest.raises(AuthError):
            await auth.authenticate(NoOne(), None, b"", "bank", "10.0.0.1")
    assert len(ledger.records) == 1 and ledger.counted() == 1
    ledger.failing = True
    await auth.close()  # the ledger cannot write: the count stays owed, nothing is pretended
    assert auth.refusals.pending == 499
    ledger.failing = False
    await auth.close()
    assert len(ledger.records) == 2 and ledger.counted() == 500
    assert ledger.records[1][1]["aggregated"] is True and ledger.records[1][1]["remote"] == "10.0.0.1"


async def test_a_forbidden_identity_is_recorded_each_time() -> None:
    ledger = Ledger()
    auth = Authenticator(ledger, lambda *a: "Bearer")
    bob = Principal("https://idp", "bob", "human", frozenset({"staff"}))
    for _ in range(3):
        await auth.forbidden(bob, "api", "10.0.0.2", "reading the audit ledger needs auditors", path="/api/v1/x")
    assert [e for e, _ in ledger.records] == ["auth.forbidden"] * 3
    assert ledger.records[0][1]["principal"]["subject"] == "bob" and ledger.records[0][1]["remote"] == "10.0.0.2"


def test_a_flood_rotating_through_sources_is_bounded_by_the_interval_budget_and_counts_add_up() -> None:
    """An anonymous caller with many addresses (a /16 of its own, or IPv6) got one record per address
    until MAX_REFUSAL_KEYS was reached: about 800 records a second. Now an interval writes at most
    `max_immediate` records at once; the rest of the flood is counted under its (server, reason)'s
    overflow key and written as one aggregated record."""
    clock = Clock()
    agg = RefusalAggregator(interval=5, clock=clock, max_immediate=128)
    records, recorded_count = 0, 0
    for second in range(20):
        for i in range(2000):  # 2,000 new addresses a second
            _, count = agg.observe((f"10.{second}.{i // 256}.{i % 256}", "bank", "missing_token"))
            if count:
                records += 1
                recorded_count += count
        clock.now += 1
        owed = agg.due()
        records += len(owed)
        recorded_count += sum(c for _, c in owed)
    owed = agg.drain()
    records += len(owed)
    recorded_count += sum(c for _, c in owed)
    assert recorded_count == 20 * 2000, "every refusal is in exactly one count"
    intervals = 20 // 5 + 1
    assert records <= intervals * (128 + 1), f"{records} records for 40,000 refusals in 20 s"


def test_within_the_budget_every_source_still_gets_its_own_record_at_once() -> None:
    clock = Clock()
    agg = RefusalAggregator(interval=5, clock=clock, max_immediate=128)
    keys = [(f"10.0.0.{i}", "bank", "invalid_token") for i in range(128)]
    assert [agg.observe(k) for k in keys] == [(k, 1) for k in keys]
    over = agg.observe(("10.0.1.1", "bank", "invalid_token"))
    assert over == ((OVERFLOW_SOURCE, "bank", "invalid_token"), None)
    clock.now += 5  # a new interval: a new budget
    assert agg.observe(("10.0.1.2", "bank", "invalid_token")) == (("10.0.1.2", "bank", "invalid_token"), 1)
