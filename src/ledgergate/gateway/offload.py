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

A large body's values are also what its memory grows with: parsed and carried through the pipeline, a value
of a 4 MiB body of one-key objects took about 300 bytes, so that body took the gateway up 300 MB and eight
at once 1.2 GB. `json_values` counts them from the body's text before it is parsed (a message with more
than `limits.max_json_values` is refused unparsed) and `ValuesInFlight` bounds the values of every large
message being processed at once (`limits.json_values_in_flight`).
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


#: a value in a container is its first (one per `[` or `{`) or follows a comma
_OPENERS = b",[{"
#: the slices a text is counted outside its strings in: what `bytes.split` makes of one is bounded by it
_SLICE = 64 * 1024


def _openers(text: bytes) -> int:
    return len(text) - len(text.translate(None, _OPENERS))  # one pass in C: about 2 ms for 4 MiB


def _openers_outside_strings(text: bytes) -> int:
    """`_openers` of what lies outside the JSON strings of `text`. Escapes come in pairs: with each `\\\\`
    taken out first, a `\\"` left is a quote inside a string, and with those out too every quote left opens
    or closes a string, so whether a slice starts inside one is the parity of the quotes before it. All in C
    but for one step a slice: memory bounded by `_SLICE`, not by how many strings there are."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    count, inside = 0, 0
    for at in range(0, len(text), _SLICE):
        pieces = text[at:at + _SLICE].split(b'"')
        count += _openers(b"".join(pieces[inside::2]))  # the pieces between strings
        inside ^= (len(pieces) - 1) & 1
    return count


def json_values(body: bytes, limit: int) -> int:
    """An upper bound on the values (objects, arrays, strings, numbers, literals) in the JSON text `body`,
    read without parsing it: a value in a container is the container's first or follows a comma, so
    values <= commas + `[` + `{` + 1 (an empty container counts twice). Counted over the whole text first
    (about 2 ms for 4 MiB); only a count above `limit` is counted again outside the strings, whose commas
    and brackets (a CSV or some code as a string argument) open no value. Not valid JSON, the text gets
    some count; the parser refuses it if the count does not."""
    count = _openers(body) + 1
    if count > limit:
        count = _openers_outside_strings(body) + 1
    return count


class ValuesInFlight:
    """The JSON values of the large messages being processed at once, across the gateway: a message takes
    its count before it is parsed and gives it back when its request ends. One that would go past the
    capacity waits until others give theirs back, for at most `wait` seconds. A count is never above the
    capacity (`limits.max_json_values` is at most `limits.json_values_in_flight`), so a message alone
    always fits. Event-loop state: used from the loop only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._given_back = asyncio.Event()  # replaced at each give-back: whoever waited checks again

    async def take(self, count: int, wait: float) -> bool:
        """Take `count` values, waiting up to `wait` seconds for room; False if there was none by then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.used + count > self.capacity:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._given_back.wait(), left)
            except TimeoutError:
                return False
        self.used += count
        return True

    def give_back(self, count: int) -> None:
        if count:
            self.used -= count
            self._given_back.set()
            self._given_back = asyncio.Event()


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
