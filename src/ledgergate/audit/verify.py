"""`ledgergate audit verify`: recompute every log from its records and check it
against every signed checkpoint, in the database and at the witnesses.

For each log, in leaf order:
1. the stored sequence has no gap (deleted or inserted rows show up here);
2. each record's bytes hash (RFC 9162 leaf hash) to the stored leaf hash
   (an edited record);
3. each record says its own log and seq (a moved/reordered record), and the
   index columns stored beside it (`time`, `event`, `session`, which exports
   and listings select by) say what the hashed record says (an edited index);
4. the tree recomputed from the records has, at every checkpointed size, the
   checkpoint's root (an edit that also rewrote the stored leaf hashes);
5. every checkpoint's signature verifies with the verifier key (a swapped key
   or forged checkpoint), and no witnessed checkpoint is larger than the log
   (a truncated tail);
6. every stored interior hash (`ledger_hashes`, which opening, proofs and
   tiles read) is the hash recomputed from the records (an altered or
   missing stored hash). A log with none at all was written before they
   existed; the gateway backfills it at its next start.
The first record that fails names the log and index; scanning that log stops
there, because everything after it is unproven.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ledgergate.audit import merkle, scan
from ledgergate.audit.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint
from ledgergate.store.ledger_store import LedgerStore, StoreError

_MAX_STORED_PROBLEMS = 5
ORIGIN_PREFIX = "ledgergate/"  # a log's checkpoint origin is ORIGIN_PREFIX + log id (audit.ledger.origin_for)


@dataclass
class LogReport:
    log_id: str
    origin: str
    size: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    covered: int = 0  # largest size a valid checkpoint vouches for
    root: bytes = merkle.EMPTY_ROOT
    problems: list[str] = field(default_factory=list)
    stored_hashes: int = 0  # interior hashes compared with the recomputed tree

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class WitnessNote:
    source: str  # e.g. "file:///data/witness.log note 3"
    note: str


def _check_record(log_id: str, index: int, record: bytes, time: Any, event: Any, session: Any) -> str | None:
    """The record says its own place, and every index column says what the record says.

    The columns `time`, `event` and `session` are what exports, listings and
    the CLI select by; they are not hashed, so a value there that the hashed
    record does not carry is an edit made after the fact.
    """
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError:
        return f"record {index}: not JSON"
    if not isinstance(doc, dict) or doc.get("seq") != index or doc.get("log") != log_id or doc.get("v") != 1:
        got = doc.get("seq") if isinstance(doc, dict) else None
        return f"record {index}: says log {doc.get('log') if isinstance(doc, dict) else None!r} seq {got!r} (moved, reordered or inserted)"
    if time != doc.get("time"):
        return f"record {index}: the stored time column ({time!r}) is not the record's time {doc.get('time')!r} (index column altered)"
    if event != doc.get("event"):
        return f"record {index}: the stored event column ({event!r}) is not the record's event {doc.get('event')!r} (index column altered)"
    want_session = doc.get("session") if isinstance(doc.get("session"), str) else None
    if session != want_session:
        return f"record {index}: the stored session column does not match the record's session (index column altered)"
    return None


def verify_log(store: LedgerStore, log_id: str, origin: str, verifier: Verifier,
               witness_notes: Iterable[WitnessNote] = (), workers: int | None = None) -> LogReport:
    rep = LogReport(log_id, origin)
    claims: dict[int, list[tuple[str, bytes]]] = {}  # size -> [(who, root)]

    for row in store.checkpoints(log_id):
        rep.checkpoints += 1
        who = f"checkpoint at size {row.size} (database)"
        try:
            cp = open_checkpoint(row.note, verifier)
        except NoteError as exc:
            rep.problems.append(f"{who}: {exc}")
            continue
        if cp.origin != origin or cp.size != row.size:
            rep.problems.append(f"{who}: the signed checkpoint is of {cp.origin!r} at size {cp.size}, not of this "
                                f"log at size {row.size} (a checkpoint moved or swapped)")
            continue
        if cp.root != row.root:
            rep.problems.append(f"{who}: the stored root is not the signed one (row altered)")
            continue
        claims.setdefault(cp.size, []).append((who, cp.root))

    for wn in witness_notes:
        try:
            body = Checkpoint.parse(wn.note[:wn.note.rfind("\n\n") + 1]) if "\n\n" in wn.note else None
        except NoteError:
            body = None
        if body is None or body.origin != origin:
            continue
        rep.witnessed += 1
        who = f"witnessed checkpoint at size {body.size} ({wn.source})"
        try:
            cp = open_checkpoint(wn.note, verifier)
        except NoteError as exc:
            rep.problems.append(f"{who}: {exc}")
            continue
        claims.setdefault(cp.size, []).append((who, cp.root))

    # Recompute (audit/scan.py: segments of 2^16 records, in worker processes when there are cores).
    res = scan.scan_log(store, log_id, list(claims), _check_record, workers)
    rep.size = res.size
    rep.root = merkle.CompactRange(res.size, res.edge).root()
    rep.stored_hashes = res.stored_checked
    rep.problems.extend(res.stored_problems[:_MAX_STORED_PROBLEMS])
    if len(res.stored_problems) > _MAX_STORED_PROBLEMS:
        rep.problems.append("more stored hashes do not match; not listing them")
    roots = res.roots
    if res.problem is not None:
        rep.problems.append(res.problem)
        return rep
    rep.problems.extend(_stray_stored_hashes(store, log_id, rep.size))

    for size in sorted(claims):
        for who, root in claims[size]:
            if size > rep.size:
                rep.problems.append(f"{who}: the log has only {rep.size} records (tail truncated or records deleted)")
            elif roots.get(size) != root:
                rep.problems.append(f"{who}: root does not match records 0..{size - 1} (records altered and rehashed)")
            else:
                rep.covered = max(rep.covered, size)
    return rep


def _stray_stored_hashes(store: LedgerStore, log_id: str, size: int) -> list[str]:
    """Stored interior hashes that no record accounts for: at a level the ledger does not store, at a negative
    index, or beyond what `size` records make. The recompute above compares only the hashes the records make,
    so such a row passed `verify`, while the gateway refuses to open the log over it (`stored.covers`) and sends
    its operator here: the row is named, so it can be found."""
    problems = []
    try:
        levels = store.node_levels(log_id)
    except (StoreError, ValueError, TypeError) as exc:
        return [f"the stored hashes cannot be read ({type(exc).__name__}: a level that is not a number?)"]
    for level in levels:
        if not merkle.is_stored_level(level):
            problems.append(f"stored hashes at level {level}: the ledger stores none there (rows no record accounts for)")
            continue
        try:
            bounds = store.node_bounds(log_id, level)
        except (StoreError, ValueError, TypeError) as exc:
            problems.append(f"stored hashes at level {level} cannot be read ({type(exc).__name__})")
            continue
        if bounds is None:
            continue
        low, high = bounds
        if low < 0 or high >= size >> level:
            problems.append(f"stored hashes at level {level} reach index {low if low < 0 else high}, but {size} records "
                            f"make indices 0..{(size >> level) - 1} there (rows no record accounts for)")
    return problems


def _witnessed_log_ids(witness_notes: Iterable[WitnessNote]) -> dict[str, str]:
    """log id -> the first witness note that names it (by its `ledgergate/<id>` origin line)."""
    out: dict[str, str] = {}
    for wn in witness_notes:
        origin = wn.note.split("\n", 1)[0]
        if origin.startswith(ORIGIN_PREFIX) and len(origin) > len(ORIGIN_PREFIX):
            out.setdefault(origin[len(ORIGIN_PREFIX):], wn.source)
    return out


def verify_store(store: LedgerStore, verifier: Verifier, witness_notes: list[WitnessNote]) -> list[LogReport]:
    """Every log anyone has seen, not only those the store still lists.

    A log can be removed whole (its `ledger_logs` row, or every row it has in
    every table); iterating `ledger_logs` alone would then report the others as
    fine. So the logs checked are the union of `ledger_logs`, the log ids in
    the leaf and checkpoint tables, and the origins of the witnessed
    checkpoints; each one the store does not list is reported missing, and is
    still checked against what the witnesses hold.
    """
    listed = dict(store.logs())
    seen: dict[str, str] = {}
    for log_id in store.seen_log_ids():
        if log_id not in listed:
            seen[log_id] = "rows in the leaf or checkpoint tables"
    for log_id, source in _witnessed_log_ids(witness_notes).items():
        if log_id not in listed:
            seen.setdefault(log_id, source)
    reports = []
    ids = set(listed) | set(seen)
    for odd in sorted((i for i in ids if not isinstance(i, str)), key=repr):
        reports.append(LogReport(repr(odd)[:80], "", problems=[
            f"a row names log id {repr(odd)[:80]}, which is not text (a {type(odd).__name__}: a log_id column edited)"]))
    for log_id in sorted(i for i in ids if isinstance(i, str)):
        origin = ORIGIN_PREFIX + log_id
        try:
            rep = verify_log(store, log_id, origin, verifier, witness_notes)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            # a column holding a value of another type than the ledger writes (a size 'abc', a note stored as a
            # blob, a level 'x'): a row edited, named as one, not reported as a fault of this program
            rep = LogReport(log_id, origin, problems=[
                f"a row of this log holds a value of the wrong type ({type(exc).__name__}: {str(exc)[:120]}); a "
                f"column was edited (checkpoint size, note or root, a stored hash's level or index)"])
        if log_id not in listed:
            rep.problems.insert(0, f"the log is missing from the store (no ledger_logs row), but {seen[log_id]} "
                                   f"name it; it holds {rep.size} records")
        elif listed[log_id] != origin:
            rep.problems.insert(0, f"ledger_logs names origin {listed[log_id]!r}, not {origin!r} (row altered)")
        reports.append(rep)
    return reports
