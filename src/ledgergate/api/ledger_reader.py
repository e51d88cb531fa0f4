"""Read access to every log in the configured store, for the REST API, the console and the CLI.

A running gateway's `Ledger` knows only its own log; proofs, sessions and
replays span every log (other replicas', the CLI's). This opens its own
read connections, so it never contends with the ledger's writer, and it
reads what is verifiable only: record bytes whose leaf hash is recomputed
here, parsed from their canonical JSON — never the index columns stored
beside them (`time`, `event`, `session`), which are not hashed.

Blocking; call it from a worker thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ledgergate.audit.checkpoint import Verifier
from ledgergate.audit.prover import LogProver
from ledgergate.audit.sessions import Entry, Session, collect
from ledgergate.audit.witness import FileWitness, file_witness_path
from ledgergate.store.ledger_store import LedgerStore, open_ledger_store


@dataclass(frozen=True)
class StoredRecord:
    """A record as read and checked: its place, its exact bytes and their parsed content."""

    log_id: str
    index: int
    record: bytes
    doc: dict[str, Any]


class RecordProblem(Exception):
    """A stored record that is not what its leaf hash and place say (run `ledgergate audit verify`)."""


@dataclass
class LedgerReader:
    storage: str
    base_dir: Path
    verifier: Verifier
    witnesses: tuple[str, ...] = ()

    def open_store(self) -> LedgerStore:
        return open_ledger_store(self.storage, self.base_dir)

    def witness_notes(self) -> list[str]:
        notes: list[str] = []
        for spec in self.witnesses:
            path = file_witness_path(spec, self.base_dir)
            if path is not None:
                notes.extend(FileWitness(path).read_notes())
        return notes

    def prover(self, store: LedgerStore, log_id: str, notes: list[str] | None = None) -> LogProver:
        return LogProver.open(store, log_id, self.verifier, self.witness_notes() if notes is None else notes)


def checked(log_id: str, seq: int, leaf_hash: bytes, record: bytes) -> StoredRecord:
    """The record, if its bytes hash to its stored leaf hash and it says its own log and index."""
    if hashlib.sha256(b"\x00" + record).digest() != leaf_hash:
        raise RecordProblem(f"record {seq} of log {log_id}: bytes do not match the stored leaf hash (altered)")
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError:
        raise RecordProblem(f"record {seq} of log {log_id}: not JSON") from None
    if not isinstance(doc, dict) or doc.get("log") != log_id or doc.get("seq") != seq:
        raise RecordProblem(f"record {seq} of log {log_id}: says another place (moved or inserted)")
    return StoredRecord(log_id, seq, record, doc)


def iter_records(store: LedgerStore, log_ids: list[str] | None = None) -> Iterator[StoredRecord]:
    """Every record of every log (or of `log_ids`), in log then index order, each checked."""
    logs = [log_id for log_id, _ in store.logs()]
    for log_id in logs:
        if log_ids is not None and log_id not in log_ids:
            continue
        for chunk in store.iter_leaves(log_id):
            for seq, leaf_hash, record in chunk:
                yield checked(log_id, int(seq), bytes(leaf_hash), bytes(record))


def read_record(store: LedgerStore, log_id: str, index: int) -> StoredRecord | None:
    for chunk in store.iter_leaves(log_id, index, index + 1):
        for seq, leaf_hash, record in chunk:
            return checked(log_id, int(seq), bytes(leaf_hash), bytes(record))
    return None


def load_sessions(store: LedgerStore) -> dict[str, Session]:
    """Every session named by a verified record, across every log (see `audit.sessions`)."""
    return collect(Entry(r.log_id, r.index, r.doc) for r in iter_records(store))


__all__ = ["LedgerReader", "RecordProblem", "StoredRecord", "checked", "iter_records", "load_sessions", "read_record"]
