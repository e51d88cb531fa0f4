"""What the signals add to each call's data path with telemetry off, in-process:

    .venv/bin/python bench/bench_signals.py

Per call the pipeline writes two ledger records (rpc.request, rpc.response), sets the request-id
contextvar and calls `Pipeline.handle` once more than before (it returns `_handle`'s generator).
The wrapped ledger here answers at once, so only the added work is timed: the same loop without
and with `MeteredLedger` + the contextvar, alternated over 7 rounds, medians printed. Read the
added microseconds against the gateway's CPU per call from bench/bench_compare.py on the same day.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ledgergate.gateway.metrics import GatewayMetrics, MeteredLedger  # noqa: E402
from ledgergate.requestlog import REQUEST_ID  # noqa: E402

REQUEST = {"request_id": "req_1", "session": None, "principal": {"sub": "a"}, "server": "everything",
           "method": "tools/call", "target": "echo", "args": {"message": "hi"}, "args_hmac": "x",
           "args_masked": {}, "rule": "bench", "decision": "allow"}
RESPONSE = {"request_id": "req_1", "server": "everything", "method": "tools/call", "latency_ms": 1.0,
            "masked": {}, "response": {"content": []}}


class Instant:
    async def append(self, event: str, fields: Any) -> int:
        return 0


async def answer() -> AsyncGenerator[dict[str, Any], None]:
    yield {"result": {}}


def handle() -> AsyncGenerator[dict[str, Any], None]:
    return answer()  # the extra call Pipeline.handle now makes


async def run(signals: bool, n: int) -> float:
    ledger: Any = MeteredLedger(Instant(), GatewayMetrics()) if signals else Instant()
    started = time.perf_counter()
    for _ in range(n):
        if signals:
            REQUEST_ID.set("req_1")
        await ledger.append("rpc.request", REQUEST)
        await ledger.append("rpc.response", RESPONSE)
        async for _message in (handle() if signals else answer()):
            pass
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    rounds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(7):
        for signals in (False, True):
            rounds[signals].append(await run(signals, 50_000))
    without, with_ = statistics.median(rounds[False]), statistics.median(rounds[True])
    started = time.perf_counter()
    for _ in range(2000):
        sum(range(1000))
    calibration = (time.perf_counter() - started) / 2000 * 1e6
    print(f"per call: {without:.2f} µs without, {with_:.2f} µs with metering and the request id: "
          f"+{with_ - without:.2f} µs (this machine now: sum(range(1000)) takes {calibration:.1f} µs)")


if __name__ == "__main__":
    asyncio.run(main())
