"""One writer per log: a replica's exclusive claim on its log id.

Each replica appends to its own log with sequence numbers it counts itself, so
two processes with the same log id (the default is the host name; two pods or
two shells on one host share it) would interleave one log until one of them
fails every request. So a replica claims its log id before it opens the
ledger, holds the claim while it runs, and a second one refuses to start,
naming the holder.

- SQLite: an exclusive `flock` on a lock file beside the database
  (`<db>.<log id>.lock`). The kernel drops it when the process ends, even
  after kill -9, so a crashed replica never blocks its successor. The file
  holds who claimed it, for the refusal message.
- PostgreSQL: a session-level advisory lock, keyed by (schema, log id), held
  by one dedicated connection; the server drops it when that session ends
  (crash, network loss). Who holds it is written to `ledger_claims`, with the
  backend pid of the session holding the lock: a refused replica names a
  holder only once the row is the lock holder's own (between taking the lock
  and writing the row, the row still names the previous holder — possibly the
  refused replica itself — and naming that would send an operator after the
  wrong process).
  If that connection is lost the claim is too: `check()` (run by the
  ledger's probe) takes it again or reports that someone else has it, and the
  ledger fails closed until it is back. The session asks the server to probe
  its client (`_SERVER_KEEPALIVES`), so a holder whose host vanished frees the
  id within seconds, not after the server's two-hour TCP default.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledgergate.store.db import StoreURL, error_text, parent_problem
from ledgergate.store.ledger_store import StoreError

_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


#: The server's side of the claim's session. The lock is the session's, and the server ends a session
#: when it sees its client gone: at once when the process dies (its host closes the socket), but when
#: the host itself vanishes (power, a kernel panic, a partition) only when TCP keepalive gives up,
#: which by the server's defaults (tcp_keepalives_idle 7200 s) would keep a replacement with the same
#: replica id from starting for two hours and more. These make it about ten seconds: probe after 5 s
#: of silence, every 2 s, give up after 2 unanswered; unacknowledged data gives up after 10 s.
_SERVER_KEEPALIVES = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
                      "SET tcp_keepalives_count = 2", "SET tcp_user_timeout = 10000")


class ClaimRefused(StoreError):
    """Another process holds this log id."""


def describe_holder() -> str:
    """Who this process is, as the refusal message of a second replica will name it."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"pid {os.getpid()} on host {socket.gethostname()} since {now}"


def _refusal(log_id: str, holder: str) -> str:
    return (f"log id {log_id!r} is already claimed by another gateway ({holder}); two replicas may not write one "
            "log: give each its own audit.replica")


def _claim_file_problem(path: Path, exc: OSError) -> str:
    """What stands in the way of the claim file at `path`, in words an operator can act on: the system's
    own ("File exists" when a folder of the path is a file, "Is a directory") name neither the culprit
    nor the setting to fix."""
    blocked = parent_problem(path)
    if blocked is not None:
        return f"{blocked} (a file stands where a folder of the store's path should be); check `storage`"
    if path.is_dir():
        return f"{path} is a directory, not a lock file; remove it or check `storage`"
    return exc.strerror or type(exc).__name__


