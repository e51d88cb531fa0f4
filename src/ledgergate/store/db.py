"""Connections to the one store: SQLite (embedded default) or PostgreSQL.

Everything that persists (ledger, sessions index, approvals, API keys, tool
fingerprints) goes through here so the same code runs on both engines. Calls are
blocking DB-API; async callers use `anyio.to_thread` (or the ledger's own writer
thread). `sql()` rewrites `?` placeholders for psycopg.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StoreURL:
    kind: str  # "sqlite" | "postgres"
    target: str  # file path for sqlite, conninfo for postgres

    @classmethod
    def parse(cls, url: str, base_dir: Path | None = None) -> StoreURL:
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            return cls("sqlite", str(path))
        if url.startswith(("postgresql://", "postgres://")):
            return cls("postgres", url)
        raise ValueError("storage must be sqlite:///PATH or postgresql://user@host:port/db")


def connect(url: StoreURL) -> Any:
    """A new DB-API connection in autocommit-off mode, tuned for durability."""
    if url.kind == "sqlite":
        Path(url.target).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(url.target, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn
    import psycopg

    return psycopg.connect(url.target, autocommit=True, connect_timeout=5)  # an unreachable server fails promptly


def shown_url(url: StoreURL) -> str:
    """Where a store is, as an error may name it: a SQLite file's path, a PostgreSQL database's
    user, host, port, name and search path — never its password."""
    if url.kind == "sqlite":
        return url.target
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url.target)
    except Exception:  # noqa: BLE001 - a conninfo psycopg cannot read: say which engine, nothing more
        return "the configured PostgreSQL database"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    where = f"postgresql://{user}{info.get('host') or 'localhost'}{port}/{info.get('dbname') or ''}"
    path = str(info.get("options") or "").partition("search_path=")[2].split(" ")[0]
    return f"{where}, schema {path}" if path else where


def parent_problem(path: Path) -> str | None:
    """Why nothing can be at `path` — a file stands where one of its folders should be ("port.yaml
    is not a directory", where the system says "File exists" or "Not a directory") — or None."""
    for ancestor in path.parents:  # nearest first: the first that exists decides
        if ancestor.exists():
            return None if ancestor.is_dir() else f"{ancestor} is not a directory"
    return None


class StoreUnreachable(Exception):
    """The configured database cannot be asked (PostgreSQL unreachable, a file that cannot be read)."""


def store_absence(url: StoreURL, tables: tuple[str, ...]) -> str | None:
    """The read-only open mode's first step: why there is no store holding any of `tables` at `url`
    (a missing SQLite file, a folder, a file in the way, a file that is not SQLite, a database without
    those tables), or None when there is one. Nothing is created: a SQLite file is opened only when it
    exists, in `mode=rw` (SQLite's "never create"), and only its schema is read; PostgreSQL is asked
    which of the tables it sees on its search path. StoreUnreachable when the database cannot be asked."""
    if url.kind == "sqlite":
        path = Path(url.target)
        if path.is_dir():
            return "it is a folder, not a database"
        if not path.exists():
            return parent_problem(path) or "the file does not exist"
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise StoreUnreachable(f"cannot open {path}: {exc}") from None
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                return "it is not a SQLite database"
            raise StoreUnreachable(f"cannot read {path}: {exc}") from None
        finally:
            conn.close()
        return None if names.intersection(tables) else _no_tables(tables)
    import psycopg

    try:
        with psycopg.connect(url.target, autocommit=True, connect_timeout=5) as pg:
            found = [pg.execute("SELECT to_regclass(%s)", (t,)).fetchone() for t in tables]
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, bad credentials: all "cannot ask"
        raise StoreUnreachable(f"cannot connect to PostgreSQL: {error_text(exc)}") from None
    return None if any(row is not None and row[0] is not None for row in found) else _no_tables(tables)


def _no_tables(tables: tuple[str, ...]) -> str:
    return f"the database has no {' or '.join(tables)} table"


def connection_error(exc: BaseException) -> bool:
    """Whether `exc` says the connection (not the statement) failed, so a new connection may succeed:
    a terminated or restarted PostgreSQL backend, a lost socket, a SQLite handle that went bad.
    Constraint violations and SQL errors are not: retrying them on a new connection changes nothing."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError | sqlite3.ProgrammingError):
        return True  # "disk I/O error", "unable to open database file", "Cannot operate on a closed database"
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def error_text(exc: BaseException) -> str:
    """What an engine error may say in a log line or a readiness answer: its type and its first line,
    or PostgreSQL's primary message and SQLSTATE. Never the rest: PostgreSQL's DETAIL quotes the
    failing row ("Failing row contains (...)", the key of a duplicate), which holds ledger records
    and approval requests, and those stay out of logs (tests/integration/test_ledger_store.py)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        state = getattr(diag, "sqlstate", None)
        return f"{type(exc).__name__}: {primary.strip()}" + (f" (SQLSTATE {state})" if state else "")
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].strip() if lines else ''}"[:300]


def sql(url: StoreURL, statement: str) -> str:
    """Placeholders are written `?`; psycopg wants `%s`."""
    return statement.replace("?", "%s") if url.kind == "postgres" else statement


class ReconnectingStore:
    """One connection behind a lock, opened (with its schema) on first use, dropped and opened again
    once when it broke — a terminated backend, a restarted server — so a store recovers without a
    restart; if the store is still unreachable the call raises and the next one tries again.

    A store sets `url`, `_conn = None` and `_lock`, and says how to create its schema and how to
    prove it can serve (`_PROBE`, one small read)."""

    url: StoreURL
    _conn: Any
    _lock: Any
    _PROBE: str = "SELECT 1"

    def _create_schema(self, conn: Any) -> None:
        raise NotImplementedError

    def _run(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(connection)` under the lock; reconnect and retry once if the connection broke."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._conn is None:
                        self._conn = connect(self.url)
                        self._create_schema(self._conn)
                    return fn(self._conn)
                except Exception as exc:
                    if not connection_error(exc):
                        raise
                    self._drop()
                    if attempt == 1:
                        raise
            raise AssertionError("unreachable")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
                pass

    def check(self) -> str | None:
        """None when the store answers a read now, else why not (for readiness probes)."""
        try:
            self._run(lambda conn: conn.execute(self._PROBE).fetchall())
        except Exception as exc:  # noqa: BLE001 - any failure means "cannot serve"
            return error_text(exc)
        return None

    def close(self) -> None:
        with self._lock:
            self._drop()
