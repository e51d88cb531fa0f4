"""API key records in the one store (SQLite or PostgreSQL), same SQL on both.

Only the SHA-256 of a key is stored, never the key. Every authentication reads
the row again, so a `revoke` from the CLI (another process) is honoured on the
very next request; the lookup is one indexed point query.
Calls block; async callers run them in a thread.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from ledgergate.store.db import ReconnectingStore, StoreURL, sql


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    groups TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
)
"""
_COLUMNS = "id, name, key_hash, groups, created_at, expires_at, revoked_at, last_used_at"


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One stored API key (its hash, never the key)."""

    id: str
    name: str
    key_hash: str
    groups: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def state(self, now: float) -> str:
        """"active", "revoked" or "expired"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0], name=row[1], key_hash=row[2], groups=tuple(json.loads(row[3])),
        created_at=float(row[4]),
        expires_at=None if row[5] is None else float(row[5]),
        revoked_at=None if row[6] is None else float(row[6]),
        last_used_at=None if row[7] is None else float(row[7]),
    )


class ApiKeyStore(ReconnectingStore):
    """API key table access; one connection, serialised by a lock, reopened after a failure."""

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = threading.Lock()

    _PROBE = "SELECT 1 FROM api_keys LIMIT 1"

    def _create_schema(self, conn: Any) -> None:
        for attempt in (0, 1):
            try:
                conn.execute(_SCHEMA)
                conn.execute("CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys (name)")
                return
            except Exception:
                # Two processes creating the table at once on PostgreSQL: the loser retries.
                if attempt == 1:
                    raise

    def open(self) -> None:
        """Connect and create the table if missing."""
        self._run(lambda conn: None)

    def insert(self, record: ApiKeyRecord) -> None:
        def op(conn: Any) -> None:
            conn.execute(
                sql(self.url, f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                (record.id, record.name, record.key_hash, json.dumps(list(record.groups)),
                 record.created_at, record.expires_at, record.revoked_at, record.last_used_at),
            )
        self._run(op)

    def by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        def op(conn: Any) -> ApiKeyRecord | None:
            row = conn.execute(sql(self.url, f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?"),
                               (key_hash,)).fetchone()
            return None if row is None else _record(row)
        return self._run(op)

    def all(self) -> list[ApiKeyRecord]:
        def op(conn: Any) -> list[ApiKeyRecord]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
            return [_record(r) for r in rows]
        return self._run(op)

    def find(self, id_or_name: str) -> list[ApiKeyRecord]:
        """Keys whose id is `id_or_name`, else those with that name."""
        def op(conn: Any) -> list[ApiKeyRecord]:
            rows = conn.execute(sql(self.url, f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?"),
                                (id_or_name,)).fetchall()
            if not rows:
                rows = conn.execute(
                    sql(self.url, f"SELECT {_COLUMNS} FROM api_keys WHERE name = ? ORDER BY created_at"),
                    (id_or_name,)).fetchall()
            return [_record(r) for r in rows]
        return self._run(op)

    def revoke(self, key_id: str, when: float) -> bool:
        """Mark a key revoked; False when no such unrevoked key exists."""
        def op(conn: Any) -> bool:
            cur = conn.execute(
                sql(self.url, "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
                (when, key_id))
            return bool(cur.rowcount)
        return self._run(op)

    def touch(self, key_id: str, when: float) -> None:
        def op(conn: Any) -> None:
            conn.execute(sql(self.url, "UPDATE api_keys SET last_used_at = ? WHERE id = ?"), (when, key_id))
        self._run(op)
