"""Connections to the one store: SQLite (embedded default) or PostgreSQL.

Everything that persists (ledger, sessions index, approvals, API keys, tool
fingerprints) goes through here so the same code runs on both engines. Calls are
blocking DB-API; async callers use `anyio.to_thread` (or the ledger's own writer
thread). `sql()` rewrites `?` placeholders for psycopg.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def sql(url: StoreURL, statement: str) -> str:
    """Placeholders are written `?`; psycopg wants `%s`."""
    return statement.replace("?", "%s") if url.kind == "postgres" else statement
