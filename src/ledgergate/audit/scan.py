"""The recompute at the heart of `audit verify`, in segments that worker processes scan in parallel.

A log is cut into segments of SEGMENT = 2^16 records, aligned, so each full
segment is one perfect subtree (RFC 9162 §2.1.1) at level 16. A segment scan
reads its records in seq order, a chunk of rows at a time, and checks each
chunk as a whole (`_check_rows`): the sequence has no gap, every record's leaf
hash recomputed from its bytes equals the stored one, and every record's place
and index columns agree with what it says (`check_record`). Then it builds the
segment's levels, one list of hashes per level (`_levels`), and compares every
stored level (4, 8, 12, 16) with `ledger_hashes` (`_compare_stored`). It stops
at the first bad record; only the records before it count.

Why whole chunks: a record costs a row read (its columns made Python
objects), two SHA-256 calls (its leaf, and one interior node on average), and
a decode of the checked fields; around those a per-record loop spent about a
fifth of the CPU on branches, comparisons and a compact-range step per leaf.
As C loops over a chunk (list comprehensions, `map`, list equality) that
share mostly goes. A check that fails is cut at its first failing record, so
the first bad record, and the words naming it, are those a record-at-a-time
scan gives. Chunks are small (`CHUNK`) so a chunk's records are still in the
CPU cache when they are decoded after hashing.

The combining side (`scan_log`) takes segment results in leaf order: it
appends each full segment's root to a compact range over segments (whose
completed nodes are the stored levels 20, 24, …, compared the same way),
computes the root at every claimed (checkpointed) size — a size inside a
segment is the fold of the segments' edge followed by that segment's local
edge, both canonical, so the fold is MTH(D[0:size]) — and stops at the first
segment with a bad record. Segments are independent, so on a machine with
several cores they run in worker processes (`workers`), each with its own
store connection; one core scans them in order in-process. Same checks, same
answers either way.

The place check decodes only the fields it compares (msgspec, about three
times faster than a full parse) and compares them with the columns as whole
structs; a record that differs is held to the per-record rule, and one that
fails it goes to the full `check_record` (orjson), which names the problem.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat, starmap
from operator import itemgetter
from typing import Any

import msgspec

from ledgergate.audit import merkle
from ledgergate.store.db import StoreURL
from ledgergate.store.ledger_store import LedgerStore, SeqBounds, open_ledger_store

SEGMENT_LEVEL = 16
SEGMENT = 1 << SEGMENT_LEVEL
MAX_STORED_PROBLEMS = 5
PARALLEL_FROM = 4 * SEGMENT  # below this, starting worker processes costs more than it saves
CHUNK = 1024  # rows checked together: the per-chunk work vanishes, and a chunk's records stay in the CPU cache
#               between their hashing and their decode (16384 costs 15-20% more per record, measured)

#: (log_id, index, record, time, event, session) -> a problem or None
RecordCheck = Callable[[str, int, bytes, Any, Any, Any], "str | None"]


class _Place(msgspec.Struct, gc=False):
    """The fields a record's place and index columns are checked against; the rest is skipped.

    Not tracked by the cyclic collector (`gc=False`): a segment makes tens of thousands of these,
    and values decoded from JSON (a tree) cannot form a cycle."""

    v: Any = None
    log: Any = None
    seq: Any = None
    time: Any = None
    event: Any = None
    session: Any = None


_decode_place = msgspec.json.Decoder(_Place).decode


@dataclass
class Segment:
    start: int
    scanned: int = 0  # records checked, from start
    edge: list[bytes] = field(default_factory=list)  # compact range of [start, start + scanned)
    inside: dict[int, list[bytes]] = field(default_factory=dict)  # claimed size strictly inside -> local edge
    problem: str | None = None  # the first bad record; nothing after it is scanned
    stored_problems: list[str] = field(default_factory=list)
    stored_checked: int = 0


class StoredLevels:
    """The stored hashes of some levels, read in index order from `start`, compared as they complete.

    For the levels above a segment (one hash per 2^20 records or more), as `scan_log` folds the
    segments in; a segment's own levels are compared in bulk (`_compare_stored`)."""

    def __init__(self, store: LedgerStore, log_id: str, levels: list[int], first: Callable[[int], int]) -> None:
        self.iters: dict[int, Iterator[tuple[int, bytes]]] = {
            lv: (p for chunk in store.iter_nodes(log_id, lv, start=first(lv)) for p in chunk) for lv in levels}
        self.next: dict[int, tuple[int, bytes] | None] = {}
        self.problems: list[str] = []
        self.checked = 0

    def check(self, level: int, index: int, h: bytes) -> None:
        it = self.iters.get(level)
        if it is None:
            return
        got = self.next.pop(level) if level in self.next else next(it, None)
        while got is not None and got[0] < index:
            got = next(it, None)
        if got is None or got[0] != index:
            self.next[level] = got
            self.problems.append(_missing(level, index))
            return
        self.checked += 1
        if got[1] != h:
            self.problems.append(_altered(level, index))


