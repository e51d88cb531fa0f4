"""The ledger: durable, group-committed, Merkle-hashed records with signed checkpoints.

Write path (DESIGN.md "The ledger"): `append` hands an event to one writer
thread and waits. Appends made in one turn of the event loop reach the writer
as one list (one queue put, one thread wake-up for all of them, not one each).
The writer drains whatever is queued (up to `max_batch`),
numbers the records, makes their RFC 8785 bytes and RFC 9162 leaf hashes,
writes them, with the interior hashes they complete (audit/stored.py), in one
transaction with one commit (one fsync for the batch), then moves the
in-memory compact range and wakes every waiter at once. Nothing is
acknowledged before its commit returned; if the store fails, every waiter of
that batch gets `LedgerUnavailable` and the Merkle state does not move.

Checkpoints go through the same writer so (size, root) is always a committed
prefix; they are signed, stored, then pushed to the witnesses.

Each record is written with its seal (audit/seals.py), a MAC only gateways can
make, and opening a log checks the seal of every record after the latest
signed checkpoint before the next checkpoint signs them: rows put in the store
while the gateway was stopped are refused, not signed (docs/security.md §4).

An append that is not durable within `append_timeout` (or whose caller is
cancelled) fails its caller with `LedgerUnavailable`, and the caller forwards
nothing. The ledger must then not say otherwise, so each append has a state
that the writer and the watchdog change under one lock:

- still queued when it times out: it is marked abandoned and the writer skips
  it; it is never written, and takes no sequence number;
- already taken into a batch (its transaction may be stalled on a lock, a
  slow disk, a server that does not answer): the caller is not held past its
  deadline, because a client must get its answer in bounded time. If that
  batch then commits after all, the writer at once writes one
  `append.abandoned` record per such record, naming its `abandoned_seq` and
  `abandoned_event` (and its `session`, so a session's records include it):
  "this record's caller was told it failed; nothing was done on its account".
  Until that follow-up is durable the ledger does not count as ready and
  every later batch writes it first.

Waiting for the stalled commit instead would hold the client for as long as
the store stalls; never committing a record that is already being written
cannot be promised by a database. The one window left is a crash between the
commit and its follow-up, which is the same window as a crash between any
durable `rpc.request` and the forwarding it announces.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

from ledgergate.audit import canonical, merkle, seals, stored
from ledgergate.audit.checkpoint import (
    Checkpoint,
    NoteError,
    Signer,
    load_or_create_signer,
    open_checkpoint,
    parse_note,
    verifier_path,
)
from ledgergate.audit.settings import AuditSettings
from ledgergate.audit.witness import FileWitness, Witness, make_witnesses, push_all
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.claims import ClaimRefused, LogClaim
from ledgergate.store.db import StoreURL, parent_problem
from ledgergate.store.ledger_store import (
    CheckpointRow,
    LeafColumns,
    LeafRow,
    LedgerStore,
    StoreError,
    open_ledger_store,
)

log = logging.getLogger("ledgergate.audit.ledger")

RESERVED = frozenset({"v", "log", "seq", "time", "event"})
RECORD_VERSION = 1


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def rfc3339_now() -> str:
    """UTC now, to the microsecond, as every record's `time` ("2026-11-26T10:55:54.465778Z").

    The writer stamps each batch, so this runs once a commit: `datetime.now().strftime()` was ~3% of
    the gateway's CPU at c=8 (py-spy). The text of the current second is kept and only the
    microseconds are formatted, about a fifth of the cost (tests/unit/test_ledger_time.py)."""
    global _second
    micros = time.time_ns() // 1000
    second, micro = divmod(micros, 1_000_000)
    known, text = _second  # one tuple, read and replaced whole: safe from any thread
    if second != known:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{micro:06d}Z"


def origin_for(log_id: str) -> str:
    """The tlog-checkpoint origin line of a replica's log."""
    return f"ledgergate/{log_id}"


QUEUED, WRITING, DONE, ABANDONED, ABANDONED_WRITING = range(5)


