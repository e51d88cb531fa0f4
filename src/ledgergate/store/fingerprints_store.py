"""Accepted tool-definition fingerprints, per server (SQLite or PostgreSQL).

One row per (server, tool): the accepted fingerprint and definition, and the
pending (changed, not yet accepted) ones if the upstream drifted. Fingerprints
and their comparison live with the gateway's drift guard (`gateway/drift.py`);
this module only keeps rows. First-seen rows are inserted with ON CONFLICT DO
NOTHING, so replicas racing on one listing all read back the same winner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledgergate.store.db import ReconnectingStore, StoreURL, sql


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_fingerprints (
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    accepted_fp TEXT NOT NULL,
    accepted_definition TEXT NOT NULL,
    accepted_at DOUBLE PRECISION NOT NULL,
    accepted_by TEXT NOT NULL,
    pending_fp TEXT,
    pending_definition TEXT,
    pending_seen_at DOUBLE PRECISION,
    PRIMARY KEY (server, tool)
)
"""
_COLUMNS = (
    "server, tool, accepted_fp, accepted_definition, accepted_at, accepted_by, "
    "pending_fp, pending_definition, pending_seen_at"
)
FIRST_SEEN = "first-seen"


@dataclass(frozen=True, slots=True)
class FingerprintRecord:
    server: str
    tool: str
    accepted_fp: str
    accepted_definition: dict[str, Any]
    accepted_at: float
    accepted_by: str  # "first-seen" or who ran `tools accept`
    pending_fp: str | None
    pending_definition: dict[str, Any] | None
    pending_seen_at: float | None

    @property
    def status(self) -> str:
        return "changed" if self.pending_fp is not None else "accepted"

    @property
    def changed_fields(self) -> list[str]:
        """Which fingerprinted fields differ between the accepted and the pending definition."""
        if self.pending_definition is None:
            return []
        keys = set(self.accepted_definition) | set(self.pending_definition)
        return sorted(k for k in keys if self.accepted_definition.get(k) != self.pending_definition.get(k))


class NothingToAccept(LookupError):
    """`tools accept` for a tool that is unknown or has no pending change."""