class LogClaim:
    """Held until `release()`; `check()` says whether it still is."""

    def __init__(self, url: StoreURL, log_id: str, holder: str | None = None) -> None:
        self.url = url
        self.log_id = log_id
        self.holder = holder or describe_holder()
        self._fd: int | None = None
        self._path: Path | None = None
        self._conn: Any = None
        self._key = 0
        self.reconnected = False  # set when check() had to claim again; the ledger resets it
        if url.kind == "sqlite":
            self._claim_file()
        else:
            self._claim_postgres()

    # --- SQLite: a lock file --------------------------------------------------
    def _claim_file(self) -> None:
        db = Path(self.url.target)
        name = self.log_id if _SAFE.fullmatch(self.log_id) else hashlib.sha256(self.log_id.encode()).hexdigest()[:16]
        path = db.with_name(f"{db.name}.{name}.lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the claim file {path}: {_claim_file_problem(path, exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that did not say who"
            finally:
                os.close(fd)
            raise ClaimRefused(_refusal(self.log_id, holder)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (self.holder + "\n").encode(), 0)
        except OSError:
            pass  # the lock is what counts; the text only helps the next refusal message
        self._fd, self._path = fd, path

    # --- PostgreSQL: a session advisory lock ----------------------------------
    def _claim_postgres(self) -> None:
        import psycopg

        try:
            self._conn = psycopg.connect(self.url.target, autocommit=True, connect_timeout=5,
                                         keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
            for setting in _SERVER_KEEPALIVES:
                self._conn.execute(setting)
            schema = self._conn.execute("SELECT current_schema()").fetchone()[0]
            digest = hashlib.sha256(f"ledgergate-log\0{schema}\0{self.log_id}".encode()).digest()
            self._key = int.from_bytes(digest[:8], "big", signed=True)
            for attempt in (0, 1):  # two replicas creating the table at once: the loser tries again
                try:
                    self._conn.execute("CREATE TABLE IF NOT EXISTS ledger_claims (log_id TEXT PRIMARY KEY, "
                                       "holder TEXT NOT NULL, pid INTEGER)")
                    self._conn.execute("ALTER TABLE ledger_claims ADD COLUMN IF NOT EXISTS pid INTEGER")
                    break
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateColumn):
                    if attempt:
                        raise
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()[0]
            if not got:
                raise ClaimRefused(_refusal(self.log_id, self._current_holder()))
            self._conn.execute("INSERT INTO ledger_claims (log_id, holder, pid) VALUES (%s, %s, pg_backend_pid()) "
                               "ON CONFLICT (log_id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid",
                               (self.log_id, self.holder))
        except ClaimRefused:
            self._close_conn()
            raise
        except Exception as exc:
            self._close_conn()
            raise StoreError(f"cannot claim log id {self.log_id!r}: {error_text(exc)}") from exc

    def _current_holder(self, wait: float = 2.0) -> str:
        """Who holds the lock, from a `ledger_claims` row written by the session that holds it: a
        row of an earlier holder is stale (the new holder writes its own just after locking), so it
        is read again for up to `wait` seconds before the message admits it does not know."""
        unsigned = self._key & 0xFFFF_FFFF_FFFF_FFFF  # an int8 advisory key is (classid, objid), objsubid 1
        deadline = time.monotonic() + wait
        while True:
            row = self._conn.execute(
                "SELECT c.holder FROM ledger_claims c WHERE c.log_id = %s AND EXISTS (SELECT 1 FROM pg_locks l "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.pid = c.pid AND l.classid = %s "
                "AND l.objid = %s AND l.objsubid = 1)",
                (self.log_id, unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
            if row is not None:
                return str(row[0])
            if time.monotonic() >= deadline:
                return "a process that has not said who it is"
            time.sleep(0.02)

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail
                pass

    # --- both -------------------------------------------------------------------
    def check(self) -> str | None:
        """None while the claim is held (taken again if its PostgreSQL session was lost), else why not."""
        if self.url.kind == "sqlite":
            if self._fd is None or self._path is None:
                return "the log id claim was released"
            try:
                same = os.stat(self._path).st_ino == os.fstat(self._fd).st_ino
            except OSError:
                same = False
            return None if same else f"the claim file {self._path} was removed or replaced"
        try:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute("SELECT 1")
                return None
        except Exception:  # noqa: BLE001 - the session (and with it the lock) is gone; take it again below
            pass
        self._close_conn()
        try:
            self._claim_postgres()
        except StoreError as exc:
            return f"lost the claim on log id {self.log_id!r}: {exc}"
        self.reconnected = True  # whatever ended that session may have ended the ledger's too
        return None

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)  # closing the descriptor drops the flock
            finally:
                self._fd = None
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            except Exception:  # noqa: BLE001 - a lost session released it already
                pass
            self._close_conn()


__all__ = ["ClaimRefused", "LogClaim", "describe_holder"]
