"""`ledgergate audit siem`: stream verified ledger records to a SIEM as JSON lines.

Each line is a record's canonical JSON exactly as it was hashed into the ledger, so the SIEM side
can recompute its leaf hash. Records leave a checkpoint's worth at a time, only once the signed
checkpoint vouches for them (`audit/siem.py`); with `--state` the position reached in every log
is saved after each batch is delivered, and the next run goes on from there.

Exit codes: 0 done, 1 a record or checkpoint failed verification (nothing after it was emitted),
2 usage, config, storage, state file or delivery error.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console
from rich.markup import escape

from ledgergate.audit.checkpoint import Verifier
from ledgergate.audit.siem import (
    Cursor,
    SiemError,
    VerifiedRecord,
    dump_state,
    export_log,
    octet_counted,
    parse_state,
    resume,
    signed_checkpoints,
    start_at,
    syslog_message,
)
from ledgergate.commands.audit import check_interval, output_problem
from ledgergate.commands.common import ConfigOption, load_or_exit, shown
from ledgergate.commands.ledger_files import verifier_of
from ledgergate.numbers import parse_uint
from ledgergate.store.ledger_store import (
    LedgerStore,
    StoreError,
    open_existing_ledger_store,
)

err = Console(stderr=True, highlight=False, soft_wrap=True)

#: a syslog datagram larger than this does not fit one UDP packet
MAX_DATAGRAM = 65000


class SinkError(Exception):
    """A record could not be delivered; the saved position stays before it."""


class LineSink:
    """JSON lines to stdout or appended to a file (fsynced per batch, before the state is saved)."""

    def __init__(self, target: str) -> None:
        self.name = "stdout" if target == "-" else target
        try:
            self._fh: BinaryIO = sys.stdout.buffer if target == "-" else open(target, "ab")  # noqa: SIM115
        except OSError as exc:
            raise SinkError(f"cannot open {target}: {exc.strerror}") from None
        self._is_file = target != "-"

    def write(self, records: Sequence[VerifiedRecord]) -> None:
        try:
            self._fh.write(b"".join([r.record + b"\n" for r in records]))
            self._fh.flush()
            if self._is_file:
                os.fsync(self._fh.fileno())
        except BrokenPipeError:
            # the reader went away (`-o - | head -1`): not a delivery failure but the end, which the CLI's
            # entry point answers for every verb alike (exit 141, silently); the saved position stays
            # before this batch
            raise
        except OSError as exc:
            raise SinkError(f"writing to {self.name}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._is_file:
            self._fh.close()


class SyslogSink:
    """RFC 5424 messages over `udp://HOST:PORT`, `tcp://HOST:PORT` (RFC 6587 octet counting) or
    `unix:///dev/log` (a local datagram socket)."""

    def __init__(self, address: str) -> None:
        self.name = address
        self._hostname = socket.gethostname()
        self._pid = os.getpid()
        scheme, sep, rest = address.partition("://")
        if not sep or scheme not in ("udp", "tcp", "unix"):
            raise SinkError(f"--syslog {address!r}: use udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH")
        self._stream = scheme == "tcp"
        try:
            if scheme == "unix":
                if not rest.startswith("/"):
                    raise SinkError(f"--syslog {address!r}: unix:// needs an absolute path")
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.connect(rest)
                return
            host, _, port_text = rest.rpartition(":")
            host = host.strip("[]")
            port = parse_uint(port_text, 5)
            if not host or port is None:
                raise SinkError(f"--syslog {shown(address)}: expected {scheme}://HOST:PORT")
            if not 1 <= port <= 65535:  # a port the system would take modulo 65536, or refuse as "Connection refused"
                raise SinkError(f"--syslog {shown(address)}: invalid port {port} (a port is 1-65535)")
            if self._stream:
                self._sock = socket.create_connection((host, port), timeout=10)
            else:
                family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                self._sock = socket.socket(family, kind, proto)
                self._sock.connect(addr)
        except OSError as exc:
            raise SinkError(f"--syslog {address}: {exc.strerror or exc}") from None

    def write(self, records: Sequence[VerifiedRecord]) -> None:
        try:
            for rec in records:
                message = syslog_message(rec, self._hostname, self._pid)
                if self._stream:
                    self._sock.sendall(octet_counted(message))
                elif len(message) > MAX_DATAGRAM:
                    raise SinkError(f"record {rec.seq} is {len(message)} bytes, too large "
                                    "for one syslog datagram; use tcp://")
                else:
                    self._sock.send(message)
        except OSError as exc:
            raise SinkError(f"syslog {self.name}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._sock.close()


MAX_INDEX = (1 << 63) - 1  # a record's index is a BIGINT in the store


def _positions(values: list[str]) -> dict[str | None, int]:
    """`--from N` (every log) or `--from LOG=N` (one log), repeatable."""
    out: dict[str | None, int] = {}
    for value in values:
        log_id, sep, number = value.rpartition("=")
        # ASCII digits only: str.isdigit() also takes '²' and '٣', which int() then refuses or reads
        if not (number.isascii() and number.isdigit()) or (sep and not log_id):
            raise typer.BadParameter(f"{shown(value)}: expected a record index N or LOG=N", param_hint="--from")
        if int(number) > MAX_INDEX:
            raise typer.BadParameter(f"{shown(value)}: a record index is at most {MAX_INDEX}", param_hint="--from")
        out[log_id if sep else None] = int(number)
    return out


def _check_logs(store: LedgerStore, positions: dict[str | None, int]) -> None:
    """Every LOG named by `--from LOG=N` is a log of the store (not ignored while every log is exported)."""
    logs = [log_id for log_id, _ in store.logs()]
    unknown = sorted(log_id for log_id in positions if log_id is not None and log_id not in logs)
    if unknown:
        listed = ", ".join(logs[:10]) + (", …" if len(logs) > 10 else "") if logs else "none"
        raise typer.BadParameter(f"no log {shown(unknown[0])} in the store (its logs: {listed})", param_hint="--from")


def _save_state(path: Path, cursors: dict[str, Cursor]) -> None:
    """Atomically: the old state stays whole until the new one is durable."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(dump_state(cursors))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)