class FingerprintStore(ReconnectingStore):
    """The `tool_fingerprints` table. Thread-safe (one connection behind a lock).

    The connection recovers the way the ledger's does: a call that finds it
    broken (a terminated PostgreSQL backend, a restarted server, a failed
    SQLite handle) drops it, opens a new one and runs the call once more;
    every statement here is idempotent, so the retry cannot apply anything
    twice. If the store is still unreachable the call raises, and the next
    call tries again, so the gateway serves again as soon as the store is back.
    """

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = threading.Lock()
        self._run(lambda conn: None)

    @classmethod
    def open(cls, storage: str, base_dir: Path | None = None) -> FingerprintStore:
        """From the config's `storage` URL (relative SQLite paths resolve against `base_dir`)."""
        return cls(StoreURL.parse(storage, base_dir))

    def __enter__(self) -> FingerprintStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    _PROBE = "SELECT 1 FROM tool_fingerprints LIMIT 1"

    def _create_schema(self, conn: Any) -> None:
        conn.execute(_SCHEMA)

    def _q(self, statement: str) -> str:
        return sql(self.url, statement)

    def _rows(self, statement: str, params: tuple[Any, ...]) -> list[Any]:
        return self._run(lambda conn: list(conn.execute(self._q(statement), params).fetchall()))

    # --- reads -------------------------------------------------------------

    def accepted(self, server: str) -> dict[str, str]:
        """tool name → accepted fingerprint."""
        rows = self._rows("SELECT tool, accepted_fp FROM tool_fingerprints WHERE server = ?", (server,))
        return {r[0]: r[1] for r in rows}

    def list(self, server: str | None = None) -> list[FingerprintRecord]:
        if server is None:
            rows = self._rows(f"SELECT {_COLUMNS} FROM tool_fingerprints ORDER BY server, tool", ())
        else:
            rows = self._rows(
                f"SELECT {_COLUMNS} FROM tool_fingerprints WHERE server = ? ORDER BY tool", (server,)
            )
        return [
            FingerprintRecord(
                server=r[0], tool=r[1], accepted_fp=r[2], accepted_definition=json.loads(r[3]),
                accepted_at=float(r[4]), accepted_by=r[5], pending_fp=r[6],
                pending_definition=None if r[7] is None else json.loads(r[7]),
                pending_seen_at=None if r[8] is None else float(r[8]),
            )
            for r in rows
        ]

    def get(self, server: str, tool: str) -> FingerprintRecord | None:
        return next((r for r in self.list(server) if r.tool == tool), None)

    # --- writes ------------------------------------------------------------

    def record_first_seen(self, server: str, tools: Iterable[tuple[str, str, str]], now: float) -> None:
        """Accept (name, fingerprint, definition JSON) rows unless the tool already has an accepted one."""
        stmt = self._q(
            "INSERT INTO tool_fingerprints (server, tool, accepted_fp, accepted_definition, accepted_at, accepted_by)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (server, tool) DO NOTHING"
        )
        rows = [(server, name, fp, definition, now, FIRST_SEEN) for name, fp, definition in tools]

        def op(conn: Any) -> None:
            for row in rows:
                conn.execute(stmt, row)
        self._run(op)

    def set_pending(self, server: str, name: str, fp: str, definition: str, now: float) -> None:
        """Remember a changed definition so `tools accept` can promote exactly it."""
        stmt = self._q(
            "UPDATE tool_fingerprints SET pending_fp = ?, pending_definition = ?, pending_seen_at = ?"
            " WHERE server = ? AND tool = ? AND accepted_fp <> ?"
            " AND (pending_fp IS NULL OR pending_fp <> ?)"
        )
        params = (fp, definition, now, server, name, fp, fp)
        self._run(lambda conn: conn.execute(stmt, params))

    def clear_pending(self, server: str, tool: str) -> None:
        stmt = self._q(
            "UPDATE tool_fingerprints SET pending_fp = NULL, pending_definition = NULL,"
            " pending_seen_at = NULL WHERE server = ? AND tool = ?"
        )
        self._run(lambda conn: conn.execute(stmt, (server, tool)))

    def accept(self, server: str, tool: str, now: float, by: str, expected_fp: str | None = None) -> FingerprintRecord:
        """Make the pending definition the accepted one.

        `expected_fp` (a prefix is enough) guards against accepting a
        definition that changed again after the operator looked at it.
        Raises NothingToAccept when there is no such tool or nothing pending,
        or the pending fingerprint does not start with `expected_fp`.
        """
        record = self.get(server, tool)
        if record is None:
            raise NothingToAccept(f"no tool {tool!r} has been seen on server {server!r}")
        if record.pending_fp is None:
            raise NothingToAccept(f"tool {tool!r} on server {server!r} has no pending change (it is accepted)")
        if expected_fp is not None and not record.pending_fp.startswith(expected_fp):
            raise NothingToAccept(
                f"the pending fingerprint of {tool!r} is {record.pending_fp[:16]}…, not {expected_fp}…"
            )
        stmt = self._q(
            "UPDATE tool_fingerprints SET accepted_fp = pending_fp, accepted_definition = pending_definition,"
            " accepted_at = ?, accepted_by = ?, pending_fp = NULL, pending_definition = NULL,"
            " pending_seen_at = NULL WHERE server = ? AND tool = ? AND pending_fp = ?"
        )
        pending = record.pending_fp
        if self._run(lambda conn: conn.execute(stmt, (now, by, server, tool, pending)).rowcount) != 1:
            # also when a retry after a lost connection finds the first attempt already applied:
            # `get` below then shows the accepted definition, but the caller is told to look again
            raise NothingToAccept(f"the pending definition of {tool!r} changed meanwhile; look again")
        accepted = self.get(server, tool)
        assert accepted is not None
        return accepted