def _missing(level: int, index: int) -> str:
    return f"stored hash at level {level} index {index} is missing (stored hash deleted)"


def _altered(level: int, index: int) -> str:
    return (f"stored hash at level {level} index {index} (records {index << level}..{((index + 1) << level) - 1}) "
            "does not match the records (stored hash altered)")


def _first_difference(a: list[Any], b: list[Any]) -> int:
    """The first index where two lists differ (one may be shorter)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _place_ok(d: _Place | None, log_id: str, seq: int, time: Any, event: Any, session: Any) -> bool:
    """The per-record rule the batched comparison stands in for (a record that is not a string in
    `session` matches a NULL column, which a field-by-field comparison would call a difference)."""
    if d is None:
        return False
    s = d.session
    return bool(d.seq == seq and d.log == log_id and d.v == 1 and d.time == time and d.event == event
                and (s if type(s) is str else None) == session)


def _as_bytes(value: Any) -> bytes:
    """A blob column as bytes; a value of another type (SQLite keeps whatever was written) as
    bytes that will not hash to what the writer stored, so it is reported, not raised."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value.encode() if isinstance(value, str) else repr(value).encode()


_SEQ, _LEAF, _RECORD, _TIME, _EVENT, _SESSION = (itemgetter(i) for i in range(6))


