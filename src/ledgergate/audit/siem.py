"""The SIEM export's core: verified ledger records, a checkpoint's worth at a time, from a position.

A record leaves only once it is proven: its bytes hash to its stored leaf hash, it names its own
log and index, and the tree recomputed over it and everything before it has the root of an
Ed25519-signed checkpoint. So the export moves from one signed checkpoint to the next and hands
out each stretch between two of them as one `Batch`; records newer than the latest checkpoint
wait for the next one. When a stretch fails, the export stops with `SiemError` naming the log
and the record or checkpoint, and nothing of that stretch or after it is handed out.

Resuming costs no re-reading: a `Cursor` keeps, beside the next index, the tree's compact range
over everything already emitted (log2(n) hashes). On resume it must give the root of the signed
checkpoint at that size, so a ledger rewritten under an exporter is caught too (this is a
consistency check between the checkpoint the exporter stopped at and every later one).

Delivery is at least once: the caller writes a batch, then saves the cursor; a crash between
the two repeats that batch on resume, never skips one.

No I/O here beyond the ledger reader handed in (the store, or anything with the same three
reads); files, syslog and the state file belong to `commands/siem.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from ledgergate.audit import merkle
from ledgergate.audit.checkpoint import NoteError, Verifier, open_checkpoint
from ledgergate.store.ledger_store import CheckpointRow

STATE_VERSION = 1
_HASH = 32


class SiemError(Exception):
    """The export stopped: a record or checkpoint failed verification, or the state does not fit the ledger."""


class LedgerReader(Protocol):
    def logs(self) -> list[tuple[str, str]]: ...

    def checkpoints(self, log_id: str) -> list[CheckpointRow]: ...

    def iter_leaves(self, log_id: str, start: int = 0, end: int | None = None,
                    chunk: int = 20000) -> Iterator[Sequence[tuple[int, bytes, bytes]]]: ...


@dataclass
class Cursor:
    """Where one log's export stands: the next index to emit and the tree over everything before it."""

    log_id: str
    origin: str
    next: int = 0
    edge: list[bytes] = field(default_factory=list)

    def tree(self) -> merkle.CompactRange:
        return merkle.CompactRange(self.next, self.edge)


@dataclass(frozen=True)
class VerifiedRecord:
    seq: int
    record: bytes  # exactly the canonical bytes that were hashed into the tree
    time: str
    event: str


@dataclass
class Batch:
    """Records `first`..`cursor.next - 1` of one log, proven by the signed checkpoint at `cursor.next`."""

    log_id: str
    first: int
    records: list[VerifiedRecord]
    cursor: Cursor


# --- state file (bytes in, bytes out; the command does the file I/O) --------------------------------

def dump_state(cursors: dict[str, Cursor]) -> bytes:
    logs = {c.log_id: {"origin": c.origin, "next": c.next, "edge": [h.hex() for h in c.edge]}
            for c in sorted(cursors.values(), key=lambda c: c.log_id)}
    return orjson.dumps({"version": STATE_VERSION, "logs": logs}, option=orjson.OPT_INDENT_2) + b"\n"


