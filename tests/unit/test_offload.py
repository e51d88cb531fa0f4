"""`gateway/offload.py`: which values count as large (their per-value work then leaves the event loop)."""

from __future__ import annotations

import asyncio
import threading
import time

from ledgergate.gateway import offload


def test_a_call_sized_message_stays_on_the_loop_and_a_large_one_does_not() -> None:
    assert not offload.is_large({"account": "GB82WEST12345698765432", "amount": 10, "memo": "rent" * 20})
    assert not offload.is_large([[[[{"deep": "but small"}]]]])
    assert not offload.is_large(None)
    assert offload.is_large([{"n": i} for i in range(3_000)])  # values
    assert offload.is_large({"blob": "x" * 64 * 1024})  # text, which the detectors scan character by character
    assert offload.is_large({str(i): i for i in range(3_000)})  # keys are scanned as values are


def test_the_estimate_stops_once_the_budget_is_spent() -> None:
    huge = list(range(5_000_000))
    started = time.perf_counter()
    assert offload.is_large(huge)
    assert time.perf_counter() - started < 0.05  # a full walk of 5 million values takes about a second


def test_large_work_runs_off_the_loop_thread_and_small_work_on_it() -> None:
    async def main() -> tuple[str, str]:
        small = await offload.sized({"a": 1}, lambda: threading.current_thread().name)
        large = await offload.sized(["x"] * 10_000, lambda: threading.current_thread().name)
        return small, large

    small, large = asyncio.run(main())
    assert small == threading.current_thread().name
    assert large.startswith("ledgergate-large")