def _check_rows(rows: list[tuple[Any, ...]], first: int, log_id: str, leaves: list[bytes],
                check_record: RecordCheck) -> str | None:
    """Check one chunk of rows that should be records first, first + 1, …; extend `leaves` with the
    leaf hashes of the good ones, up to the first bad record, and return that record's problem.

    Every check runs over the whole chunk as list operations (C loops: map, list comprehensions,
    list equality) instead of one record at a time. Each check is cut at its first failure, so the
    first bad record is still the one found, and it is named by the same per-record rule and the
    same full check (`check_record`) as a record-at-a-time scan would name it."""
    n = len(rows)
    seqs = list(map(_SEQ, rows))
    problem: str | None = None
    if seqs != list(range(first, first + n)):
        n = _first_difference(seqs, list(range(first, first + n)))
        problem = f"record {first + n}: missing (the next stored record is {seqs[n]})"
        rows = rows[:n]
    recs = list(map(_RECORD, rows))
    sha256 = hashlib.sha256
    try:
        hashes = [sha256(b"\x00" + r).digest() for r in recs]
    except TypeError:  # a column that is not bytes
        recs = list(map(_as_bytes, recs))
        hashes = [sha256(b"\x00" + r).digest() for r in recs]
    stored = list(map(_LEAF, rows))
    if hashes != stored:
        n = _first_difference(hashes, stored)
        problem = (f"record {first + n}: the stored leaf hash does not match the record's bytes "
                   "(the record or its leaf_hash column altered)")
        rows, recs, hashes = rows[:n], recs[:n], hashes[:n]
    decode = _decode_place
    try:
        places: list[_Place | None] = list(map(decode, recs))
    except msgspec.DecodeError:
        places = []
        for r in recs:
            try:
                places.append(decode(r))
            except msgspec.DecodeError:
                places.append(None)
    want = list(starmap(_Place, zip(repeat(1), repeat(log_id), seqs, map(_TIME, rows), map(_EVENT, rows),
                                    map(_SESSION, rows))))
    if places != want:
        for i in range(_first_difference(places, want), n):
            seq, _, _, time, event, session = rows[i]
            if not _place_ok(places[i], log_id, seq, time, event, session):
                problem = check_record(log_id, seq, recs[i], time, event, session) or (
                    f"record {seq}: its place or index columns could not be read (not a JSON object)")
                hashes = hashes[:i]
                break
    leaves += hashes
    return problem


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every perfect subtree of the leaves, level by level: [leaves, level 1, level 2, …].

    Level k holds len(leaves) >> k hashes, the subtrees over the first records; one list
    comprehension per level, so the interior costs one hash call per node and little else."""
    out = [leaves]
    sha256 = hashlib.sha256
    nodes = leaves
    while len(nodes) > 1:
        pairs = iter(nodes)
        nodes = [sha256(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs)]
        out.append(nodes)
    return out


def _edge(levels: list[list[bytes]], size: int) -> list[bytes]:
    """The compact range of the first `size` leaves, largest subtree first, from their levels."""
    return [levels[k][(size >> k) - 1] for k in range(size.bit_length() - 1, -1, -1) if size >> k & 1]


def _compare_stored(store: LedgerStore, log_id: str, levels: list[list[bytes]], stored_levels: list[int],
                    start: int) -> tuple[list[str], int]:
    """Compare the stored hashes of `stored_levels` with the recomputed ones: (problems, compared).

    One read per level; when every index is there and every hash equal (the usual case) that is
    one list comparison. Problems come in the order the subtrees complete (by last record, lower
    level first), as the per-record scan named them."""
    found: list[tuple[int, int, str]] = []
    checked = 0
    for lv in stored_levels:
        mine = levels[lv] if lv < len(levels) else []
        if not mine:
            continue
        lo = start >> lv
        got = store.node_range(log_id, lv, lo, lo + len(mine))
        if [i for i, _ in got] == list(range(lo, lo + len(mine))):
            checked += len(mine)
            theirs = [h for _, h in got]
            if theirs != mine:
                found += [((lo + k + 1) << lv, lv, _altered(lv, lo + k))
                          for k, (h, t) in enumerate(zip(mine, theirs)) if h != t]
            continue
        have: dict[int, bytes] = {}
        for i, h in got:
            have.setdefault(i, h)
        for k, h in enumerate(mine):
            i = lo + k
            t = have.get(i)
            if t is None:
                found.append(((i + 1) << lv, lv, _missing(lv, i)))
            else:
                checked += 1
                if t != h:
                    found.append(((i + 1) << lv, lv, _altered(lv, i)))
    found.sort()
    return [msg for _, _, msg in found], checked


def scan_segment(store: LedgerStore, log_id: str, start: int, end: int, claims: list[int],
                 levels: list[int], check_record: RecordCheck) -> Segment:
    """Check records [start, end): start a multiple of 2^k, end - start <= 2^k, `levels` <= k."""
    seg = Segment(start)
    leaves: list[bytes] = []
    chunks = store.iter_indexed_range(log_id, start, end, CHUNK)
    try:
        for rows in chunks:
            seg.problem = _check_rows(rows, start + len(leaves), log_id, leaves, check_record)
            if seg.problem is not None:
                break
    finally:
        chunks.close()  # ends the statement now, not when the generator is collected
    p = len(leaves)
    if seg.problem is None and start + p < end:
        seg.problem = f"record {start + p}: missing"
    tree = _levels(leaves)
    seg.scanned, seg.edge = p, _edge(tree, p)
    seg.inside = {c: _edge(tree, c - start) for c in claims if start < c < end and c - start <= p}
    seg.stored_problems, seg.stored_checked = _compare_stored(store, log_id, tree, levels, start)
    return seg


# --- worker processes ---------------------------------------------------------------

_worker_store: LedgerStore | None = None


def _init_worker(url: StoreURL) -> None:
    global _worker_store
    _worker_store = open_ledger_store(url)
    # A segment makes a few hundred thousand short-lived objects (row tuples, hashes), none in a
    # cycle; at the default threshold (700) the cyclic collector would run hundreds of times per
    # segment for nothing (5-10% of a worker's time). The process only scans; cycles, if any, are
    # still collected, just less often.
    gc.freeze()
    gc.set_threshold(200_000, 20, 20)


def _scan_in_worker(log_id: str, start: int, end: int, claims: list[int], levels: list[int],
                    check_record: RecordCheck) -> Segment:
    assert _worker_store is not None
    return scan_segment(_worker_store, log_id, start, end, claims, levels, check_record)


@contextmanager
def _main_script_hidden(check_record: RecordCheck) -> Iterator[None]:
    """Spawned workers skip re-running the parent's main script.

    A spawned process first re-runs the parent's `__main__` file (as `__mp_main__`) so that
    functions defined there can be unpickled. For `ledgergate audit verify` that file is the
    console script, which imports the whole CLI (typer, the gateway, the console): about a
    second of CPU per worker, measured here, before it checks a record. A worker needs only
    `_scan_in_worker` and `check_record`, both importable by their module's name, so while the
    pool starts its processes the main module's path is kept out of what multiprocessing sends
    them. Not when `check_record` itself lives in the main script (it could not be found), nor
    when the main module was started by name (`python -m`), which spawn handles itself.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if (main is None or path is None or getattr(getattr(main, "__spec__", None), "name", None) is not None
            or getattr(check_record, "__module__", "__main__") == "__main__"):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ScanResult:
    size: int  # records checked before the first problem (or all)
    edge: list[bytes]  # compact range at `size`
    roots: dict[int, bytes]  # claimed size -> recomputed root
    problem: str | None
    stored_problems: list[str]
    stored_checked: int


