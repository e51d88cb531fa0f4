"""Record seals: what lets a gateway tell the records it wrote from rows someone else put in its store.

A signed checkpoint vouches for the records it covers. The records after it
(the unsigned tail: a crash's last records, or nothing after a graceful stop)
are only rows until the next checkpoint, and the gateway signs that next
checkpoint over whatever the tail holds when it starts. So the writer seals
each record it writes: HMAC-SHA256, under a key derived from the audit HMAC
key that only the gateways hold (`Ledger.subkey("record-seal")`), over the
log id, the record's seq and its leaf hash (which commits to the record's
bytes). At start every tail record must carry a good seal before anything is
signed over it (docs/security.md §4).

The seal is not part of the record or of its leaf hash: the Merkle tree,
checkpoints, tiles, proofs and bundles are what they were, and an auditor,
who has no key, has nothing new to check. Records a checkpoint covers are
never read for their seals: opening a log costs the same at ten million
records as at ten, plus the tail.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from ledgergate.audit import canonical, merkle, stored
from ledgergate.audit.checkpoint import Checkpoint, NoteError, Verifier, open_checkpoint
from ledgergate.invisible import escaped
from ledgergate.store.ledger_store import LedgerStore

PURPOSE = "record-seal"
#: domain separation: a seal is a MAC of this and nothing else made under a key of this purpose
_DOMAIN = b"ledgergate/record-seal/v1\x00"
_SEQ = struct.Struct(">Q")


class Sealer:
    """Seals the records of one log: HMAC-SHA256 (RFC 2104) under `derive_key(hmac_key, "record-seal")`
    of DOMAIN ‖ len(log id) (4 bytes) ‖ log id ‖ seq (8 bytes, big endian) ‖ leaf hash (32 bytes). Fixed
    widths after a length-prefixed log id, so no two (log, seq, leaf hash) share a message, and a row
    moved to another log or another seq loses its seal."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, hmac_key: bytes, log_id: str) -> None:
        key = canonical.derive_key(hmac_key, PURPOSE)  # 32 bytes: shorter than SHA-256's block, used as is
        name = log_id.encode()
        # RFC 2104 with the key's pads and the per-log prefix hashed once here: a seal is then two copies,
        # 40 bytes hashed and one 32-byte digest hashed, 0.9 µs where `hmac.digest` takes 2.2 µs (OpenSSL
        # 3.0 sets up its MAC on every call; bench/bench_record_seal.py); tests/unit/test_record_seal.py
        # holds it equal to `hmac.digest`
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key.ljust(64, b"\0")))
        self._inner.update(_DOMAIN + len(name).to_bytes(4, "big") + name)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key.ljust(64, b"\0")))

    def seal(self, seq: int, leaf_hash: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(_SEQ.pack(seq) + leaf_hash)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def check(self, seq: int, leaf_hash: bytes, seal: bytes) -> bool:
        return hmac.compare_digest(self.seal(seq, leaf_hash), seal)


class Refused(Exception):
    """The log is not in a state the gateway may sign on from; the text says why and what to do."""


@dataclass
class Offenders:
    """Tail records of one kind (wrong seal, or none): how many, where, and of which events."""

    count: int = 0
    first: int = -1
    last: int = -1
    events: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, seq: int, event: object) -> None:
        if not self.count:
            self.first = seq
        self.count += 1
        self.last = seq
        self.events[event if isinstance(event, str) else repr(event)] += 1


@dataclass
class Tail:
    """What follows the latest signed checkpoint, checked record by record."""

    start: int  # the signed size: the first seq of the tail
    end: int  # the log's size
    wrong: Offenders = field(default_factory=Offenders)  # a seal that does not verify, or bytes that do not hash
    unsealed: Offenders = field(default_factory=Offenders)  # no seal (NULL), bytes that hash to their leaf hash
    to_seal: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, leaf hash) of `unsealed`, when kept
    #: the first stored interior hash the tail completed that its recomputed leaf hashes do not make, or None
    problem: str | None = None

    @property
    def refused(self) -> bool:
        return bool(self.wrong.count or self.unsealed.count or self.problem)


@dataclass
class LogState:
    """A log as the gateway may take it up: its signed checkpoint, and the compact range at its size built
    from the checkpoint's verified prefix and the tail's recomputed leaf hashes."""

    signed: Checkpoint | None
    range: merkle.CompactRange
    tail: Tail


def signed_checkpoint(store: LedgerStore, log_id: str, origin: str, verifier: Verifier) -> Checkpoint | None:
    """The latest checkpoint as its signed note says it, or Refused: the note does not verify, is another
    log's, or the row's unsigned `size`/`root` columns say something else (the row was edited)."""
    row = store.latest_checkpoint(log_id)
    if row is None:
        return None
    try:
        cp = open_checkpoint(row.note, verifier)
    except NoteError as exc:
        raise Refused(f"log {log_id}: its latest stored checkpoint (size {row.size}) does not verify ({exc}): the "
                      "checkpoint row was edited; run `ledgergate audit verify`") from None
    if cp.origin != origin:
        raise Refused(f"log {log_id}: its latest stored checkpoint is signed for another log (origin "
                      f"{_quoted(cp.origin)}): the checkpoint row was edited; run `ledgergate audit verify`")
    if (cp.size, cp.root) != (row.size, row.root):
        raise Refused(f"log {log_id}: its latest checkpoint row says size {row.size} and a root its signed note "
                      f"(size {cp.size}) does not: the checkpoint row was edited; run `ledgergate audit verify`")
    return cp