@dataclass
class _Append:
    event: str
    fields: Mapping[str, Any]
    future: asyncio.Future[int] | None  # None: written by the ledger itself (a follow-up), nobody waits
    state: int = QUEUED
    reason: str = ""  # why it was abandoned: "timeout" or "cancelled"
    seq: int = -1  # its leaf index once written


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]


_STOP = object()
PROBE_IDLE = 5.0  # seconds without a committed write after which a probe write checks the store


def _key_problem(path: Path, exc: BaseException) -> str:
    """Why a key file cannot be read or made, in words: never the file's contents (a key)."""
    problem = parent_problem(path)
    if problem is not None:
        return problem
    if isinstance(exc, ValueError):
        return "it does not hold 64 hexadecimal characters (a 32-byte key)"
    return str(exc.strerror) if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def hmac_key_path(settings: AuditSettings, base_dir: Path) -> Path:
    """Where the audit HMAC key is: `audit.hmac_key`, else `<signing_key>.hmac`, relative to `base_dir`."""
    key_path = Path(settings.signing_key)
    key_path = key_path if key_path.is_absolute() else base_dir / key_path
    path = Path(settings.hmac_key) if settings.hmac_key else key_path.with_name(key_path.name + ".hmac")
    return path if path.is_absolute() else base_dir / path


def read_hmac_key(path: Path) -> bytes:
    """The audit HMAC key in `path`; OSError or ValueError (never its contents) when it cannot serve."""
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 16:
        raise ValueError("short key")
    return key


def hmac_key_problem(path: Path, exc: BaseException) -> str:
    """Why the HMAC key file cannot be used, in words: never the file's contents."""
    return _key_problem(path, exc)


def _load_or_create_hmac_key(path: Path) -> bytes:
    if path.exists():
        return read_hmac_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


