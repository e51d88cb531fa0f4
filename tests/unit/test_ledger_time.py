"""Every record's `time`: RFC 3339 UTC to the microsecond, as `datetime` would write it, also across the
second boundaries where `rfc3339_now` formats its kept second anew."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from ledgergate.audit import ledger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_datetime_writes(ns: int) -> str:
    return (EPOCH + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_now_is_utc_to_the_microsecond() -> None:
    before = datetime.now(UTC)
    text = ledger.rfc3339_now()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    stamp = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(milliseconds=1) <= stamp <= after + timedelta(milliseconds=1)


@pytest.mark.parametrize("instants", [
    # the last microsecond of a second, then the first ones of the next (the kept second must change)
    [1_795_691_485_999_999_000, 1_795_691_486_000_000_000, 1_795_691_486_000_042_999],
    # a year's end, a leap day, and back to an earlier second (a clock set back)
    [1_798_761_599_999_999_999, 1_798_761_600_000_001_000, 1_709_208_000_123_456_789, 1_795_691_485_500_000_000],
    # the same second twice, then the epoch itself
    [1_795_691_485_000_001_000, 1_795_691_485_999_000_000, 0],
])
def test_the_kept_second_follows_the_clock(monkeypatch: pytest.MonkeyPatch, instants: list[int]) -> None:
    clock = iter(instants)
    monkeypatch.setattr(ledger.time, "time_ns", lambda: next(clock))
    assert [ledger.rfc3339_now() for _ in instants] == [as_datetime_writes(ns) for ns in instants]
