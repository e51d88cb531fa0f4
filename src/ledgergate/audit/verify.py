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
   (a truncated tail).
The first record that fails names the log and index; scanning that log stops
there, because everything after it is unproven.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ledgergate.audit import merkle
from ledgergate.audit.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint
from ledgergate.store.ledger_store import LedgerStore

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
    if not isinstance(doc, dict) or type(doc.get("seq")) is not int or doc.get("seq") != index \
            or doc.get("log") != log_id or doc.get("v") != 1:
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
               witness_notes: Iterable[WitnessNote] = ()) -> LogReport:
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
        if cp.origin != origin or cp.size != row.size or cp.root != row.root:
            rep.problems.append(f"{who}: signed body does not match the stored row")
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

    # Recompute. Hot loop (must stay >= 200k records/s): one hash, one orjson parse
    # (the record's place and its index columns), an inlined compact-range append
    # (merkle.CompactRange.append).
    sha256 = hashlib.sha256
    loads = orjson.loads
    edge: list[bytes] = []
    roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in claims else {}
    expected = 0
    bad = False
    for chunk in store.iter_indexed_leaves(log_id):
        for seq, stored_hash, record, time, event, session in chunk:
            if seq != expected:
                rep.problems.append(f"record {expected}: missing (the next stored record is {seq})")
                bad = True
                break
            if type(record) is not bytes:
                record, stored_hash = bytes(record), bytes(stored_hash)
            h = sha256(b"\x00" + record).digest()
            if h != stored_hash:
                rep.problems.append(f"record {seq}: bytes do not match the stored leaf hash (record altered)")
                bad = True
                break
            try:  # the common case inline; _check_record says what is wrong
                doc = loads(record)
                s_ = doc.get("session")
                fine = (doc["seq"] == seq and doc["log"] == log_id and doc["event"] == event and doc["time"] == time
                        and doc["v"] == 1 and session == (s_ if type(s_) is str else None) and type(doc["seq"]) is int)
            except Exception:  # noqa: BLE001 - not JSON, not an object, a key missing
                fine = False
            if not fine:
                problem = _check_record(log_id, seq, record, time, event, session)
                rep.problems.append(problem or f"record {seq}: does not match its index columns")
                bad = True
                break
            s = expected
            while s & 1:
                h = sha256(b"\x01" + edge.pop() + h).digest()
                s >>= 1
            edge.append(h)
            expected += 1
            if expected in claims:
                roots[expected] = merkle.CompactRange(expected, edge).root()
        if bad:
            break
    cr = merkle.CompactRange(expected, edge)
    rep.size = expected
    rep.root = cr.root()
    if bad:
        return rep

    for size in sorted(claims):
        for who, root in claims[size]:
            if size > rep.size:
                rep.problems.append(f"{who}: the log has only {rep.size} records (tail truncated or records deleted)")
            elif roots.get(size) != root:
                rep.problems.append(f"{who}: root does not match records 0..{size - 1} (records altered and rehashed)")
            else:
                rep.covered = max(rep.covered, size)
    return rep


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
    for log_id in sorted(set(listed) | set(seen)):
        origin = ORIGIN_PREFIX + log_id
        rep = verify_log(store, log_id, origin, verifier, witness_notes)
        if log_id not in listed:
            rep.problems.insert(0, f"the log is missing from the store (no ledger_logs row), but {seen[log_id]} "
                                   f"name it; it holds {rep.size} records")
        elif listed[log_id] != origin:
            rep.problems.insert(0, f"ledger_logs names origin {listed[log_id]!r}, not {origin!r} (row altered)")
        reports.append(rep)
    return reports
