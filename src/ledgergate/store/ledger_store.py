"""Tables of the ledger: logs, leaves (records + leaf hashes) and checkpoints.

One interface, two engines. Calls are blocking; the ledger calls them from its
own writer thread (appends, checkpoints) or worker threads (proofs, verify).
Every engine error surfaces as `StoreError`, which the ledger turns into
`LedgerUnavailable` (fail closed).

Leaf hashes are stored beside the record bytes: `verify` recomputes them and
compares, and proofs read them without rehashing records.

Each leaf also carries a `seal` (audit/seals.py): a MAC under a key only the
gateways hold, written in the same statement as its row. It is not part of the
record or its leaf hash; the gateway checks it at start for the records its
latest signed checkpoint does not cover yet.

`ledger_hashes` holds the Merkle tree's interior: MTH of every perfect subtree
at the levels `merkle.STRIDE` divides, written in the same transaction as the
leaves that complete it. Opening a log reads O(log n) of them instead of
replaying every leaf, proofs and C2SP tlog-tiles read them, and `verify`
recomputes and compares them like the leaf hashes.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import struct
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from ledgergate.store.db import (
    StoreUnreachable,
    StoreURL,
    connect,
    error_text,
    shown_url,
    store_absence,
)


class StoreError(Exception):
    """The store could not do what was asked (unreachable, read-only, gone)."""


@dataclass(frozen=True)
class LeafRow:
    seq: int
    time: str
    event: str
    session: str | None
    leaf_hash: bytes
    record: bytes
    seal: bytes | None = None  # the gateway's MAC of the row (audit/seals.py); None: not written or not read


@dataclass(frozen=True)
class SeqBounds:
    """What a log's rows say about their seqs, read before any work in proportion to the log's size."""

    count: int  # rows stored
    lo: int | None  # smallest integer seq (None: no row has one)
    hi: int | None  # largest integer seq
    non_integer: Any = None  # one seq that is not an integer (SQLite keeps whatever was written), or None


@dataclass(frozen=True)
class CheckpointRow:
    log_id: str
    size: int
    root: bytes
    note: str
    edge: bytes  # concatenated compact-range hashes at `size`
    created: str


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS ledger_logs (log_id TEXT PRIMARY KEY, origin TEXT NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger_leaves (log_id TEXT NOT NULL, seq BIGINT NOT NULL, time TEXT NOT NULL, "
    "event TEXT NOT NULL, session TEXT, leaf_hash {blob} NOT NULL, record {blob} NOT NULL, seal {blob}, "
    "PRIMARY KEY (log_id, seq))",
    "CREATE TABLE IF NOT EXISTS ledger_checkpoints (log_id TEXT NOT NULL, size BIGINT NOT NULL, root {blob} NOT NULL, "
    "note TEXT NOT NULL, edge {blob} NOT NULL, created TEXT NOT NULL, PRIMARY KEY (log_id, size))",
    # one row per log, rewritten by readiness probes: a durable write that is not a record
    "CREATE TABLE IF NOT EXISTS ledger_probes (log_id TEXT PRIMARY KEY, at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ledger_hashes (log_id TEXT NOT NULL, level INTEGER NOT NULL, idx BIGINT NOT NULL, "
    "hash {blob} NOT NULL, PRIMARY KEY (log_id, level, idx))",
]

#: (level, index, hash) of a perfect subtree; see merkle.StoredNodes.
Node = tuple[int, int, bytes]


@dataclass
class LeafColumns:
    """One batch of leaves as columns (the i-th of each list is one row): what the ledger writer
    builds, without an object per row, and what PostgreSQL takes as arrays in one statement."""

    seqs: list[int]
    times: list[str]
    events: list[str]
    sessions: list[str | None]
    hashes: list[bytes]
    records: list[bytes]
    #: one per row, or empty: no row sealed (NULL), as a log written before seals existed has it
    seals: list[bytes | None] = field(default_factory=list)

    @classmethod
    def of(cls, rows: Sequence[LeafRow]) -> LeafColumns:
        return cls([r.seq for r in rows], [r.time for r in rows], [r.event for r in rows],
                   [r.session for r in rows], [r.leaf_hash for r in rows], [r.record for r in rows],
                   [r.seal for r in rows])

    def seal_column(self) -> Sequence[bytes | None]:
        """`seals`, or a NULL for each row when there are none. ValueError when their count is neither
        (PostgreSQL's `unnest` would pad the shorter array with NULLs instead of failing)."""
        if not self.seals:
            return list(repeat(None, len(self.seqs)))
        if len(self.seals) != len(self.seqs):
            raise ValueError(f"{len(self.seals)} seals for {len(self.seqs)} rows")
        return self.seals

    def __len__(self) -> int:
        return len(self.seqs)


class LedgerStore:
    """The interface; `open_ledger_store` picks the engine."""

    blob = "BLOB"

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self.conn: Any = None
        self._connect()

    # --- engine hooks -------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def check_alive(self) -> None:
        """Raise StoreError if writes here would not be durable in the configured store."""

    # --- common -------------------------------------------------------------
    def _q(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.url.kind == "postgres" else statement

    def _run(self, statement: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.conn.execute(self._q(statement), params)
        except Exception as exc:  # engine errors differ; all mean "store unavailable"
            raise StoreError(error_text(exc)) from exc

    def _tx(self, fn: Any) -> Any:
        try:
            self._begin()
            result = fn()
            self._commit()
            return result
        except Exception as exc:
            try:
                self._rollback()
            except Exception:  # noqa: BLE001 - connection may be gone; the first error matters
                pass
            if isinstance(exc, StoreError):
                raise
            raise StoreError(error_text(exc)) from exc

    def init_schema(self) -> None:
        def create() -> None:
            for statement in _SCHEMA:
                self.conn.execute(statement.format(blob=self.blob))
            if not self._has_seal_column():
                self._add_seal_column()

        self._tx(create)

    def _has_seal_column(self) -> bool:
        """Whether `ledger_leaves` has its `seal` column (a database made before seals has not)."""
        return any(r[1] == "seal" for r in self.conn.execute("PRAGMA table_info(ledger_leaves)").fetchall())

    def _add_seal_column(self) -> None:
        """Migrate a database made before seals: existing rows get NULL, which the gateway accepts only
        under a signed checkpoint (audit/seals.py). SQLite adds a column without rewriting the table,
        and `init_schema`'s BEGIN IMMEDIATE makes the check and the change one step for concurrent openers."""
        self.conn.execute(f"ALTER TABLE ledger_leaves ADD COLUMN seal {self.blob}")

    def reconnect(self) -> None:
        self.close()
        self._connect()

    def close(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        self.conn = None

    def ensure_log(self, log_id: str, origin: str, created: str) -> None:
        row = self._run("SELECT origin FROM ledger_logs WHERE log_id = ?", (log_id,)).fetchone()
        if row is None:
            self._tx(lambda: self.conn.execute(
                self._q("INSERT INTO ledger_logs (log_id, origin, created) VALUES (?, ?, ?)"), (log_id, origin, created)))
        elif row[0] != origin:
            raise StoreError(f"log {log_id!r} already exists with origin {row[0]!r}")

    def logs(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._run("SELECT log_id, origin FROM ledger_logs ORDER BY log_id").fetchall()]

    def size(self, log_id: str) -> int:
        """MAX(seq) + 1 over the integer seqs: what the log says its size is, not how many rows it holds
        (`seq_bounds` gives both, for a reader that must not trust one row's seq)."""
        row = self._run("SELECT MAX(seq) FROM ledger_leaves WHERE log_id = ?", (log_id,)).fetchone()
        top = None if row is None else row[0]
        if top is not None and type(top) is not int:  # SQLite keeps what was written: text sorts above numbers
            top = self._max_integer_seq(log_id)
        return 0 if top is None else top + 1

    def _max_integer_seq(self, log_id: str) -> int | None:
        """MAX(seq) over the rows whose seq is an integer (SQLite only can hold others)."""
        row = self._run("SELECT MAX(seq) FROM ledger_leaves WHERE log_id = ? AND typeof(seq) = 'integer'",
                        (log_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def seq_bounds(self, log_id: str) -> SeqBounds:
        """How many rows the log holds, the smallest and largest integer seq, and one seq that is not
        an integer (None: none is): a reader checks these before doing work in proportion to MAX(seq),
        which one row can set to anything. One aggregate over the log's rows."""
        row = self._run("SELECT COUNT(*), MIN(seq), MAX(seq) FROM ledger_leaves WHERE log_id = ?",
                        (log_id,)).fetchone()
        count, lo, hi = int(row[0]), row[1], row[2]
        odd = self._non_integer_seq(log_id) if count else None
        if odd is not None:  # MIN/MAX may be that value (text sorts above numbers, 5.5 between them)
            lo, hi = self._integer_seq_range(log_id)
        return SeqBounds(count, lo, hi, odd)

    def _non_integer_seq(self, log_id: str) -> Any:
        """One stored seq that is not an integer, or None (only SQLite can hold one: a BIGINT column
        elsewhere)."""
        return None

    def _integer_seq_range(self, log_id: str) -> tuple[int | None, int | None]:
        row = self._run("SELECT MIN(seq), MAX(seq) FROM ledger_leaves WHERE log_id = ? AND typeof(seq) = 'integer'",
                        (log_id,)).fetchone()
        return (None, None) if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def next_seq(self, log_id: str, start: int) -> int | None:
        """The smallest integer seq at or after `start` (one index lookup), or None."""
        row = self._run("SELECT MIN(seq) FROM ledger_leaves WHERE log_id = ? AND seq >= ?", (log_id, start)).fetchone()
        return None if row is None or type(row[0]) is not int else row[0]

    def count(self, log_id: str) -> int:
        return int(self._run("SELECT COUNT(*) FROM ledger_leaves WHERE log_id = ?", (log_id,)).fetchone()[0])

    def append_batch(self, log_id: str, rows: Sequence[LeafRow], nodes: Sequence[Node] = ()) -> None:
        """All rows, and the interior hashes they complete, in one transaction, one durable commit."""
        self.append_columns(log_id, LeafColumns.of(rows), nodes)

    def append_columns(self, log_id: str, leaves: LeafColumns, nodes: Sequence[Node] = ()) -> None:
        """`append_batch` for leaves given as columns (the ledger writer's form)."""
        self.check_alive()
        c = leaves

        def write() -> None:  # rows built inside the transaction's error handling: any failure is a StoreError
            self._executemany(self._q(_INSERT_LEAF), list(zip(
                repeat(log_id, len(c.seqs)), c.seqs, c.times, c.events, c.sessions, c.hashes, c.records,
                c.seal_column(), strict=True)))
            if nodes:
                self._executemany(self._q(_INSERT_NODE), [(log_id, lv, ix, h) for lv, ix, h in nodes])

        self._tx(write)

    # --- stored interior hashes (ledger_hashes) -----------------------------
    def add_nodes(self, log_id: str, nodes: Sequence[Node]) -> None:
        """Backfill: store interior hashes, keeping any already there (one commit)."""
        self.check_alive()
        stmt = self._q(_INSERT_NODE + " ON CONFLICT DO NOTHING")
        self._tx(lambda: self._executemany(stmt, [(log_id, lv, ix, h) for lv, ix, h in nodes]))

    def node_hashes(self, log_id: str, level: int, indices: Sequence[int]) -> dict[int, bytes]:
        """{index: hash} of the perfect subtrees at `level` (0: leaf hashes) that are stored."""
        out: dict[int, bytes] = {}
        for i in range(0, len(indices), 500):
            part = list(indices[i:i + 500])
            marks = ", ".join("?" * len(part))
            if level == 0:
                q = f"SELECT seq, leaf_hash FROM ledger_leaves WHERE log_id = ? AND seq IN ({marks})"
                got = self._run(q, (log_id, *part)).fetchall()
            else:
                q = f"SELECT idx, hash FROM ledger_hashes WHERE log_id = ? AND level = ? AND idx IN ({marks})"
                got = self._run(q, (log_id, level, *part)).fetchall()
            out.update((int(r[0]), bytes(r[1])) for r in got)
        return out

    def node_hashes_many(self, log_id: str, wants: Mapping[int, Sequence[int]]) -> dict[int, dict[int, bytes]]:
        """`node_hashes` for several levels in one statement (a proof or an open: one round trip)."""
        parts: list[str] = []
        params: list[Any] = []
        for level, indices in wants.items():
            if not indices:
                continue
            marks = ", ".join("?" * len(indices))
            if level == 0:
                parts.append(f"SELECT 0, seq, leaf_hash FROM ledger_leaves WHERE log_id = ? AND seq IN ({marks})")
                params += [log_id, *indices]
            else:
                parts.append(f"SELECT level, idx, hash FROM ledger_hashes WHERE log_id = ? AND level = ? "
                             f"AND idx IN ({marks})")
                params += [log_id, level, *indices]
        out: dict[int, dict[int, bytes]] = {level: {} for level in wants}
        if parts:
            for lv, ix, h in self._run(" UNION ALL ".join(parts), params).fetchall():
                out[int(lv)][int(ix)] = bytes(h)
        return out

    def node_range(self, log_id: str, level: int, start: int, end: int) -> list[tuple[int, bytes]]:
        """(index, hash) of the stored subtrees at `level` with start <= index < end, in order."""
        if level == 0:
            q = "SELECT seq, leaf_hash FROM ledger_leaves WHERE log_id = ? AND seq >= ? AND seq < ? ORDER BY seq"
            got = self._run(q, (log_id, start, end)).fetchall()
        else:
            q = ("SELECT idx, hash FROM ledger_hashes WHERE log_id = ? AND level = ? AND idx >= ? AND idx < ? "
                 "ORDER BY idx")
            got = self._run(q, (log_id, level, start, end)).fetchall()
        return [(int(r[0]), bytes(r[1])) for r in got]

    def last_node(self, log_id: str, level: int) -> int | None:
        """The largest stored index at `level` (> 0), or None."""
        row = self._run("SELECT MAX(idx) FROM ledger_hashes WHERE log_id = ? AND level = ?", (log_id, level)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def node_bounds(self, log_id: str, level: int) -> tuple[int, int] | None:
        """The smallest and largest stored index at `level`, or None when it holds none."""
        row = self._run("SELECT MIN(idx), MAX(idx) FROM ledger_hashes WHERE log_id = ? AND level = ?",
                        (log_id, level)).fetchone()
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def node_levels(self, log_id: str) -> list[int]:
        """The levels that hold stored hashes for this log."""
        return sorted(int(r[0]) for r in self._run(
            "SELECT DISTINCT level FROM ledger_hashes WHERE log_id = ?", (log_id,)).fetchall())

    def iter_nodes(self, log_id: str, level: int, chunk: int = 20000,
                   start: int = 0) -> Iterator[list[tuple[int, bytes]]]:
        """(index, hash) at `level` from index `start` in index order, chunked; gaps are visible to the caller."""
        last = start - 1
        while True:
            rows = self._run("SELECT idx, hash FROM ledger_hashes WHERE log_id = ? AND level = ? AND idx > ? "
                             "ORDER BY idx LIMIT ?", (log_id, level, last, chunk)).fetchall()
            if not rows:
                return
            yield [(int(r[0]), bytes(r[1])) for r in rows]
            last = int(rows[-1][0])

    def _executemany(self, stmt: str, params: list[tuple[Any, ...]]) -> None:
        self.conn.executemany(stmt, params)

    def leaf_hashes(self, log_id: str, start: int, end: int) -> list[bytes]:
        rows = self._run("SELECT leaf_hash FROM ledger_leaves WHERE log_id = ? AND seq >= ? AND seq < ? ORDER BY seq",
                         (log_id, start, end)).fetchall()
        return [bytes(r[0]) for r in rows]

    def iter_leaf_hashes(self, log_id: str, start: int = 0, chunk: int = 50000) -> Iterator[list[bytes]]:
        while True:
            got = self.leaf_hashes(log_id, start, start + chunk)
            if not got:
                return
            yield got
            start += len(got)

    def iter_leaves(self, log_id: str, start: int = 0, end: int | None = None,
                    chunk: int = 20000) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """(seq, leaf_hash, record) in seq order, chunked; gaps are visible to the caller."""
        last = start - 1
        stop = end if end is not None else 1 << 62
        while True:
            rows = self._run("SELECT seq, leaf_hash, record FROM ledger_leaves WHERE log_id = ? AND seq > ? AND seq < ? "
                             "ORDER BY seq LIMIT ?", (log_id, last, stop, chunk)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def iter_sealed(self, log_id: str, start: int, chunk: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """(seq, leaf_hash, record, seal, event) of the rows at or after `start`, in seq order, chunked:
        what the start-up check reads of the records no signed checkpoint covers (audit/seals.py).
        Rows are as stored (a seq of another type, a NULL seal): the caller judges them."""
        last = start - 1
        while True:
            rows = self._run("SELECT seq, leaf_hash, record, seal, event FROM ledger_leaves WHERE log_id = ? "
                             "AND seq > ? ORDER BY seq LIMIT ?", (log_id, last, chunk)).fetchall()
            if not rows:
                return
            yield rows
            if type(rows[-1][0]) is not int:  # SQLite: text sorts after every number, so nothing follows
                return
            last = rows[-1][0]

    def add_seals(self, log_id: str, seals: Sequence[tuple[int, bytes, bytes]]) -> int:
        """Seal rows that have no seal, given as (seq, leaf_hash, seal), in one transaction; a row whose
        leaf hash is no longer the one given (changed since it was checked) is left alone. Returns how
        many rows were sealed. For `audit seal-tail` only: the gateway seals every row it writes."""
        self.check_alive()
        stmt = self._q("UPDATE ledger_leaves SET seal = ? WHERE log_id = ? AND seq = ? AND leaf_hash = ? "
                       "AND seal IS NULL")

        def write() -> int:
            done = 0
            for seq, leaf_hash, seal in seals:
                done += self.conn.execute(stmt, (seal, log_id, seq, leaf_hash)).rowcount
            return done

        done: int = self._tx(write)
        return done

    def iter_indexed_leaves(self, log_id: str, chunk: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
        """(seq, leaf_hash, record, time, event, session) in seq order, chunked: what `verify` needs to
        check that the index columns say what the hashed record says."""
        last = -1
        while True:
            rows = self._run("SELECT seq, leaf_hash, record, time, event, session FROM ledger_leaves "
                             "WHERE log_id = ? AND seq > ? ORDER BY seq LIMIT ?", (log_id, last, chunk)).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def iter_indexed_range(self, log_id: str, start: int, end: int,
                           chunk: int = 1024) -> Generator[list[tuple[Any, ...]], None, None]:
        """`iter_indexed_leaves` for start <= seq < end: one segment of a parallel `verify`.

        One statement for the whole range, read `chunk` rows at a time: `verify` reads every row
        once, so the cost that matters is per row (Python objects made from its columns), not
        per statement; paging with LIMIT would only add statements and sorts."""
        cur = self._read_cursor("SELECT seq, leaf_hash, record, time, event, session FROM ledger_leaves "
                                "WHERE log_id = ? AND seq >= ? AND seq < ? ORDER BY seq", (log_id, start, end))
        try:
            while True:
                try:
                    rows = cur.fetchmany(chunk)
                except Exception as exc:  # engine errors differ; all mean "store unavailable"
                    raise StoreError(error_text(exc)) from exc
                if not rows:
                    return
                yield rows
        finally:
            cur.close()

    def _read_cursor(self, statement: str, params: Sequence[Any]) -> Any:
        """A cursor that has run one SELECT of many rows."""
        return self._run(statement, params)

    def seen_log_ids(self) -> set[str]:
        """Every log id any ledger table mentions (a log whose `ledger_logs` row is gone still shows here)."""
        got = self._run("SELECT log_id FROM ledger_logs UNION SELECT DISTINCT log_id FROM ledger_leaves "
                        "UNION SELECT DISTINCT log_id FROM ledger_checkpoints").fetchall()
        return {r[0] for r in got}

    def rows(self, log_id: str, start: int, end: int) -> list[LeafRow]:
        got = self._run("SELECT seq, time, event, session, leaf_hash, record FROM ledger_leaves "
                        "WHERE log_id = ? AND seq >= ? AND seq < ? ORDER BY seq", (log_id, start, end)).fetchall()
        return [LeafRow(int(r[0]), r[1], r[2], r[3], bytes(r[4]), bytes(r[5])) for r in got]

    def add_checkpoint(self, row: CheckpointRow) -> None:
        self.check_alive()
        self._tx(lambda: self.conn.execute(
            self._q("INSERT INTO ledger_checkpoints (log_id, size, root, note, edge, created) VALUES (?, ?, ?, ?, ?, ?)"),
            (row.log_id, row.size, row.root, row.note, row.edge, row.created)))

    def probe(self, log_id: str, at: str) -> None:
        """One small durable write (a commit that must reach the disk or the server), so a store that
        cannot write (a full disk, a read-only or replaced file, a lost server) is found while idle."""
        self.check_alive()
        self._tx(lambda: self.conn.execute(
            self._q("INSERT INTO ledger_probes (log_id, at) VALUES (?, ?) "
                    "ON CONFLICT (log_id) DO UPDATE SET at = excluded.at"), (log_id, at)))

    def checkpoints(self, log_id: str) -> list[CheckpointRow]:
        got = self._run("SELECT log_id, size, root, note, edge, created FROM ledger_checkpoints WHERE log_id = ? "
                        "ORDER BY size", (log_id,)).fetchall()
        return [CheckpointRow(r[0], _whole_size(r[1]), bytes(r[2]), r[3], bytes(r[4]), r[5]) for r in got]

    def latest_checkpoint(self, log_id: str) -> CheckpointRow | None:
        r = self._run("SELECT log_id, size, root, note, edge, created FROM ledger_checkpoints WHERE log_id = ? "
                      "ORDER BY size DESC LIMIT 1", (log_id,)).fetchone()
        return None if r is None else CheckpointRow(r[0], _whole_size(r[1]), bytes(r[2]), r[3], bytes(r[4]), r[5])


def _whole_size(value: Any) -> int:
    """A checkpoint row's size as stored: a whole number, or ValueError naming what the column holds
    (SQLite keeps a REAL a DBA writes; `int(14.5)` read it as 14, and that row verified as size 14)."""
    if type(value) is int:
        return value
    raise ValueError(f"a checkpoint row's size is {repr(value)[:40]}, not a whole number")


_INSERT_NODE = "INSERT INTO ledger_hashes (log_id, level, idx, hash) VALUES (?, ?, ?, ?)"
_INSERT_LEAF = ("INSERT INTO ledger_leaves (log_id, seq, time, event, session, leaf_hash, record, seal) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
#: the most rows one SQLite INSERT takes (8 parameters each), and fewer where the library allows fewer
#: parameters a statement (999 before SQLite 3.32; the connection's limit is read per batch)
_ONE_STATEMENT_ROWS = 1024
_LEAF_PARAMS = 8


@functools.lru_cache(maxsize=64)
def _multi_row_insert(rows: int) -> str:
    return _INSERT_LEAF + ", (?, ?, ?, ?, ?, ?, ?, ?)" * (rows - 1)


@dataclass(frozen=True)
class _PgStatement:
    """A statement the PostgreSQL store prepares on each connection it opens, by name."""

    name: bytes
    sql: bytes
    types: tuple[int, ...]


# PostgreSQL: a batch in one statement, its columns as arrays, prepared once per connection and sent
# with binary parameters straight through libpq (see PostgresLedgerStore.append_columns). The parameter
# types are given at PREPARE, so the server decodes each binary array with its own type's receive function.
_PG_LEAVES = (b"INSERT INTO ledger_leaves (log_id, seq, time, event, session, leaf_hash, record, seal) "
              b"SELECT $%d, * FROM unnest($%d, $%d, $%d, $%d, $%d, $%d, $%d)")
_TEXT, _INT4S, _INT8S, _TEXTS, _BYTEAS = 25, 1007, 1016, 1009, 1001
_PG_APPEND = _PgStatement(b"lg_append_leaves", _PG_LEAVES % tuple(range(1, 9)),
                          (_TEXT, _INT8S, _TEXTS, _TEXTS, _TEXTS, _BYTEAS, _BYTEAS, _BYTEAS))
_PG_APPEND_WITH_NODES = _PgStatement(
    b"lg_append_leaves_nodes",
    b"WITH nodes AS (INSERT INTO ledger_hashes (log_id, level, idx, hash) SELECT $1, * FROM unnest($2, $3, $4)) "
    + _PG_LEAVES % tuple(range(5, 13)),
    (_TEXT, _INT4S, _INT8S, _BYTEAS, _TEXT, _INT8S, _TEXTS, _TEXTS, _TEXTS, _BYTEAS, _BYTEAS, _BYTEAS))


class SQLiteLedgerStore(LedgerStore):
    """WAL + synchronous=FULL (set by db.connect): a COMMIT is durable when it returns."""

    blob = "BLOB"

    def _connect(self) -> None:
        path = Path(self.url.target)
        if self.conn is None and getattr(self, "_identity", None) is not None and not path.exists():
            raise StoreError(f"database file {path} is gone")
        try:
            self.conn = connect(self.url)
            st = os.stat(path)
        except Exception as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        if getattr(self, "_identity", None) is None:
            self._identity = (st.st_dev, st.st_ino)
        elif self._identity != (st.st_dev, st.st_ino):
            raise StoreError(f"database file {path} was replaced")

    def check_alive(self) -> None:
        # An open SQLite handle keeps writing to a file that was deleted or
        # replaced; such writes are not durable where anyone will look.
        try:
            st = os.stat(self.url.target)
        except OSError as exc:
            raise StoreError(f"database file {self.url.target} is gone: {exc.strerror}") from exc
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(f"database file {self.url.target} was replaced")
        if self.conn is None:
            raise StoreError("not connected")

    def append_columns(self, log_id: str, leaves: LeafColumns, nodes: Sequence[Node] = ()) -> None:
        """A batch that completes no stored interior hash (one completes every 16 records, so most
        batches do not) as one multi-row INSERT
        in autocommit mode: SQLite makes a single statement atomic and, at synchronous=FULL, durable
        before the call returns, so the whole commit is one call into SQLite. The writer thread then
        lets go of the interpreter lock for one SQLite call per batch instead of one per statement
        (BEGIN, each row, COMMIT), and under load every time it takes the lock back it waits for the
        event loop to let go of it.
        Batches with interior hashes, or more rows than one statement may bind, keep the transaction."""
        n = len(leaves.seqs)
        bindable = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if self.conn is not None else 0
        if nodes or not 0 < n <= min(_ONE_STATEMENT_ROWS, bindable // _LEAF_PARAMS):  # (no connection: refused there)
            super().append_columns(log_id, leaves, nodes)
            return
        self.check_alive()
        c = leaves
        params: list[Any] = []
        try:  # rows built inside the error handling: columns of unequal length are a StoreError too
            for row in zip(repeat(log_id, n), c.seqs, c.times, c.events, c.sessions, c.hashes, c.records,
                           c.seal_column(), strict=True):
                params.extend(row)
            if self.conn.in_transaction:  # never the case for the writer; a transaction would defer the commit
                raise StoreError("a transaction is open on the ledger's connection")
            self.conn.execute(_multi_row_insert(n), params)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(error_text(exc)) from exc

    def _non_integer_seq(self, log_id: str) -> Any:
        # a column's declared type is only an affinity here: 'abc', 5.5 or a blob stay what they were
        row = self._run("SELECT seq FROM ledger_leaves WHERE log_id = ? AND typeof(seq) <> 'integer' LIMIT 1",
                        (log_id,)).fetchone()
        return None if row is None else row[0]

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


class PostgresLedgerStore(LedgerStore):
    """psycopg 3 in autocommit mode with explicit transactions; short timeouts so failures are prompt."""

    blob = "BYTEA"

    def _connect(self) -> None:
        import psycopg

        try:
            self.conn = psycopg.connect(self.url.target, autocommit=True, connect_timeout=5,
                                        keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
            self.conn.execute("SET statement_timeout = 10000")
            self._prepared: set[bytes] = set()  # what this connection's server session has prepared
        except Exception as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {error_text(exc)}") from exc

    def check_alive(self) -> None:
        if self.conn is None or self.conn.closed:
            raise StoreError("not connected")

    def _has_seal_column(self) -> bool:
        # looked up first so that an open of a migrated database takes no lock on the table: the ALTER
        # below waits for every reader of ledger_leaves and holds up every writer while it waits
        return self.conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('ledger_leaves') "
                                 "AND attname = 'seal' AND NOT attisdropped").fetchone() is not None

    def _add_seal_column(self) -> None:
        # IF NOT EXISTS: two replicas migrating at once both get here; the second waits for the first's
        # lock on the table, then finds the column and does nothing
        self.conn.execute("ALTER TABLE ledger_leaves ADD COLUMN IF NOT EXISTS seal BYTEA")

    def _begin(self) -> None:
        self.conn.execute("BEGIN")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.execute("ROLLBACK")

    def _executemany(self, stmt: str, params: list[tuple[Any, ...]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(stmt, params)

    def _read_cursor(self, statement: str, params: Sequence[Any]) -> Any:
        """Binary results: `bytea` arrives as its bytes, not as hex text to parse (half the bytes on
        the wire; half the client's CPU to fetch a ledger row, and less of the server's)."""
        try:
            cur = self.conn.cursor(binary=True)
            cur.execute(self._q(statement), params)
            return cur
        except Exception as exc:
            raise StoreError(error_text(exc)) from exc

    def append_columns(self, log_id: str, leaves: LeafColumns, nodes: Sequence[Node] = ()) -> None:
        """The batch as one statement, so one round trip and one transaction: the leaves inserted from
        arrays (`unnest`), the interior hashes by a data-modifying WITH in the same statement. The
        connection is in autocommit mode, so the statement commits when it ends, all or nothing, and
        is durable when this returns (synchronous_commit as the server has it, on by default). An
        error surfaces as StoreError; nothing of the batch is written.

        The arrays are packed here in PostgreSQL's binary array format (`_pg_blobs` and friends), and
        the prepared statement goes straight to libpq (`PQexecPrepared`, which lets go of the
        interpreter lock while it waits). Measured per row in 64-row batches, CPU of this process + of
        the server process (the same two cores here): `executemany` in a BEGIN/COMMIT 12 + 10 µs and
        four round trips; psycopg's own list adaptation for `unnest` 14 + 10 µs (it adapts every
        item in Python); the transaction as one query of literals 4 + 16 µs (the server parses it);
        binary COPY 5 + 7 µs and four round trips (COPY waits for the server's go-ahead and cannot
        be pipelined); this 2.7 + 6 µs, one round trip, about half COPY's wall time per batch.
        Through psycopg's `execute` the whole call took about twice the CPU it takes now
        (`bench/bench_store_append.py`: 0.38-0.44x for one row, 0.53-0.58x for sixteen), and a
        proxied call waits for it twice."""
        self.check_alive()
        c = leaves
        try:  # packing too: a text the connection's encoding cannot carry fails the batch like any error
            enc = self.conn.info.encoding
            log = log_id.encode(enc)
            params = [log, _pg_int8s(c.seqs), _pg_texts(c.times, enc), _pg_texts(c.events, enc),
                      _pg_texts(c.sessions, enc), _pg_blobs(c.hashes), _pg_blobs(c.records),
                      _pg_blobs(c.seal_column())]
            if nodes:
                params[:0] = [log, _pg_int4s([n[0] for n in nodes]), _pg_int8s([n[1] for n in nodes]),
                              _pg_blobs([n[2] for n in nodes])]
        except Exception as exc:
            raise StoreError(error_text(exc)) from exc
        self._exec_prepared(_PG_APPEND_WITH_NODES if nodes else _PG_APPEND, params)

    def _exec_prepared(self, statement: _PgStatement, params: list[bytes]) -> None:
        """Run `statement` with binary parameters, preparing it first on a connection that has not.
        A server session that lost it (a pooler that hands out another one) gets it prepared again and
        the batch sent again: a statement that names no prepared statement did nothing."""
        from psycopg import pq

        pgconn = self.conn.pgconn
        for attempt in (1, 2):
            try:
                if statement.name not in self._prepared:
                    _pg_check(pgconn.prepare(statement.name, statement.sql, statement.types), pgconn)
                    self._prepared.add(statement.name)
                res = pgconn.exec_prepared(statement.name, params, [1] * len(params))
            except StoreError:
                raise
            except Exception as exc:  # the connection itself failed (psycopg raises for a NULL result)
                raise StoreError(error_text(exc)) from exc
            if attempt == 1 and res.status == pq.ExecStatus.FATAL_ERROR and _pg_state(res) == "26000":
                self._prepared.discard(statement.name)  # invalid_sql_statement_name: prepare, then once more
                continue
            _pg_check(res, pgconn)
            return


def _pg_state(res: Any) -> str:
    from psycopg import pq

    return (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii", "replace")


def _pg_check(res: Any, pgconn: Any) -> None:
    """A result that is not success as StoreError, with the server's primary message and SQLSTATE only:
    its DETAIL can quote values of the batch, and record bytes stay out of logs."""
    from psycopg import pq

    if res.status == pq.ExecStatus.COMMAND_OK:
        return
    primary = res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
    message = (primary or pgconn.error_message or b"no answer from the server").decode("utf-8", "replace").strip()
    state = _pg_state(res)
    raise StoreError(f"PostgreSQL: {message}" + (f" (SQLSTATE {state})" if state else ""))


# binary array: ndim, has-nulls flag, element type, then (length, lower bound) of the one dimension,
# then each element as its byte length (-1: NULL) and its bytes
_ARRAY_HEAD = struct.Struct("!iiIii")
_LEN = struct.Struct("!i")
_LEN_INT8 = struct.Struct("!iq")
_LEN_INT4 = struct.Struct("!ii")
_NULL = _LEN.pack(-1)


def _pg_blobs(items: Sequence[bytes | None], elem_oid: int = 17) -> bytes:
    parts = [_ARRAY_HEAD.pack(1, 1 if None in items else 0, elem_oid, len(items), 1)]
    pack, add = _LEN.pack, parts.append
    for x in items:
        if x is None:
            add(_NULL)
        else:
            add(pack(len(x)))
            add(x)
    return b"".join(parts)


def _pg_texts(items: Sequence[str | None], encoding: str) -> bytes:
    return _pg_blobs([None if x is None else x.encode(encoding) for x in items], 25)


def _pg_int8s(items: Sequence[int]) -> bytes:
    pack = _LEN_INT8.pack
    return _ARRAY_HEAD.pack(1, 0, 20, len(items), 1) + b"".join([pack(8, x) for x in items])


def _pg_int4s(items: Sequence[int]) -> bytes:
    pack = _LEN_INT4.pack
    return _ARRAY_HEAD.pack(1, 0, 23, len(items), 1) + b"".join([pack(4, x) for x in items])


def open_ledger_store(url: str | StoreURL, base_dir: Path | None = None) -> LedgerStore:
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url, base_dir)
    if parsed.kind == "sqlite":
        return SQLiteLedgerStore(parsed)
    return PostgresLedgerStore(parsed)


def open_existing_ledger_store(url: str | StoreURL, base_dir: Path | None = None) -> LedgerStore:
    """For commands that only read a ledger (`audit verify`, exports, replays): a SQLite path with no
    database is a mistake to name, not a place to create an empty one (and its folders) and then report
    that it holds no tables."""
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url, base_dir)
    try:
        absent = store_absence(parsed, ("ledger_logs",))
    except StoreUnreachable as exc:
        raise StoreError(str(exc)) from None
    if absent is not None:
        raise StoreError(no_store_message("ledger", parsed, absent))
    return open_ledger_store(parsed)


def no_store_message(what: str, url: StoreURL, why: str) -> str:
    """One line for a reader that found nothing where the config points."""
    return f"no {what} at {shown_url(url)} ({why}); check `storage` in the config"


__all__ = ["CheckpointRow", "LeafColumns", "LeafRow", "LedgerStore", "PostgresLedgerStore", "SQLiteLedgerStore",
           "SeqBounds", "StoreError", "no_store_message", "open_existing_ledger_store", "open_ledger_store"]