def scan_log(store: LedgerStore, log_id: str, claims: list[int], check_record: RecordCheck,
             workers: int | None = None, segment_level: int = SEGMENT_LEVEL,
             parallel_from: int = PARALLEL_FROM) -> ScanResult:
    """Recompute a log's tree from its records, segment by segment, in order or in parallel."""
    segment = 1 << segment_level
    claims = sorted(set(claims))
    # Bound the work by what is stored, not by MAX(seq): one row can say any seq (2^62 would make the
    # segment list alone gigabytes), and a row outside 0..n-1 is no record of the tree.
    seqs = store.seq_bounds(log_id)
    odd = _seq_problem(seqs)
    if odd is not None:
        return ScanResult(0, [], {0: merkle.EMPTY_ROOT} if 0 in claims else {}, odd, [], 0)
    # n rows at distinct seqs >= 0: records 0..n-1 all there, or one of them missing (the scan names it)
    size = seqs.count
    # every stored level the log's size calls for, once it has any (none: written before they existed)
    levels = [lv for lv in range(merkle.STRIDE, 64, merkle.STRIDE) if size >> lv] if store.node_levels(log_id) else []
    top_levels = [lv for lv in levels if lv > segment_level]
    low_levels = [lv for lv in levels if lv <= segment_level]
    top_check = StoredLevels(store, log_id, top_levels, lambda lv: 0)

    def on_top(level: int, index: int, h: bytes) -> None:
        lv = level + segment_level
        if lv % merkle.STRIDE == 0:
            top_check.check(lv, index, h)

    top = merkle.CompactRange(on_node=on_top)
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in claims else {}
    result = ScanResult(0, [], roots, None, [], 0)
    bounds = [(s, min(s + segment, size)) for s in range(0, size, segment)]

    def take(seg: Segment) -> bool:
        """Fold one segment in; False once a bad record ends the scan."""
        result.stored_problems.extend(seg.stored_problems)
        result.stored_checked += seg.stored_checked
        for c, local in seg.inside.items():
            roots[c] = _fold(top.edge + local)
        result.size = seg.start + seg.scanned
        if seg.scanned == segment:
            top.append(seg.edge[0])
            result.edge = list(top.edge)
            if result.size in claims:
                roots[result.size] = top.root()
        else:
            result.edge = top.edge + seg.edge
            if result.size in claims and result.size:
                roots[result.size] = _fold(result.edge)
        if seg.problem is not None:
            result.problem = seg.problem
            return False
        return True

    workers = default_workers() if workers is None else workers
    if workers <= 1 or size < parallel_from:
        for start, end in bounds:
            if not take(scan_segment(store, log_id, start, end, claims, low_levels, check_record)):
                break
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads and connections
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(store.url,)) as pool:
            window: list[Future[Segment]] = []
            todo = iter(bounds)
            with _main_script_hidden(check_record):  # the pool starts its processes in these submits
                for start, end in todo:  # keep a few segments in flight per worker, in order
                    window.append(pool.submit(_scan_in_worker, log_id, start, end, claims, low_levels, check_record))
                    if len(window) >= 3 * workers:
                        break
            while window:
                seg = window.pop(0).result()
                if not take(seg):
                    for f in window:
                        f.cancel()
                    break
                nxt = next(todo, None)
                if nxt is not None:
                    window.append(pool.submit(_scan_in_worker, log_id, *nxt, claims, low_levels, check_record))
    result.stored_problems.extend(top_check.problems)
    result.stored_checked += top_check.checked
    if seqs.hi is not None and seqs.hi >= size:  # a gap: some record below `size` is missing
        result.problem = _gap_problem(store, log_id, result, seqs.count, seqs.hi)
    if result.problem is None:
        result.stored_problems = result.stored_problems[:MAX_STORED_PROBLEMS + 1]
    return result