def _load_cursors(state: Path | None) -> dict[str, Cursor]:
    if state is None or not state.exists():
        return {}
    try:
        return parse_state(state.read_bytes())
    except (OSError, ValueError) as exc:
        err.print(f"[red]error[/red] state file {escape(str(state))}: {escape(str(exc))}")
        raise typer.Exit(2) from None


def _round(store: LedgerStore, verifier: Verifier, cursors: dict[str, Cursor], positions: dict[str | None, int],
           sinks: Sequence[LineSink | SyslogSink], state: Path | None, quiet: bool) -> int:
    """One pass over every log; returns how many records were delivered."""
    delivered = 0
    for log_id, origin in store.logs():
        signed = signed_checkpoints(store.checkpoints(log_id), log_id, origin, verifier)
        cursor = cursors.get(log_id)
        if cursor is None:
            cursor = start_at(store, log_id, origin, positions.get(log_id, positions.get(None, 0)), signed)
            if cursor is None:
                if not quiet:
                    err.print(f"log {escape(log_id)}: shorter than the position asked for; nothing to emit yet")
                continue
        elif cursor.origin != origin:
            raise SiemError(f"log {log_id}: the state file says origin {cursor.origin!r}, the ledger {origin!r}")
        else:
            resume(cursor, signed)
        cursors[log_id] = cursor
        emitted = 0
        for batch in export_log(store, cursor, signed):
            for sink in sinks:
                sink.write(batch.records)
            cursors[log_id] = cursor = batch.cursor
            emitted += len(batch.records)
            if state is not None:
                _save_state(state, cursors)
        delivered += emitted
        if not quiet:
            newer = max(0, store.count(log_id) - cursor.next)  # rows, not MAX(seq): one forged seq says anything
            err.print(f"log {escape(log_id)}: {emitted} record(s) emitted, verified up to the signed checkpoint at "
                      f"size {cursor.next}" + (f"; {newer} newer record(s) wait for the next checkpoint" if newer else ""))
    return delivered


def siem(
    config: Path = ConfigOption,
    from_: list[str] = typer.Option([], "--from", help="Start at record index N of every log, or LOG=N for one log."),
    state: Path | None = typer.Option(None, "--state", help="Resume from, and save the position reached to, this file."),
    output: str | None = typer.Option(None, "--output", "-o", help="Append JSON lines to FILE, or '-' for stdout "
                                      "(the default when --syslog is not given)."),
    syslog: str | None = typer.Option(None, "--syslog", help="Also send each record as an RFC 5424 message to "
                                      "udp://HOST:PORT, tcp://HOST:PORT or unix:///dev/log."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep going: emit each new checkpoint's records."),
    interval: float = typer.Option(2.0, help="Seconds between polls with --follow."),
    public_key: Path | None = typer.Option(None, "--public-key",
                                           help="Verifier key file (default: <signing_key>.pub from the config)."),
) -> None:
    """Stream verified records as JSON lines (stdout, file, syslog), resumable; a bad record stops it (exit 1)."""
    if from_ and state is not None:
        err.print("[red]error[/red] --from and --state exclude each other: a state file says where to go on from")
        raise typer.Exit(2)
    positions = _positions(from_)
    check_interval(interval)
    if state is not None and output_problem(state) is not None:
        err.print(f"[red]error[/red] --state: {escape(str(output_problem(state)))}")
        raise typer.Exit(2)
    loaded = load_or_exit(config)
    verifier = verifier_of(loaded, public_key)
    cursors = _load_cursors(state)
    sinks: list[LineSink | SyslogSink] = []
    try:
        if output is not None or syslog is None:
            sinks.append(LineSink(output or "-"))
        if syslog is not None:
            sinks.append(SyslogSink(syslog))
    except SinkError as exc:
        for sink in sinks:
            sink.close()
        err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        store = open_existing_ledger_store(loaded.settings.storage, loaded.base_dir)  # never a new one
    except (StoreError, ValueError) as exc:
        for sink in sinks:
            sink.close()
        err.print(f"[red]error[/red] storage: {escape(str(exc))}")
        raise typer.Exit(2) from None
    code = 0
    try:
        _check_logs(store, positions)
    except (typer.BadParameter, StoreError) as exc:
        store.close()
        for sink in sinks:
            sink.close()
        if isinstance(exc, typer.BadParameter):
            raise
        err.print(f"[red]error[/red] storage: {escape(str(exc))}")
        raise typer.Exit(2) from None
    try:
        while True:
            _round(store, verifier, cursors, positions, sinks, state, quiet=follow)
            if not follow:
                break
            time.sleep(interval)
    except SiemError as exc:
        err.print(f"[red]FAIL[/red] {escape(str(exc))}; nothing from there on was emitted")
        code = 1
    except (SinkError, StoreError) as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}; the saved position stays before the undelivered records")
        code = 2
    except BrokenPipeError:
        raise  # stdout closed: `ledgergate.cli.main` exits 141 silently, as for every verb
    except OSError as exc:
        err.print(f"[red]error[/red] state file {escape(str(state))}: {escape(exc.strerror or str(exc))}")
        code = 2
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
        for sink in sinks:
            sink.close()
    raise typer.Exit(code)
