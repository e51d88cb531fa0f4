"""The recompute at the heart of `audit verify`, in segments that worker processes scan in parallel.

A log is cut into segments of SEGMENT = 2^16 records, aligned, so each full
segment is one perfect subtree (RFC 9162 §2.1.1) at level 16. A segment scan
reads its records in seq order and, for each one: checks the sequence has no
gap, recomputes the leaf hash and compares it with the stored one, checks the
record's place and index columns (`check_record`), and extends the segment's
own compact range, comparing every interior hash it completes at a stored
level (4, 8, 12, 16) with `ledger_hashes`. It stops at the first bad record.

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

The per-record check decodes only the fields it compares (msgspec, about three
times faster than a full parse); any record that does not pass goes to the
full `check_record` (orjson), which names the problem.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ledgergate.audit import merkle
from ledgergate.store.db import StoreURL
from ledgergate.store.ledger_store import LedgerStore, open_ledger_store

SEGMENT_LEVEL = 16
SEGMENT = 1 << SEGMENT_LEVEL
MAX_STORED_PROBLEMS = 5
PARALLEL_FROM = 4 * SEGMENT  # below this, starting worker processes costs more than it saves

#: (log_id, index, record, time, event, session) -> a problem or None
RecordCheck = Callable[[str, int, bytes, Any, Any, Any], "str | None"]


class _Place(msgspec.Struct):
    """The fields a record's place and index columns are checked against; the rest is skipped."""

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
    """The stored hashes of some levels, read in index order from `start`, compared as they complete."""

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
            self.problems.append(f"stored hash at level {level} index {index} is missing (stored hash deleted)")
            return
        self.checked += 1
        if got[1] != h:
            self.problems.append(f"stored hash at level {level} index {index} (records {index << level}.."
                                 f"{((index + 1) << level) - 1}) does not match the records (stored hash altered)")


def scan_segment(store: LedgerStore, log_id: str, start: int, end: int, claims: list[int],
                 levels: list[int], check_record: RecordCheck) -> Segment:
    """Check records [start, end): start a multiple of 2^k, end - start <= 2^k, `levels` <= k."""
    seg = Segment(start)
    want = {c for c in claims if start < c < end}
    stored = StoredLevels(store, log_id, levels, lambda lv: start >> lv)
    check = stored.check
    sha256 = hashlib.sha256
    decode = _decode_place
    edge: list[bytes] = []
    p = 0  # records scanned in this segment
    for chunk in store.iter_indexed_range(log_id, start, end):
        for seq, stored_hash, record, time, event, session in chunk:
            expected = start + p
            if seq != expected:
                seg.problem = f"record {expected}: missing (the next stored record is {seq})"
                break
            if type(record) is not bytes:
                record, stored_hash = bytes(record), bytes(stored_hash)
            h = sha256(b"\x00" + record).digest()
            if h != stored_hash:
                seg.problem = f"record {seq}: bytes do not match the stored leaf hash (record altered)"
                break
            try:
                d = decode(record)
                s = d.session
                ok = (d.seq == seq and d.log == log_id and d.v == 1 and d.time == time and d.event == event
                      and (s if type(s) is str else None) == session)
            except msgspec.DecodeError:
                ok = False
            if not ok:
                seg.problem = check_record(log_id, seq, record, time, event, session) or (
                    f"record {seq}: its place or index columns could not be read (not a JSON object)")
                break
            s = p
            if s & 15 != 15:  # no subtree of a stored level completes here
                while s & 1:
                    h = sha256(b"\x01" + edge.pop() + h).digest()
                    s >>= 1
            else:
                level = 0
                while s & 1:
                    h = sha256(b"\x01" + edge.pop() + h).digest()
                    s >>= 1
                    level += 1
                    if level % merkle.STRIDE == 0:
                        check(level, expected >> level, h)
            edge.append(h)
            p += 1
            if start + p in want:
                seg.inside[start + p] = list(edge)
        if seg.problem is not None:
            break
    if seg.problem is None and start + p < end:
        seg.problem = f"record {start + p}: missing"
    seg.scanned, seg.edge = p, edge
    seg.stored_problems, seg.stored_checked = stored.problems, stored.checked
    return seg


# --- worker processes ---------------------------------------------------------------

_worker_store: LedgerStore | None = None


def _init_worker(url: StoreURL) -> None:
    global _worker_store
    _worker_store = open_ledger_store(url)


def _scan_in_worker(log_id: str, start: int, end: int, claims: list[int], levels: list[int],
                    check_record: RecordCheck) -> Segment:
    assert _worker_store is not None
    return scan_segment(_worker_store, log_id, start, end, claims, levels, check_record)


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
    size = store.size(log_id)
    # every stored level the log's size calls for, once it has any (none: written before they existed)
    levels = [lv for lv in range(merkle.STRIDE, 64, merkle.STRIDE) if size >> lv] if store.node_levels(log_id) else []
    claims = sorted(set(claims))
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
    if result.problem is None:
        result.stored_problems = result.stored_problems[:MAX_STORED_PROBLEMS + 1]
    return result


def _fold(edge: list[bytes]) -> bytes:
    if not edge:
        return merkle.EMPTY_ROOT
    r = edge[-1]
    for h in reversed(edge[:-1]):
        r = merkle.node_hash(h, r)
    return r