def parse_state(data: bytes) -> dict[str, Cursor]:
    """ValueError names what is wrong: a state file is edited by hand at times."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or not isinstance(doc.get("logs"), dict):
        raise ValueError(f'expected {{"version": {STATE_VERSION}, "logs": {{...}}}}')
    cursors: dict[str, Cursor] = {}
    for log_id, entry in doc["logs"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"log {log_id}: expected an object")
        nxt, origin, edge = entry.get("next"), entry.get("origin"), entry.get("edge")
        if type(nxt) is not int or nxt < 0 or not isinstance(origin, str) or not isinstance(edge, list):
            raise ValueError(f"log {log_id}: needs 'origin' (text), 'next' (a count) and 'edge' (a list)")
        try:
            hashes = [bytes.fromhex(h) for h in edge]
        except (TypeError, ValueError):
            raise ValueError(f"log {log_id}: 'edge' must hold hex hashes") from None
        if any(len(h) != _HASH for h in hashes) or len(hashes) != bin(nxt).count("1"):
            raise ValueError(f"log {log_id}: 'edge' does not fit a tree of {nxt} records")
        cursors[log_id] = Cursor(log_id, origin, nxt, hashes)
    return cursors


# --- verification ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Signed:
    root: bytes
    edge: bytes  # the stored compact range at this size (unsigned: checked against `root` before use)


def signed_checkpoints(rows: Sequence[CheckpointRow], log_id: str, origin: str,
                       verifier: Verifier) -> dict[int, _Signed]:
    """Every stored checkpoint of the log, each checked against the verifier key; one that fails stops the export."""
    out: dict[int, _Signed] = {}
    for row in rows:
        where = f"log {log_id}: checkpoint at size {row.size}"
        try:
            cp = open_checkpoint(row.note, verifier)
        except NoteError as exc:
            raise SiemError(f"{where}: {exc}") from None
        if cp.origin != origin or cp.size != row.size:
            raise SiemError(f"{where}: the signed checkpoint is of origin {cp.origin!r} at size {cp.size}, not "
                            f"{origin!r} at size {row.size} (another log's or another size's checkpoint put here)")
        if cp.root != row.root:
            raise SiemError(f"{where}: the signed root is not the stored row's root (root column altered)")
        out[cp.size] = _Signed(cp.root, row.edge)
    return out


def _parse_record(log_id: str, seq: int, record: bytes) -> tuple[str, str]:
    """(time, event) of a record that says it is record `seq` of `log_id`."""
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError:
        raise SiemError(f"log {log_id}: record {seq}: not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("log") != log_id or doc.get("seq") != seq:
        raise SiemError(f"log {log_id}: record {seq}: says log {doc.get('log') if isinstance(doc, dict) else None!r} "
                        f"seq {doc.get('seq') if isinstance(doc, dict) else None!r} (moved, reordered or inserted)")
    return str(doc.get("time", "")), str(doc.get("event", ""))


def _checked(log_id: str, expected: int, seq: int, stored: bytes, record: bytes) -> tuple[bytes, bytes]:
    if seq != expected:
        raise SiemError(f"log {log_id}: record {expected}: missing (the next stored record is {seq})")
    record, stored = bytes(record), bytes(stored)
    h = merkle.leaf_hash(record)
    if h != stored:
        raise SiemError(f"log {log_id}: record {seq}: its bytes do not match the stored leaf hash (record altered)")
    return record, h


def _split_edge(edge: bytes) -> list[bytes]:
    return [edge[i:i + _HASH] for i in range(0, len(edge), _HASH)]


def start_at(reader: LedgerReader, log_id: str, origin: str, position: int,
             signed: dict[int, _Signed]) -> Cursor | None:
    """A cursor at `position` from the ledger alone: the nearest signed checkpoint at or below it
    whose stored compact range gives its signed root, then the records up to `position`, rehashed.
    None while the log is shorter than `position`."""
    tree = merkle.CompactRange()
    for size in sorted((s for s in signed if s <= position), reverse=True):
        try:
            candidate = merkle.CompactRange(size, _split_edge(signed[size].edge))
        except ValueError:
            continue
        if candidate.root() == signed[size].root:
            tree = candidate
            break
    if tree.size < position:
        for chunk in reader.iter_leaves(log_id, tree.size, position):
            for seq, stored, record in chunk:
                _, h = _checked(log_id, tree.size, seq, stored, record)
                _parse_record(log_id, seq, bytes(record))
                tree.append(h)
    if tree.size < position:
        return None
    return Cursor(log_id, origin, tree.size, list(tree.edge))


def resume(cursor: Cursor, signed: dict[int, _Signed]) -> None:
    """A saved cursor must still agree with the ledger's signed checkpoint at its size."""
    if cursor.next == 0:
        if cursor.edge:
            raise SiemError(f"log {cursor.log_id}: the saved state holds hashes for an empty tree")
        return
    at = signed.get(cursor.next)
    if at is None:
        raise SiemError(f"log {cursor.log_id}: the export stopped at the signed checkpoint of size {cursor.next}, "
                        "which is no longer in the ledger (checkpoints deleted or the log replaced)")
    if cursor.tree().root() != at.root:
        raise SiemError(f"log {cursor.log_id}: the ledger's signed checkpoint at size {cursor.next} differs from the "
                        "one this export already emitted up to (the log was rewritten and re-signed, or the state "
                        "file was edited)")


def export_log(reader: LedgerReader, cursor: Cursor, signed: dict[int, _Signed]) -> Iterator[Batch]:
    """Batches from `cursor` up to the newest signed checkpoint, each proven before it is yielded.

    A generator: batches before a failing stretch are handed out (and can be saved) before
    `SiemError` is raised for it.
    """
    log_id = cursor.log_id
    targets = sorted(s for s in signed if s > cursor.next)
    if not targets:
        return
    tree = cursor.tree()
    first = tree.size
    pending: list[VerifiedRecord] = []
    for chunk in reader.iter_leaves(log_id, tree.size, targets[-1]):
        for seq, stored, raw in chunk:
            record, h = _checked(log_id, tree.size, seq, stored, raw)
            time, event = _parse_record(log_id, seq, record)
            tree.append(h)
            pending.append(VerifiedRecord(seq, record, time, event))
            at = signed.get(tree.size)
            if at is None:
                continue
            if tree.root() != at.root:
                raise SiemError(f"log {log_id}: records {first}..{tree.size - 1} do not hash to the signed checkpoint "
                                f"at size {tree.size} (records altered and rehashed)")
            yield Batch(log_id, first, pending, Cursor(log_id, cursor.origin, tree.size, list(tree.edge)))
            first, pending = tree.size, []
    if tree.size < targets[-1]:
        raise SiemError(f"log {log_id}: a signed checkpoint vouches for {targets[-1]} records but the log has "
                        f"only {tree.size} (tail truncated or records deleted)")


# --- syslog framing (RFC 5424; RFC 6587 octet counting over TCP) ---------------------------------

SYSLOG_PRI = 16 * 8 + 6  # facility local0, severity informational


def syslog_message(rec: VerifiedRecord, hostname: str, procid: int) -> bytes:
    """One RFC 5424 message whose MSG is the record's canonical JSON, unchanged."""
    host = "".join(ch for ch in hostname if "!" <= ch <= "~")[:255] or "-"
    timestamp = rec.time if rec.time.endswith("Z") and "T" in rec.time else "-"
    msgid = "".join(ch for ch in rec.event if "!" <= ch <= "~")[:32] or "-"
    head = f"<{SYSLOG_PRI}>1 {timestamp} {host} ledgergate {procid} {msgid} - "
    return head.encode("ascii") + rec.record


def octet_counted(message: bytes) -> bytes:
    return b"%d " % len(message) + message
