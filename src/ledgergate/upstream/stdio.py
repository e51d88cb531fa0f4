"""stdio upstreams: a server launched as a child process, spoken to over its pipes.

One child per upstream session, so users never share a process's state. The
child starts on demand; if it dies, calls in flight fail with a clear error and
the next call starts a fresh child (replaying the client's handshake). stderr
goes to the gateway's log. Messages are newline-delimited JSON (MCP stdio transport).

The server's `timeout` bounds both ends: opening (start, `initialize`, `initialized`) must be
done within it, or the child is stopped and the opening fails; a call fails once the child has
sent nothing for it for that long (`Demux.exchange`), the child staying up for the next call.

A server's `max_processes` bounds how many of its children run at once, across every identity, and
its `max_processes_per_principal` how many of them one identity's sessions run (`ProcessSlots`): a
session holds a slot from just before its child starts until that child has exited, however it ends
(closed, crashed, stopped for an idle session or at shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, Literal

import orjson

from ledgergate.errors import UpstreamError
from ledgergate.upstream.base import (
    MAX_QUOTED_CHARS,
    QUOTE_OVERLAP,
    ClientHello,
    Message,
    initialize_result,
    UpstreamSessionLost,
    mask_quoted,
)
from ledgergate.upstream.base import UpstreamTimeout
from ledgergate.upstream.demux import Demux, DemuxedSession
from ledgergate.wire import jsonrpc

log = logging.getLogger("ledgergate.upstream.stdio")

_STREAM_LIMIT = 64 * 1024 * 1024
#: the most of one stderr line the log keeps (cut after masking)
_STDERR_SHOWN = 2000


#: why `ProcessSlots.take` gave no slot: the config key of the cap that was reached
SlotRefusal = Literal["max_processes", "max_processes_per_principal"]


class ProcessSlots:
    """How many children of one stdio server run now, against its `max_processes` (all of them) and its
    `max_processes_per_principal` (those of one identity's sessions).

    `take` does not await, so on the event loop no two openings racing for the last slot can both get
    it; a slot is taken before the child starts, so children still starting count too."""

    __slots__ = ("_held", "limit", "per_principal", "running")

    def __init__(self, limit: int, per_principal: int | None = None) -> None:
        self.limit = limit
        #: None: no identity has a cap below the server's own
        self.per_principal = limit if per_principal is None else per_principal
        self.running = 0
        #: live children per owner (a principal's `key`); an owner whose count falls to 0 is dropped, so
        #: the map holds only identities running a child now, never every identity ever seen
        self._held: dict[str, int] = {}

    def held_by(self, owner: str) -> int:
        """How many children `owner`'s sessions run now (starting ones included)."""
        return self._held.get(owner, 0)

    def take(self, owner: str | None = None) -> ProcessSlot | SlotRefusal:
        """A slot for one more child of `owner` (None: counted only against `limit`), or the cap that
        refuses it. The identity's own cap is checked first: when both are reached, ending one of its own
        sessions is what lets it open another, so that is what its refusal must say."""
        if owner is not None and self.held_by(owner) >= self.per_principal:
            return "max_processes_per_principal"
        if self.running >= self.limit:
            return "max_processes"
        self.running += 1
        if owner is not None:
            self._held[owner] = self.held_by(owner) + 1
        return ProcessSlot(self, owner)

    def _give_back(self, owner: str | None) -> None:
        self.running -= 1
        if owner is None:
            return
        left = self.held_by(owner) - 1
        if left > 0:
            self._held[owner] = left
        else:
            self._held.pop(owner, None)


class ProcessSlot:
    """One child's place in its server's `ProcessSlots` (and its owner's share of them). `release` may be
    called from every path a child can end by (its exit seen, its session closed, its start failed): only
    the first call counts."""

    __slots__ = ("_owner", "_slots")

    def __init__(self, slots: ProcessSlots, owner: str | None = None) -> None:
        self._slots: ProcessSlots | None = slots
        self._owner = owner

    def release(self) -> None:
        if self._slots is not None:
            self._slots._give_back(self._owner)
            self._slots = None


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """Stop a child: stdin closed, `grace` seconds to exit, then SIGTERM, then SIGKILL; returns once it has exited."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(Exception):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class StdioSession(DemuxedSession):
    era = "handshake"

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None, hello: ClientHello, name: str,
                 redact: Callable[[str], str] | None = None, timeout: float | None = None,
                 slot: ProcessSlot | None = None) -> None:
        self.argv = argv
        #: this session's place under the server's `max_processes`, given back once the child has exited
        self.slot = slot
        self._exit_watch: asyncio.Task[None] | None = None
        #: the server's `timeout`: the bound on opening, and on a call's silence (None: unbounded)
        self.timeout = timeout
        #: masks what the server writes to stderr before it reaches the gateway's log (see `_read_stderr`)
        self.redact = redact
        self.env = env
        self.cwd = cwd
        self.hello = hello
        self.name = name
        self.server_hello: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._demux = Demux(self._write, timeout, f"upstream {name!r}")
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()
        self._alive = False

    @property
    def alive(self) -> bool:
        return self._alive and self._proc is not None and self._proc.returncode is None

    async def open(self) -> None:
        """Start the child and complete the handshake within `timeout`; on any failure (no answer in
        time, a refused or broken answer, the child exiting, the caller giving up) the child is
        stopped before the failure propagates, so a failed opening leaves nothing running."""
        env = {**os.environ, **self.env}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, cwd=self.cwd, limit=_STREAM_LIMIT,
                start_new_session=True,  # a terminal Ctrl-C reaches the gateway, which stops its children in order
            )
        except BaseException as exc:
            # no child runs: it could not be started, or asyncio stopped the one it started when the
            # opening was cancelled
            self._release()
            if isinstance(exc, OSError):
                # the command's path, not its arguments or environment (they may carry secrets)
                raise UpstreamError(f"cannot start upstream {self.name!r}: command {self.argv[0]!r}: "
                                    f"{exc.strerror or type(exc).__name__}") from None
            raise
        # the slot goes back when the child has exited, whatever ended it (a crash included), and not before
        self._exit_watch = asyncio.create_task(self._release_on_exit(self._proc))
        self._alive = True
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]
        try:
            # one bound for the whole handshake (not reset by what the child says meanwhile)
            async with asyncio.timeout(self.timeout) as bound:
                await self._handshake()
        except BaseException as exc:
            # shielded: a caller that gives up (cancellation) must not leave the child running; a
            # child that failed its handshake gets a short grace to exit on the closed stdin
            await asyncio.shield(self.close(grace=0.5))
            if isinstance(exc, UpstreamTimeout) or (isinstance(exc, TimeoutError) and bound.expired()):
                raise UpstreamTimeout(f"upstream {self.name!r} did not complete initialize within "
                                      f"{self.timeout:g}s (the server's timeout); it was stopped") from None
            raise

    async def _handshake(self) -> None:
        request = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": self.hello.initialize_params()}
        final: Message | None = None
        async with aclosing(self._demux.exchange(request, "init", timeout=None)) as messages:
            async for msg in messages:
                final = msg
        self.server_hello = initialize_result(final, f"upstream {self.name!r}")
        await self.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def _write(self, message: Message) -> None:
        if not self.alive or self._proc is None or self._proc.stdin is None:
            raise UpstreamSessionLost(f"upstream process {self.name!r} is not running; it restarts on the next request")
        async with self._write_lock:
            try:
                self._proc.stdin.write(jsonrpc.dumps(message) + b"\n")
                await self._proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                self._alive = False
                raise UpstreamSessionLost(f"upstream process {self.name!r} exited") from None

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            while True:
                line = await self._proc.stdout.readline()
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = jsonrpc.parse(line)
                except orjson.JSONDecodeError:
                    # a line that is JSON but for bytes that are not UTF-8 is read as the HTTP upstreams
                    # read it (SSEParser): with U+FFFD in their place. Dropped, it left its call waiting.
                    try:
                        msg = jsonrpc.parse(line.decode("utf-8", "replace"))
                    except orjson.JSONDecodeError:
                        log.warning("upstream %s wrote a non-JSON line to stdout; dropped", self.name)
                        continue
                if isinstance(msg, dict):
                    self._demux.route(msg)
        except (asyncio.LimitOverrunError, ValueError):
            log.error("upstream %s wrote an oversized line; stopping it", self.name)
        finally:
            self._alive = False
            code = None
            if self._proc is not None:
                with contextlib.suppress(Exception):
                    code = await asyncio.wait_for(self._proc.wait(), 2)
            self._demux.lose(UpstreamSessionLost(
                f"upstream process {self.name!r} exited (code {code}) before answering; it restarts on the next request"
            ))
            if self._proc is not None and self._proc.returncode is None:
                # a child whose stdout ended can never answer again, but one that stays up (an oversized line,
                # stdout closed) held its memory and its `max_processes` slot until its session closed, an
                # idle one's an hour away: it is stopped now (it had those 2s to exit by itself)
                with contextlib.suppress(Exception):
                    await _stop(self._proc, 0)

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                return
            # no more is decoded than masking reads (a character is at most 4 bytes)
            text = line[:4 * (MAX_QUOTED_CHARS + QUOTE_OVERLAP)].decode("utf-8", "replace").rstrip()
            if self.redact is None:
                text = text[:_STDERR_SHOWN]
            else:
                # a server's own log often names what it was asked: arguments, customer numbers. They
                # reach the gateway's log only masked, the whole line before it is shortened (a value cut
                # first would pass masking: `mask_quoted`); a line that cannot be masked is dropped, and
                # the pipe is still drained (a server blocked on a full stderr would stop answering)
                try:
                    text = mask_quoted(text, self.redact, _STDERR_SHOWN)
                except Exception:  # noqa: BLE001
                    text = "(a line that could not be masked was dropped)"
            log.info("upstream %s stderr: %s", self.name, text)

    async def close(self, grace: float = 2.0) -> None:
        """Stop the child: stdin closed, `grace` seconds to exit, then SIGTERM, then SIGKILL."""
        self._alive = False
        proc = self._proc
        if proc is not None:
            await _stop(proc, grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if proc is None or proc.returncode is not None:
            # at once, not when the exit watcher next runs: a session opened right after this one closed
            # finds the slot free
            self._release()

    async def _release_on_exit(self, proc: asyncio.subprocess.Process) -> None:
        try:
            await proc.wait()
        finally:
            # cancelled with the child still running (only as the event loop ends), the slot stays taken:
            # a slot is never given back for a child that may still run
            if proc.returncode is not None:
                self._release()

    def _release(self) -> None:
        if self.slot is not None:
            self.slot.release()