def _quoted(text: str, limit: int = 80) -> str:
    """Text from the store inside a message: quoted, escaped, bounded."""
    return repr(escaped(text, limit))


def open_log(store: LedgerStore, log_id: str, origin: str, verifier: Verifier, sealer: Sealer,
             keep: bool = False, chunk: int = 4096) -> LogState:
    """Check `log_id` as the gateway must before it signs anything more of it, and build its writer state.

    The prefix the latest signed checkpoint covers is read from stored hashes, O(log n), and must fold to
    the signed root (not the row's `root` column: it is not signed). The tail after it is read in chunks;
    every record's leaf hash is recomputed from its bytes and its seal checked, and the compact range is
    extended with those recomputed hashes, so the stored interior hashes the tail completed must agree
    with them. Records of the tail that fail, and the first stored hash that disagrees, are in the
    returned `Tail` (the caller refuses or reports them); anything else that does not add up raises
    Refused or, from `stored`, HashesBeyondRecords / ValueError / LookupError. `keep`: list the unsealed
    ones for `audit seal-tail`."""
    cp = signed_checkpoint(store, log_id, origin, verifier)
    size = store.size(log_id)
    complete = stored.covers(store, log_id, size)  # raises HashesBeyondRecords (a tail cut below stored hashes)
    signed = cp.size if cp is not None else 0
    if signed > size:
        raise Refused(f"log {log_id}: the store holds {size} records but its latest signed checkpoint is at size "
                      f"{signed} (records deleted); run `ledgergate audit verify` before starting the gateway again")
    if not complete:
        stored.backfill_logged(store, log_id)
    cr = stored.tree(store, log_id).compact_range(signed)
    if cp is not None and cr.root() != cp.root:
        raise Refused(f"log {log_id}: what the store holds does not reproduce its signed checkpoint at size "
                      f"{signed} (records or stored hashes altered); run `ledgergate audit verify` before starting "
                      "the gateway again")
    tail = Tail(signed, size)
    nodes = merkle.StoredNodes()
    cr.on_node = nodes
    leaf_hash, check = merkle.leaf_hash, sealer.check
    for rows in store.iter_sealed(log_id, signed, chunk):
        for seq, stored_hash, record, seal, event in rows:
            if type(seq) is not int or seq != cr.size:
                raise Refused(f"log {log_id}: after its latest signed checkpoint (size {signed}) record {cr.size} "
                              f"is missing (deleted, or its seq changed); run `ledgergate audit verify`")
            if type(record) is not bytes or type(stored_hash) is not bytes:  # SQLite keeps whatever was written
                record, stored_hash = _blob(record), _blob(stored_hash)
            h = leaf_hash(record) if record is not None else _NO_HASH
            cr.append(h)
            if h != stored_hash or h is _NO_HASH:
                tail.wrong.add(seq, event)
            elif seal is None:
                tail.unsealed.add(seq, event)
                if keep:
                    tail.to_seal.append((seq, h))
            else:
                mac = seal if type(seal) is bytes else _blob(seal)
                if mac is None or not check(seq, h, mac):
                    tail.wrong.add(seq, event)
        if tail.problem is None:
            tail.problem = _nodes_problem(store, log_id, nodes.nodes, signed)
        nodes.nodes = []
    cr.on_node = None
    if cr.size != size:  # the iteration stopped at a row that is not an integer seq, or rows vanished meanwhile
        raise Refused(f"log {log_id}: after its latest signed checkpoint (size {signed}) record {cr.size} is missing "
                      "(deleted, or its seq changed); run `ledgergate audit verify`")
    return LogState(cp, cr, tail)


_NO_HASH = bytes(32)  # stands in the range for a record that is not bytes (it is counted wrong)


def _blob(value: object) -> bytes | None:
    """A column's value as bytes, or None when it holds something else (SQLite keeps text, numbers)."""
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


def _nodes_problem(store: LedgerStore, log_id: str, made: list[tuple[int, int, bytes]], signed: int) -> str | None:
    """The stored interior hashes the tail completed must be the ones its recomputed leaf hashes make
    (proofs and tiles are read from them); one range read per stored level. The first that is not, in
    words, or None."""
    by_level: dict[int, dict[int, bytes]] = {}
    for level, index, h in made:
        by_level.setdefault(level, {})[index] = h
    for level, want in by_level.items():
        have = dict(store.node_range(log_id, level, min(want), max(want) + 1))
        for index in sorted(want):
            if have.get(index) != want[index]:
                return (f"log {log_id}: the stored hash at level {level} index {index}, made of records after its "
                        f"latest signed checkpoint (size {signed}), is not the hash of those records (stored hashes "
                        "altered); run `ledgergate audit verify`")
    return None


__all__ = ["PURPOSE", "LogState", "Offenders", "Refused", "Sealer", "Tail", "open_log", "signed_checkpoint"]
