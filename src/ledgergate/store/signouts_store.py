"""Console sessions ended by signing out, kept until their cookie would have expired anyway.

A console session lives in a sealed cookie. Signing out deletes the browser's copy, but a copy taken
before (from a shared machine, a proxy log, a stolen laptop) would go on working until it expires. So
signing out writes the session's id here, where every replica of the gateway reads it on each console
request. The id is a SHA-256 of the session's own random token, never the token. Rows are dropped once
their cookie has expired, so the table holds at most the sign-outs of one session lifetime.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ledgergate.store.db import ReconnectingStore, StoreURL, sql

_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_signouts (
    session_id TEXT PRIMARY KEY,
    expires DOUBLE PRECISION NOT NULL
)
"""


class SignOutStore(ReconnectingStore):
    """The `console_signouts` table; one connection behind a lock (see `ReconnectingStore`)."""

    _PROBE = "SELECT 1 FROM console_signouts LIMIT 1"

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, storage: str, base_dir: Path | None = None) -> SignOutStore:
        return cls(StoreURL.parse(storage, base_dir))

    def _create_schema(self, conn: Any) -> None:
        conn.execute(_SCHEMA)

    def sign_out(self, session_id: str, expires: float, now: float) -> None:
        """Durable before it returns (each statement commits); the expired rows go with it."""
        insert = sql(self.url, "INSERT INTO console_signouts (session_id, expires) VALUES (?, ?) "
                               "ON CONFLICT (session_id) DO NOTHING")
        prune = sql(self.url, "DELETE FROM console_signouts WHERE expires < ?")

        def op(conn: Any) -> None:
            conn.execute(insert, (session_id, expires))
            conn.execute(prune, (now,))
        self._run(op)

    def consume(self, token_id: str, expires: float, now: float) -> bool:
        """Whether `token_id` was not used before (it is now, on every replica): a console sign-in
        attempt is good for one callback. The same table, because it holds exactly this kind of row: an
        id no longer usable until a time after which its cookie is dead anyway. Durable before it returns."""
        insert = sql(self.url, "INSERT INTO console_signouts (session_id, expires) VALUES (?, ?) "
                               "ON CONFLICT (session_id) DO NOTHING")
        prune = sql(self.url, "DELETE FROM console_signouts WHERE expires < ?")

        def op(conn: Any) -> bool:
            first = conn.execute(insert, (token_id, expires)).rowcount == 1
            conn.execute(prune, (now,))
            return first
        return self._run(op)

    def signed_out(self, session_id: str) -> bool:
        query = sql(self.url, "SELECT 1 FROM console_signouts WHERE session_id = ?")
        return bool(self._run(lambda conn: conn.execute(query, (session_id,)).fetchall()))