class Ledger:
    """One replica's log. Open with `await Ledger.open(...)`; close with `await ledger.close()`."""

    def __init__(self, settings: AuditSettings, store: LedgerStore, reader: LedgerStore, signer: Signer,
                 hmac_key: bytes, log_id: str, witnesses: list[Witness]) -> None:
        self.settings = settings
        self.log_id = log_id
        self.origin = origin_for(log_id)
        self.signer = signer
        self._hmac_key = hmac_key
        self._sealer = seals.Sealer(hmac_key, log_id)  # seals every record written (audit/seals.py)
        self._store = store  # writer thread only
        self._reader = reader  # proofs and reads, under _read_lock
        self._read_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._range = merkle.CompactRange()  # the committed prefix's right edge; replaced whole by the writer
        self._stored = merkle.StoredTree(self._read_nodes, self._read_many)  # proofs from stored hashes, via _reader
        self._witnesses = witnesses
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._broken = False
        self._closed = False
        self._claim_lock = threading.Lock()  # guards _Append.state between the writer and the event loop
        self._owed: list[_Append] = []  # follow-ups for records whose callers were told they failed (writer only)
        # readiness: the last write's outcome (None = it committed), and when a write last committed
        self._problem: str | None = None
        self._last_ok = time.monotonic()
        self.probe_idle = PROBE_IDLE
        self._prober: asyncio.Task[None] | None = None
        self._probe_job: asyncio.Future[Any] | None = None
        self._claim: LogClaim | None = None
        self._claim_problem: str | None = None  # set while this replica does not hold its log id
        self._last_checkpoint_size = -1
        self._ticker: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # (deadline, append) in submission order; cheaper than asyncio.wait_for per append.
        self._pending: collections.deque[tuple[float, _Append]] = collections.deque()
        # appends of this turn of the event loop, handed to the writer as one list by `_flush`
        self._inbox: list[_Append] = []

    # --- opening ------------------------------------------------------------
    @classmethod
    async def open(cls, settings: AuditSettings, store_url: str, base_dir: Path) -> Ledger:
        """Create keys, schema and log on first start; read the Merkle state from stored hashes."""
        base_dir = Path(base_dir)
        key_path = Path(settings.signing_key)
        key_path = key_path if key_path.is_absolute() else base_dir / key_path
        hmac_path = hmac_key_path(settings, base_dir)
        log_id = settings.replica or socket.gethostname()

        def setup() -> Ledger:
            new_keys = [p for p in (key_path, verifier_path(key_path), hmac_path) if not p.exists()]
            try:
                signer = load_or_create_signer(key_path, settings.key_name)
            except (NoteError, OSError) as exc:
                raise LedgerUnavailable(str(exc) if isinstance(exc, NoteError) else
                                        f"the signing key {key_path} (audit.signing_key) cannot be read: "
                                        f"{_key_problem(key_path, exc)}") from None
            try:
                hmac_key = _load_or_create_hmac_key(hmac_path)
            except (OSError, ValueError) as exc:
                raise LedgerUnavailable(f"the HMAC key {hmac_path} (audit.hmac_key) cannot be used: "
                                        f"{_key_problem(hmac_path, exc)}") from None
            claim = None
            try:
                # one writer per log id: a second replica with this id refuses to start (store/claims.py)
                claim = LogClaim(StoreURL.parse(store_url, base_dir), log_id)
                store = open_ledger_store(store_url, base_dir)
                store.init_schema()
                store.ensure_log(log_id, origin_for(log_id), rfc3339_now())
                reader = open_ledger_store(store_url, base_dir)
            except StoreError as exc:
                if claim is not None:
                    claim.release()
                if isinstance(exc, ClaimRefused):
                    raise LedgerUnavailable(str(exc)) from exc
                raise LedgerUnavailable(f"audit ledger store unavailable: {exc}") from exc
            ledger = cls(settings, store, reader, signer, hmac_key, log_id, make_witnesses(settings.witnesses, base_dir))
            ledger._claim = claim
            try:
                try:
                    ledger._check_signer(key_path)  # first: a wrong key is named as such, not as a bad tail
                    ledger._rebuild()
                except LedgerUnavailable:
                    # made just now (a mistyped audit.signing_key or audit.hmac_key) for a log that does not
                    # open with them: not left behind, nothing was signed or sealed with them
                    for path in new_keys:
                        path.unlink(missing_ok=True)
                    raise
            except BaseException:
                claim.release()
                raise
            return ledger

        ledger = await asyncio.to_thread(setup)
        ledger._loop = asyncio.get_running_loop()
        ledger._writer = threading.Thread(target=ledger._run_writer, name=f"ledger-writer-{log_id}", daemon=True)
        ledger._writer.start()
        ledger._watchdog = asyncio.create_task(ledger._watch(), name="ledger-watchdog")
        ledger._prober = asyncio.create_task(ledger._probe_loop(), name="ledger-probe")
        if settings.checkpoint_interval > 0:
            ledger._ticker = asyncio.create_task(ledger._tick(), name="ledger-checkpoints")
        return ledger

    def _rebuild(self) -> None:
        """Take up the log where its latest signed checkpoint left it, and refuse what the gateway did not write.

        Fail closed. Signing on from a state that is not the one signed before would put the gateway's
        signature (and the witnesses' copies) on whatever was done to the store while it was stopped: an
        altered stored hash was signed into checkpoint after checkpoint, a rolled-back store forked the log
        at its own witness, and rows inserted after a graceful stop were signed as the gateway's. So
        (audit/seals.py `open_log`): the checkpoint's size and root are the ones its signed note says; the
        prefix it covers is read from stored hashes, O(log n), and must fold to that root; every record
        after it must hash to its leaf hash and carry the seal only a gateway can make. The writer's range
        is built from those recomputed leaf hashes. Nothing is read per record under the checkpoint."""
        try:
            state = seals.open_log(self._store, self.log_id, self.origin, self.signer.verifier, self._sealer)
        except seals.Refused as exc:
            raise LedgerUnavailable(str(exc)) from None
        except (stored.HashesBeyondRecords, ValueError, LookupError) as exc:
            raise LedgerUnavailable(f"{exc}; run `ledgergate audit verify`") from None
        except StoreError as exc:
            raise LedgerUnavailable(f"audit ledger store unavailable: {exc}") from exc
        self._refuse_tail(state.tail, state.signed is not None)
        self._range = state.range
        self._last_checkpoint_size = state.signed.size if state.signed is not None else -1
        self._check_witnessed(state.range.size)

    def _refuse_tail(self, tail: seals.Tail, signed: bool) -> None:
        """LedgerUnavailable naming the first record after the checkpoint the gateway cannot vouch for."""
        where = f"after its latest signed checkpoint (size {tail.start})" if signed else "(it has no signed checkpoint)"
        wrong, unsealed = tail.wrong, tail.unsealed
        also = f"; {unsealed.count} more carry no seal" if wrong.count and unsealed.count else ""
        if wrong.count:
            raise LedgerUnavailable(
                f"log {self.log_id}: {wrong.count} record(s) {where} do not carry the gateway's seal or do not hash to "
                f"their leaf hash, the first at seq {wrong.first}{also}: inserted or edited in the store after the "
                "last signed checkpoint (or the audit HMAC key, audit.hmac_key, changed since they were written). "
                "The gateway does not sign them: remove the rows it did not write, or run `ledgergate audit verify`")
        if unsealed.count:
            raise LedgerUnavailable(
                f"log {self.log_id}: {unsealed.count} record(s) {where} carry no seal, the first at seq "
                f"{unsealed.first}: inserted by hand, or written by a gateway version from before record seals that "
                "stopped without its final checkpoint. Check them (`ledgergate audit seal-tail --log "
                f"{self.log_id}` lists them), then seal them with `ledgergate audit seal-tail --log {self.log_id} "
                "--yes`, or remove them")
        if tail.problem:
            raise LedgerUnavailable(tail.problem)

    def _check_witnessed(self, size: int) -> None:
        """The store against what the witnesses this replica can read back (file witnesses) hold of its
        log: a store rolled back to an older consistent state (a restored backup, a DBA's undo) has
        fewer records than a witnessed checkpoint, or other ones under it. Checked once, at open."""
        best: Checkpoint | None = None
        for witness in self._witnesses:
            if not isinstance(witness, FileWitness) or witness.problem() is not None:
                continue
            for note in witness.read_notes():
                if not note.startswith(self.origin + "\n"):
                    continue
                try:
                    cp = open_checkpoint(note, self.signer.verifier)
                except NoteError:
                    continue  # another key's note: `audit verify` reports it; it vouches for nothing here
                if best is None or cp.size > best.size:
                    best = cp
        if best is None:
            return
        if best.size > size:
            raise LedgerUnavailable(f"log {self.log_id}: the store holds {size} records but a witness holds its "
                                    f"signed checkpoint at size {best.size} (the store was rolled back or records "
                                    "deleted); run `ledgergate audit verify` before starting the gateway again")
        try:
            rewritten = best.size > 0 and self._stored.root_at(best.size) != best.root
        except (stored.HashesBeyondRecords, ValueError, LookupError) as exc:
            raise LedgerUnavailable(f"{exc}; run `ledgergate audit verify`") from None
        if rewritten:
            raise LedgerUnavailable(f"log {self.log_id}: the store's records 0..{best.size - 1} are not the ones a "
                                    "witness holds the signed checkpoint of (the log was rewritten); run "
                                    "`ledgergate audit verify` before starting the gateway again")

    def _check_signer(self, key_path: Path) -> None:
        """Refuse to sign a log whose checkpoints another key signed. A mistyped `audit.signing_key` would
        otherwise create a new key and go on signing the same log with it: every checkpoint after that
        fails `audit verify` under the old key and every one before under the new, and the log can never
        be verified whole again."""
        latest = self._store.latest_checkpoint(self.log_id)
        if latest is None:
            return
        try:
            open_checkpoint(latest.note, self.signer.verifier)
        except NoteError as exc:
            if self._signed_by_this_key(latest.note):
                return  # this key's signature that does not verify: an edited note, which _rebuild refuses as such
            raise LedgerUnavailable(
                f"log {self.log_id}: its checkpoints were not signed by the key at {key_path} "
                f"(audit.signing_key, {self.signer.verifier.name}+{self.signer.verifier.id.hex()}): {exc}. Point "
                "audit.signing_key at the key that signed them; a new key needs a new log (audit.replica)") from None

    def _signed_by_this_key(self, note: str) -> bool:
        """Whether `note` carries a signature line of this ledger's key (name and key id), valid or not."""
        verifier = self.signer.verifier
        try:
            return any(name == verifier.name and kid == verifier.id for name, kid, _ in parse_note(note).signatures)
        except NoteError:
            return False

    def _read_many(self, wants: Mapping[int, Sequence[int]]) -> dict[int, dict[int, bytes]]:
        got: dict[int, dict[int, bytes]] = self._locked_read(lambda r: r.node_hashes_many(self.log_id, wants))
        return got

    def _read_nodes(self, level: int, indices: Sequence[int]) -> dict[int, bytes]:
        got: dict[int, bytes] = self._locked_read(lambda r: r.node_hashes(self.log_id, level, indices))
        return got

    # --- public API ---------------------------------------------------------
    @property
    def size(self) -> int:
        return self._range.size

    def root(self) -> bytes:
        with self._state_lock:
            return self._range.root()

    def subkey(self, purpose: str) -> bytes:
        """A key for one purpose (e.g. sealing approval state), derived from the HMAC key every replica
        of one deployment shares, so what one replica seals another can open."""
        return canonical.derive_key(self._hmac_key, purpose)

    def hmac(self, value: Any) -> str:
        """Hex HMAC-SHA256 of the RFC 8785 bytes of a raw value: provable later, never stored raw."""
        return canonical.hmac_hex(self._hmac_key, value)

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        """Make one record durable; return its leaf index. Fails closed with LedgerUnavailable."""
        if self._closed:
            raise LedgerUnavailable("audit ledger is closed")
        if self._claim_problem:
            raise LedgerUnavailable(f"audit ledger cannot write: {self._claim_problem}")
        if not RESERVED.isdisjoint(fields):
            raise ValueError(f"record fields may not use reserved names {sorted(RESERVED.intersection(fields))}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        item = _Append(event, fields, fut)
        self._pending.append((loop.time() + self.settings.append_timeout, item))
        inbox = self._inbox
        inbox.append(item)
        if len(inbox) == 1:  # the first of this turn: hand them all over once the turn's callbacks ran
            loop.call_soon(self._flush)
        try:
            return await fut
        except asyncio.CancelledError:
            self._abandon(item, "cancelled")
            raise

    def _flush(self) -> None:
        """Event loop: hand this turn's appends to the writer in one put: one cross-thread wake-up
        per batch instead of one per append (the writer would take them as one batch anyway)."""
        items, self._inbox = self._inbox, []
        if items:
            self._queue.put(items)

    def _abandon(self, item: _Append, reason: str) -> bool:
        """The caller will be told the record failed: keep it out of the log, or owe a follow-up.
        False when it is already durable (DONE) or already abandoned: then nobody may say it failed."""
        with self._claim_lock:
            if item.state == QUEUED:
                item.state = ABANDONED
            elif item.state == WRITING:
                item.state = ABANDONED_WRITING
            else:
                return False
            item.reason = reason
            return True

    async def checkpoint(self) -> str:
        """Sign, store and push a checkpoint of the current size now; return the note."""
        row, new = await self._submit(self._make_checkpoint)
        if new and self._witnesses:
            await push_all(self._witnesses, row.note)
        return row.note

    async def latest_checkpoint(self) -> CheckpointRow | None:
        return await asyncio.to_thread(self._locked_read, lambda r: r.latest_checkpoint(self.log_id))

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return await self._from_stored(self._stored.inclusion_proof, index, size)

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        self._check_size(new)
        return await self._from_stored(self._stored.consistency_proof, old, new)

    async def root_at(self, size: int) -> bytes:
        self._check_size(size)
        root: bytes = await self._from_stored(self._stored.root_at, size)
        return root

    async def read_store(self, fn: Callable[[LedgerStore], Any]) -> Any:
        """Run a read against the store on a worker thread (tiles, listings); fails closed."""
        try:
            return await asyncio.to_thread(self._locked_read, fn)
        except StoreError as exc:
            raise LedgerUnavailable(f"audit ledger store unavailable: {exc}") from exc

    async def _from_stored(self, fn: Callable[..., Any], *args: int) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError as exc:
            raise LedgerUnavailable(f"audit ledger store unavailable: {exc}") from exc
        except LookupError as exc:
            log.error("log %s: %s; run `ledgergate audit verify`", self.log_id, exc)
            raise LedgerUnavailable("the ledger's stored hashes are incomplete; run `ledgergate audit verify`") from None

    async def leaf(self, index: int) -> LeafRow | None:
        rows = await asyncio.to_thread(self._locked_read, lambda r: r.rows(self.log_id, index, index + 1))
        return rows[0] if rows else None

    def readiness(self) -> str:
        """"ok" when the ledger can make records durable now, else why not. Cheap (no I/O): it is the
        outcome of the last write, whether a record or the probe write made while idle
        (`_probe_loop`), so a replica whose store cannot write (a full disk, a lost server) stops
        being ready even when no request comes, and is ready again once a write succeeds."""
        if self._closed:
            return "closed"
        if self._claim_problem:
            return self._claim_problem
        if self._owed:
            return "a record committed after its caller was refused still waits for its follow-up record"
        return self._problem or "ok"

    async def _probe_loop(self) -> None:
        me = asyncio.current_task()
        while True:
            # Python 3.11's wait_for (below) can swallow a cancellation that races the result
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(min(1.0, self.probe_idle))
            if self._claim is not None:
                self._claim_problem = await asyncio.to_thread(self._claim.check)
                if self._claim.reconnected:  # the claim's session was lost: check the writer's now
                    self._claim.reconnected = False
                    self._problem = self._problem or "the database session was lost; checking the store"
            if self._problem is None and not self._owed and time.monotonic() - self._last_ok < self.probe_idle:
                continue  # records are being written: their outcome is the readiness
            if self._probe_job is not None and not self._probe_job.done():
                self._problem = "the ledger's writer has not answered its last probe"  # it is stalled
                continue
            self._probe_job = asyncio.get_running_loop().create_future()
            self._queue.put(_Job(self._probe, self._probe_job))
            try:
                await asyncio.wait_for(asyncio.shield(self._probe_job), self.settings.append_timeout)
            except TimeoutError:
                self._problem = "the ledger's writer did not answer a probe in time"
            except LedgerUnavailable as exc:
                self._problem = exc.message
            except Exception as exc:  # noqa: BLE001 - keep probing
                self._problem = f"probe failed: {type(exc).__name__}"

    def _probe(self) -> None:
        """Writer thread: a small durable write that is not a record."""
        self._store.probe(self.log_id, rfc3339_now())
        self._wrote()

    def _wrote(self) -> None:
        self._problem = None
        self._last_ok = time.monotonic()

    async def close(self) -> None:
        """Final checkpoint, stop the checkpoint task and the writer, close connections."""
        if self._closed:
            return
        for task in (self._ticker, self._watchdog, self._prober):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
        try:
            if self.size != self._last_checkpoint_size:
                await self.checkpoint()
        except LedgerUnavailable as exc:
            log.warning("final checkpoint not written: %s", exc.message)
        self._closed = True
        self._flush()
        self._queue.put(_STOP)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join, 30)
        for w in self._witnesses:
            await w.aclose()
        self._reader.close()
        if self._claim is not None:
            self._claim.release()

    # --- internals ----------------------------------------------------------
    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is beyond the log's size {self.size}")

    def _locked_read(self, fn: Callable[[LedgerStore], Any]) -> Any:
        with self._read_lock:
            try:
                return fn(self._reader)
            except StoreError:
                self._reader.reconnect()
                return fn(self._reader)

    async def _submit(self, fn: Callable[[], Any]) -> Any:
        if self._closed:
            raise LedgerUnavailable("audit ledger is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(fn, fut))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.settings.append_timeout)
        except TimeoutError:
            raise LedgerUnavailable("audit ledger did not answer in time") from None

    async def _watch(self) -> None:
        """Fail closed: a record not durable within append_timeout fails its caller."""
        loop = asyncio.get_running_loop()
        pending = self._pending
        while True:
            await asyncio.sleep(min(0.25, self.settings.append_timeout / 4))
            now = loop.time()
            while pending and (pending[0][1].state == DONE or pending[0][0] <= now):
                _, item = pending.popleft()
                fut = item.future
                # DONE but not yet settled: committed, its result is on the way from the writer thread
                if fut is not None and not fut.done() and self._abandon(item, "timeout"):
                    self._problem = "a record was not made durable within append_timeout"
                    fut.set_exception(LedgerUnavailable("audit ledger did not make the record durable in time"))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            if self.size != self._last_checkpoint_size:
                try:
                    await self.checkpoint()
                except Exception as exc:  # noqa: BLE001 - keep ticking; appends report store failures
                    log.warning("periodic checkpoint failed: %s", exc)

    def _make_checkpoint(self) -> tuple[CheckpointRow, bool]:
        """Writer thread: sign (size, root) of the committed prefix and store it."""
        with self._state_lock:
            size, root, edge = self._range.size, self._range.root(), b"".join(self._range.edge)
        if size == self._last_checkpoint_size:
            latest = self._store.latest_checkpoint(self.log_id)
            if latest is not None and latest.size == size:
                return latest, False
        note = self.signer.sign(Checkpoint(self.origin, size, root).body())
        row = CheckpointRow(self.log_id, size, root, note, edge, rfc3339_now())
        self._store.add_checkpoint(row)
        self._wrote()
        self._last_checkpoint_size = size
        return row, True

    def _run_writer(self) -> None:
        max_batch = self.settings.max_batch
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = item if type(item) is list else [item]
            stop = False
            while len(batch) < max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                if type(nxt) is list:
                    batch.extend(nxt)
                else:
                    batch.append(nxt)
            for i in range(0, len(batch), max_batch):
                self._process(batch[i:i + max_batch])
            if stop:
                break
        # anything left after stop fails closed
        left: list[Any] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left.extend(item if type(item) is list else [item])
        closed = LedgerUnavailable("audit ledger is closed")
        self._resolve([(i.future, closed) for i in left if i is not _STOP and i.future is not None])
        if self._owed:
            log.error("ledger closed with %d follow-up record(s) for refused callers unwritten", len(self._owed))
        self._store.close()

    def _process(self, batch: list[Any]) -> None:
        results: list[tuple[asyncio.Future[Any], Any]] = []
        jobs = [i for i in batch if isinstance(i, _Job)]
        with self._claim_lock:  # from here on an abandoned append is owed a follow-up, not skipped
            appends = [i for i in batch if isinstance(i, _Append) and i.state == QUEUED]
            for item in appends:
                item.state = WRITING
        if self._broken:
            try:
                self._store.reconnect()
                if self._store.size(self.log_id) != self.size:
                    raise StoreError("store no longer holds this log's records")
                self._broken = False
            except StoreError as exc:
                self._problem = f"the store cannot be reached: {exc}"
                self._fail_all(appends, jobs, LedgerUnavailable(f"audit ledger store unavailable: {exc}"))
                return
        if self._owed and not self._write_owed():
            self._fail_all(appends, jobs, LedgerUnavailable("audit ledger store unavailable"))
            return
        if appends:
            written, failed = self._write(appends)
            results.extend(failed)
            if written:
                with self._claim_lock:
                    for item, _ in written:
                        if item.state == ABANDONED_WRITING:
                            self._owed.append(item)
                        else:
                            item.state = DONE
                results.extend((item.future, seq) for item, seq in written if item.future is not None)
                if self._owed:
                    self._write_owed()
        for job in jobs:
            try:
                results.append((job.future, job.fn()))
            except StoreError as exc:
                self._broken = True
                self._problem = f"the last write failed: {exc}"
                results.append((job.future, LedgerUnavailable(f"audit ledger store unavailable: {exc}")))
            except Exception as exc:  # noqa: BLE001
                results.append((job.future, exc))
        self._resolve(results)

    def _fail_all(self, appends: list[_Append], jobs: list[_Job], err: BaseException) -> None:
        futures: list[asyncio.Future[Any]] = [j.future for j in jobs]
        futures.extend(a.future for a in appends if a.future is not None)
        self._resolve([(f, err) for f in futures])

    def _write(self, appends: list[_Append]) -> tuple[list[tuple[_Append, int]], list[tuple[asyncio.Future[Any], Any]]]:
        """Writer thread: number, encode and commit `appends` in one transaction.
        Returns (written with their seq, failed futures with their error)."""
        failed: list[tuple[asyncio.Future[Any], Any]] = []
        seq = self.size
        good: list[tuple[_Append, int]] = []
        now = rfc3339_now()  # one time for the batch: the moment it was taken for commit
        cols = LeafColumns([], [], [], [], [], [], [])
        seqs, events, sessions, hashes, records = cols.seqs, cols.events, cols.sessions, cols.hashes, cols.records
        sealed, seal = cols.seals, self._sealer.seal
        nodes = merkle.StoredNodes()  # the interior hashes these leaves complete, committed with them
        cr = merkle.CompactRange(self._range.size, self._range.edge, on_node=nodes)
        dumps, leaf_hash, grow, log_id = canonical.dumps, merkle.leaf_hash, cr.append, self.log_id
        for item in appends:
            try:
                record = dumps({**item.fields, "v": RECORD_VERSION, "log": log_id, "seq": seq,
                                "time": now, "event": item.event})
            except Exception as exc:  # noqa: BLE001 - a bad value fails its own caller only
                if item.future is not None:
                    failed.append((item.future, ValueError(f"record is not canonical JSON: {exc}")))
                continue
            session = item.fields.get("session")
            h = leaf_hash(record)
            grow(h)
            seqs.append(seq)
            events.append(item.event)
            sessions.append(session if isinstance(session, str) else None)
            hashes.append(h)
            records.append(record)
            sealed.append(seal(seq, h))  # audit/seals.py: what lets the next start tell this row from a forged one
            good.append((item, seq))
            item.seq = seq
            seq += 1
        if not seqs:
            return [], failed
        cols.times.extend(repeat(now, len(seqs)))
        cr.on_node = None
        try:
            self._store.append_columns(self.log_id, cols, nodes.nodes)
        except StoreError as exc:
            self._broken = True
            self._problem = f"the last write failed: {exc}"
            log.error("ledger write failed, failing closed: %s", exc)
            err = LedgerUnavailable("audit ledger store unavailable")
            failed.extend((item.future, err) for item, _ in good if item.future is not None)
            return [], failed
        with self._state_lock:
            self._range = cr
        self._wrote()
        return good, failed

    def _write_owed(self) -> bool:
        """Writer thread: make the follow-ups for records whose callers were told they failed durable."""
        follow_ups = []
        for item in self._owed:
            fields: dict[str, Any] = {"abandoned_seq": item.seq, "abandoned_event": item.event, "reason": item.reason,
                                      "note": "the caller was answered that this record failed before its commit "
                                              "returned; nothing that was to follow this record was done (no "
                                              "request forwarded after a request record, no answer sent after a "
                                              "response record: that call had already run upstream)"}
            session = item.fields.get("session")
            if isinstance(session, str):
                fields["session"] = session
            follow_ups.append(_Append("append.abandoned", fields, None))
        written, _ = self._write(follow_ups)
        if not written:
            return False
        for item, seq in written:
            log.warning("record %s (%s) committed after its caller was refused (%s); follow-up record %d written",
                        item.fields["abandoned_seq"], item.fields["abandoned_event"], item.fields["reason"], seq)
        self._owed.clear()
        return True

    def _resolve(self, results: list[tuple[asyncio.Future[Any], Any]]) -> None:
        def settle() -> None:
            for fut, value in results:
                if fut.done():
                    continue
                if isinstance(value, BaseException):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)

        if self._loop is not None and results:
            try:
                self._loop.call_soon_threadsafe(settle)
            except RuntimeError:  # loop closed
                pass
