"""Approvals in the one store (SQLite or PostgreSQL), same SQL on both, plus the PostgreSQL bus.

A row is the approval's JSON document (masked preview only, never raw
arguments) and the columns the queries need. Every change is a conditional
UPDATE on the row's `version` (or, to run a granted call, on `status =
'approved'`), and `rowcount` says who won: two replicas, or twenty tasks of
one, can never both move the same approval. A partial unique index keeps one
pending approval per binding.

On PostgreSQL each change is followed by `pg_notify(CHANNEL, id)`; a
`Listener` on every replica hears it and wakes the calls held there. SQLite is
one gateway process (the CLI's decisions are picked up by the service's poll).
Calls block; async callers run them in a thread.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import threading
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from ledgergate.store.db import StoreURL, connect, error_text, sql
from ledgergate.wire import jsonrpc

log = logging.getLogger("ledgergate.store.approvals")

T = TypeVar("T")


class StoredApproval(Protocol):
    """What the store reads of an approval to index it; the approvals model provides it (a frozen
    dataclass), and the store hands back whatever its `decode` makes of a row — it keeps rows only."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def binding_key(self) -> str: ...
    @property
    def principal_key(self) -> str: ...
    @property
    def created(self) -> float: ...
    @property
    def expires(self) -> float: ...
    @property
    def granted_until(self) -> float | None: ...

    def to_doc(self) -> dict[str, Any]: ...


Approval = TypeVar("Approval", bound=StoredApproval)
CHANNEL = "ledgergate_approvals"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY,
        binding_key TEXT NOT NULL,
        status TEXT NOT NULL,
        version BIGINT NOT NULL,
        principal_key TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        granted_until DOUBLE PRECISION,
        doc TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created)",
    "CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (binding_key, status)",
    "CREATE UNIQUE INDEX IF NOT EXISTS approvals_one_pending ON approvals (binding_key) WHERE status = 'pending'",
]
_COLS = "doc, version"


class ApprovalStoreError(Exception):
    """The store could not do what was asked (unreachable, read-only, gone)."""


class DuplicatePending(Exception):
    """A pending approval with the same binding exists already."""


def _doc(approval: StoredApproval) -> str:
    """The approval as stored: its arguments are the caller's, and JSON lets them hold integers beyond
    64 bits, which orjson cannot write (a 503 "store unavailable" once, for a valid call); `jsonrpc.dumps`
    writes every number exactly, and `jsonrpc.parse` reads it back the same."""
    return jsonrpc.dumps(approval.to_doc()).decode()


