"""Per-value work on a large message runs on a worker thread, so one caller cannot stall the others.

Masking, canonical encoding and the arguments' digest are Python per value. For a message of a few
values that is microseconds, and a thread hand-off would cost more than the work. For a 4 MB message
of 300,000 small objects it is a second or more, and on the event loop that second is every other
caller's too: a concurrent one-line call waited as long as the large one (measured before this module:
a 5.6 MB `tools/call` kept a small call from another session waiting 2.6 s).

On a worker thread the loop keeps serving: CPython hands the interpreter back and forth every switch
interval (0.5 ms under `ledgergate serve`), so the other callers share the CPU with the large message
instead of queueing behind it. Two workers bound how much of the process large messages take at once;
more large messages wait their turn for a worker, not for the loop.

Whether a value is large is estimated by walking it with a budget, in the units of the work it predicts
(about a microsecond: one value, or eight characters of text, which the detectors scan at roughly 120 ns
a character); the estimate stops as soon as the budget is spent, so it costs a large message about
half a millisecond and a small one what its few values take to visit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: work (in about-a-microsecond units) that still runs on the event loop: a few milliseconds at most. A value
#: in a container is charged twice (when its container is opened, and when it is visited), so the estimate
#: errs towards the worker
INLINE_BUDGET = 5_000
#: a request body at least this large is parsed on a worker (orjson and the depth check over it)
LARGE_BODY_BYTES = 64 * 1024
WORKERS = 2

_pool: ThreadPoolExecutor | None = None


def is_large(value: Any, budget: int = INLINE_BUDGET) -> bool:
    """Whether masking or encoding `value` would cost more than `budget` units (see the module docstring)."""
    todo = [value]
    while todo:
        item = todo.pop()
        budget -= 1
        if isinstance(item, str):
            budget -= len(item) >> 3
        elif isinstance(item, dict):
            budget -= 2 * len(item)  # the keys, each scanned as a value, and the values to come
            if budget < 0:
                return True
            todo.extend(item.values())
        elif isinstance(item, list | tuple):
            budget -= len(item)  # charged before they are queued: a list of millions is not copied to learn that
            if budget < 0:
                return True
            todo.extend(item)
        if budget < 0:
            return True
    return False


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ledgergate-large")
    return _pool


async def on_worker(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on one of the large-message workers. A cancelled caller stops waiting; the work, which
    has no effects beyond its result, runs to its end and is dropped."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)


async def sized(value: Any, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, whose cost grows with `value`: inline when `value` is small, else on a worker."""
    if is_large(value):
        return await on_worker(fn, *args)
    return fn(*args)