def _seq_problem(seqs: SeqBounds) -> str | None:
    """A row no scan in seq order 0, 1, … would read: its seq is not an integer, or is negative."""
    if seqs.non_integer is not None:
        value = repr(seqs.non_integer)
        value = value if len(value) <= 40 else value[:36] + "…"
        return (f"a row with a non-integer seq ({value}) (a record's index is a whole number: a forged or "
                "corrupted row)")
    if seqs.lo is not None and seqs.lo < 0:
        return f"a row with a negative seq ({seqs.lo}) (no record has a negative index: a forged row outside the tree)"
    return None


def _gap_problem(store: LedgerStore, log_id: str, result: ScanResult, count: int, hi: int) -> str:
    """The first problem of a log whose largest seq is beyond its row count: the scan (over
    0..count-1 only) found the first missing record; say what follows it, and how far seq runs."""
    problem = result.problem
    first = result.size
    if problem is None or problem == f"record {first}: missing":  # the gap ran past what was scanned
        nxt = store.next_seq(log_id, first)
        problem = f"record {first}: missing" + (f" (the next stored record is {nxt})" if nxt is not None else "")
        return (f"{problem}; the log holds {count} rows but its seq runs to {hi}: records missing or a forged seq")
    return problem


def _fold(edge: list[bytes]) -> bytes:
    if not edge:
        return merkle.EMPTY_ROOT
    r = edge[-1]
    for h in reversed(edge[:-1]):
        r = merkle.node_hash(h, r)
    return r