class ApprovalStore(Generic[Approval]):
    """Table access over one connection, serialised by a lock, reopened after a failure."""

    def __init__(self, url: StoreURL, decode: Callable[[Mapping[str, Any], int], Approval]) -> None:
        self.url = url
        self._decode = decode
        self._conn: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str | StoreURL, decode: Callable[[Mapping[str, Any], int], Approval],
                 base_dir: Any = None) -> ApprovalStore[Approval]:
        return cls(url if isinstance(url, StoreURL) else StoreURL.parse(url, base_dir), decode)

    def _row(self, row: Any) -> Approval:
        return self._decode(jsonrpc.parse(row[0]), int(row[1]))

    @property
    def is_postgres(self) -> bool:
        return self.url.kind == "postgres"

    def _run(self, fn: Callable[[Any], T]) -> T:
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                        self._ensure_schema(self._conn)
                    return fn(self._conn)
                except (DuplicatePending, ApprovalStoreError):
                    raise
                except Exception as exc:
                    # A dropped PostgreSQL connection: reopen once, then give up.
                    broken = self.is_postgres and (self._conn is None or getattr(self._conn, "closed", False))
                    if attempt == 0 and broken:
                        self._conn = None
                        continue
                    raise ApprovalStoreError(error_text(exc)) from exc
            raise AssertionError("unreachable")

    def _connect(self) -> Any:
        if not self.is_postgres:
            return connect(self.url)
        import psycopg

        # Short timeouts: a decision against an unreachable database fails promptly (closed), not after minutes.
        conn = psycopg.connect(self.url.target, autocommit=True, connect_timeout=5, keepalives=1,
                               keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
                               application_name="ledgergate-approvals")
        conn.execute("SET statement_timeout = 10000")
        return conn

    def _ensure_schema(self, conn: Any) -> None:
        for attempt in (0, 1, 2):
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                return
            except Exception:
                # Two processes creating the table at once on PostgreSQL: the loser retries.
                if attempt == 2:
                    raise

    def open(self) -> None:
        """Connect and create the table if missing."""
        self._run(lambda conn: None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
                finally:
                    self._conn = None

    def _notify(self, conn: Any, approval_id: str) -> None:
        if self.is_postgres:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, approval_id))

    # ── writes ───────────────────────────────────────────────────────────────
    def insert(self, approval: Approval) -> Approval:
        """Store a new pending approval; DuplicatePending if its binding already has one."""
        def op(conn: Any) -> Approval:
            try:
                conn.execute(
                    sql(self.url, "INSERT INTO approvals (id, binding_key, status, version, principal_key, created, "
                                  "expires, granted_until, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    (approval.id, approval.binding_key, approval.status, 1, approval.principal_key,
                     approval.created, approval.expires, approval.granted_until, _doc(approval)))
            except Exception as exc:
                if _is_unique_violation(exc):
                    raise DuplicatePending(approval.binding_key) from exc
                raise
            self._notify(conn, approval.id)
            return _replace_version(approval, 1)
        return self._run(op)

    def update(self, approval: Approval, expected_version: int) -> Approval | None:
        """Write `approval` if the row is still at `expected_version`; the stored one, or None if it moved."""
        def op(conn: Any) -> Approval | None:
            cur = conn.execute(
                sql(self.url, "UPDATE approvals SET status = ?, version = ?, granted_until = ?, doc = ? "
                              "WHERE id = ? AND version = ?"),
                (approval.status, expected_version + 1, approval.granted_until, _doc(approval), approval.id,
                 expected_version))
            if cur.rowcount != 1:
                return None
            self._notify(conn, approval.id)
            return _replace_version(approval, expected_version + 1)
        return self._run(op)

    def claim(self, binding_key: str, now: float, make: Callable[[Approval], Approval]) -> Approval | None:
        """Approved -> executed for one approval of this binding still in its window; None if there is none.

        `make` turns the approved approval into the executed one. The UPDATE is
        conditional on `status = 'approved'`, so of any number of concurrent
        claimers (threads, processes, replicas) exactly one gets a row.
        """
        def op(conn: Any) -> Approval | None:
            rows = conn.execute(
                sql(self.url, f"SELECT {_COLS} FROM approvals WHERE binding_key = ? AND status = 'approved' "
                              "AND granted_until > ? ORDER BY created"), (binding_key, now)).fetchall()
            for row in rows:
                current = self._row(row)
                done = make(current)
                cur = conn.execute(
                    sql(self.url, "UPDATE approvals SET status = 'executed', version = version + 1, doc = ? "
                                  "WHERE id = ? AND status = 'approved' AND granted_until > ?"),
                    (_doc(done), current.id, now))
                if cur.rowcount == 1:
                    self._notify(conn, current.id)
                    return _replace_version(done, current.version + 1)
            return None
        return self._run(op)

    def unclaim(self, executed: Approval, approved: Approval) -> bool:
        """Put an executed approval back to approved (its record could not be written): fail closed, retry later."""
        def op(conn: Any) -> bool:
            cur = conn.execute(
                sql(self.url, "UPDATE approvals SET status = 'approved', version = version + 1, doc = ? "
                              "WHERE id = ? AND status = 'executed' AND version = ?"),
                (_doc(approved), executed.id, executed.version))
            return bool(cur.rowcount == 1)
        return self._run(op)

    # ── reads ────────────────────────────────────────────────────────────────
    def get(self, approval_id: str) -> Approval | None:
        def op(conn: Any) -> Approval | None:
            row = conn.execute(sql(self.url, f"SELECT {_COLS} FROM approvals WHERE id = ?"),
                               (approval_id,)).fetchone()
            return None if row is None else self._row(row)
        return self._run(op)

    def pending_for(self, binding_key: str) -> Approval | None:
        def op(conn: Any) -> Approval | None:
            row = conn.execute(
                sql(self.url, f"SELECT {_COLS} FROM approvals WHERE binding_key = ? AND status = 'pending'"),
                (binding_key,)).fetchone()
            return None if row is None else self._row(row)
        return self._run(op)

    def list(self, status: str | None = None, limit: int = 100, principal_key: str | None = None,
             after: tuple[float, str] | None = None) -> list[Approval]:
        """Newest first (created, then id): a total order, so `after` (the (created, id) of the last
        row a caller saw) resumes exactly where that page ended, whatever was added since."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if principal_key is not None:
            where.append("principal_key = ?")
            params.append(principal_key)
        if after is not None:
            where.append("(created < ? OR (created = ? AND id > ?))")
            params.extend((after[0], after[0], after[1]))
        clause = f"WHERE {' AND '.join(where)} " if where else ""

        def op(conn: Any) -> builtins.list[Approval]:
            rows = conn.execute(sql(self.url, f"SELECT {_COLS} FROM approvals {clause}ORDER BY created DESC, id "
                                              "LIMIT ?"), (*params, limit)).fetchall()
            return [self._row(r) for r in rows]
        return self._run(op)

    def count(self, status: str) -> int:
        """How many approvals are in `status` (the pending gauge, read at scrape time)."""
        def op(conn: Any) -> int:
            return int(conn.execute(sql(self.url, "SELECT count(*) FROM approvals WHERE status = ?"),
                                    (status,)).fetchone()[0])
        return self._run(op)

    def latest_for(self, binding_key: str) -> Approval | None:
        """The newest approval of this exact call, whatever its state."""
        def op(conn: Any) -> Approval | None:
            row = conn.execute(
                sql(self.url, f"SELECT {_COLS} FROM approvals WHERE binding_key = ? ORDER BY created DESC, id "
                              "LIMIT 1"), (binding_key,)).fetchone()
            return None if row is None else self._row(row)
        return self._run(op)

    def due(self, now: float, limit: int = 500) -> builtins.list[Approval]:
        """Pending approvals whose expiry has passed, oldest first."""
        def op(conn: Any) -> builtins.list[Approval]:
            rows = conn.execute(sql(self.url, f"SELECT {_COLS} FROM approvals WHERE status = 'pending' AND "
                                              "expires <= ? ORDER BY expires LIMIT ?"), (now, limit)).fetchall()
            return [self._row(r) for r in rows]
        return self._run(op)

    def statuses(self, ids: Iterable[str]) -> dict[str, str]:
        """Status by id, for many ids in a few queries (ids not stored are absent)."""
        wanted = list(ids)

        def op(conn: Any) -> dict[str, str]:
            out: dict[str, str] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = conn.execute(sql(self.url, f"SELECT id, status FROM approvals WHERE id IN ({marks})"),
                                    chunk).fetchall()
                out.update((r[0], r[1]) for r in rows)
            return out
        return self._run(op) if wanted else {}


def _replace_version(approval: Approval, version: int) -> Approval:
    return dataclasses.replace(approval, version=version)  # type: ignore[type-var]


def _is_unique_violation(exc: Exception) -> bool:
    import sqlite3

    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc).upper()
    return getattr(exc, "sqlstate", None) == "23505"


class Listener:
    """LISTEN on the approvals channel of a PostgreSQL store; calls `on_id(approval_id)` per notification.

    Reconnects with backoff after a failure and then calls `on_reconnect()`, so
    waiters re-read what they may have missed while it was away.
    """

    def __init__(self, url: StoreURL, on_id: Callable[[str], None], on_reconnect: Callable[[], None]) -> None:
        self.url = url
        self._on_id = on_id
        self._on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.reconnects = 0

    async def start(self, ready_timeout: float = 5.0) -> bool:
        """Start listening; True once LISTEN is in place (False: still trying in the background)."""
        self._task = asyncio.create_task(self._run(), name="approvals-listener")
        try:
            await asyncio.wait_for(self.listening.wait(), ready_timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None

    async def _run(self) -> None:
        import psycopg

        delay = 0.1
        first = True
        while True:
            conn: Any = None
            try:
                conn = await psycopg.AsyncConnection.connect(self.url.target, autocommit=True, connect_timeout=5,
                                                             application_name="ledgergate-approvals-listener")
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                if not first:
                    self.reconnects += 1
                    self._on_reconnect()
                first = False
                delay = 0.1
                async for note in conn.notifies():
                    self._on_id(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening; waiters also poll
                self.listening.clear()
                log.warning("approvals listener lost its connection (%s); retrying in %.1fs",
                            type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                first = False
            finally:
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:  # noqa: BLE001
                        pass


__all__ = ["CHANNEL", "ApprovalStore", "ApprovalStoreError", "DuplicatePending", "Listener"]
