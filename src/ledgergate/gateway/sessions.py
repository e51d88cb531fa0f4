"""Gateway-issued sessions for handshake-era clients, and upstream sessions for stateless ones.

A session id is a 256-bit random value the gateway issues at `initialize`; it is
bound to the principal that opened it, so a leaked id is useless to anyone else.
Each gateway session owns at most one upstream session, reopened transparently
(with the client's original handshake) after the upstream lost it.

Streams a session sends to its client are kept as `EventStream`s with
numbered events, so a client that lost its connection can resume with
`Last-Event-ID` and miss nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ledgergate.errors import (
    RATE_LIMITED,
    SESSION_NOT_FOUND,
    ForbiddenError,
    GatewayError,
)
from ledgergate.principal import Principal
from ledgergate.numbers import parse_uint
from ledgergate.upstream.base import ClientHello, Message, UpstreamSession
from ledgergate.upstream.registry import Upstream

if TYPE_CHECKING:
    from ledgergate.gateway.call import Call


#: What a client hears for a session id this process does not hold: it may have expired or been
#: closed, or it lived in another replica that has since gone (sessions are not shared between
#: replicas). Either way the remedy is the MCP one: initialize again, without the old id.
UNKNOWN_SESSION = ("session not found: it expired, was closed, or was opened on a gateway replica that is "
                   "no longer serving it; send initialize without Mcp-Session-Id to start a new session")


class SessionNotFound(GatewayError):
    http_status = 404
    rpc_code = SESSION_NOT_FOUND


class ForeignSession(ForbiddenError):
    """A session id presented by an identity other than the one that opened it (recorded by the transport)."""

    def __init__(self, session_id: str, server: str) -> None:
        super().__init__("this session belongs to another identity")
        self.session_id = session_id
        self.server = server


class TooManySessions(GatewayError):
    http_status = 429
    rpc_code = RATE_LIMITED


class EventStream:
    """An append-only list of SSE events for one response stream, readable from any position."""

    MAX_EVENTS = 2000

    def __init__(self, stream_no: int) -> None:
        self.stream_no = stream_no
        self.events: list[tuple[int, bytes]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._first_seq = 0

    def append(self, payload: bytes) -> str:
        seq = self._first_seq + len(self.events)
        self.events.append((seq, payload))
        if len(self.events) > self.MAX_EVENTS:
            drop = len(self.events) - self.MAX_EVENTS
            self.events = self.events[drop:]
            self._first_seq += drop
        self._wake()
        return f"{self.stream_no}-{seq}"

    @property
    def next_seq(self) -> int:
        return self._first_seq + len(self.events)

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def read_from(self, seq: int):  # noqa: ANN201 - async generator of (event_id, payload)
        """Events with sequence >= seq, waiting for new ones until the stream closes."""
        while True:
            start = max(seq - self._first_seq, 0)
            for s, payload in self.events[start:]:
                yield f"{self.stream_no}-{s}", payload
                seq = s + 1
            if self.closed and seq >= self._first_seq + len(self.events):
                return
            waiter = self._changed
            if seq < self._first_seq + len(self.events):
                continue
            await waiter.wait()


class InFlight:
    """One client request of a session in flight, as a cancellation of it must find it.

    `task` is the task driving the call right now (None while the call is handed to its reader between
    two of its messages); `call` the call (its current round) as the pipeline carries it, whose request
    id its records name; `progress_token` what the client's progress notifications for it carry. `cancel()` is the gateway
    ending the call for the client (`Bridge.client_notification`): it marks the call and interrupts the
    task where it waits, whether that is for the upstream's first message, for a JSON answer, or on a
    stream; the call itself then records its outcome as cancelled and answers -32800.
    """

    __slots__ = ("call", "cancelled", "done", "interrupted", "progress_token", "task")

    def __init__(self, progress_token: Any = None) -> None:
        self.call: Call | None = None
        self.progress_token = progress_token
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        #: the task `cancel()` interrupted (its CancelledError is this cancellation, not another's)
        self.interrupted: asyncio.Task[Any] | None = None
        self.done = False

    def cancel(self) -> None:
        if self.done or self.cancelled:
            return
        self.cancelled = True
        if self.task is not None:
            self.interrupted = self.task
            self.task.cancel()


class GatewaySession:
    """One client session: who opened it, its upstream session, and whatever it has in flight.

    Ten thousand of these may be open at once, most of them idle between calls, so an idle session
    holds only its identity, its (shared) hello and its upstream session: slots instead of an
    instance dict, and the collections for streams, pending answers and listeners are made the first
    time something needs them.
    """

    __slots__ = ("id", "server", "principal_key", "hello", "upstream", "created", "last_used",
                 "upstream_session", "protocol_version", "standalone", "legacy_outbox",
                 "_streams", "_waiting", "_relayed", "_running", "_listeners", "_pump", "_stream_counter",
                 "_lock")

    MAX_STREAMS = 64
    MAX_BACKLOG = 1000

    def __init__(self, id: str, server: str, principal_key: str, hello: ClientHello,  # noqa: A002
                 upstream: Upstream, protocol_version: str = "") -> None:
        self.id = id
        self.server = server
        self.principal_key = principal_key
        self.hello = hello
        self.upstream = upstream
        self.created = self.last_used = time.time()
        self.upstream_session: UpstreamSession | None = None
        self.protocol_version = protocol_version
        self.standalone: EventStream | None = None
        self.legacy_outbox: EventStream | None = None
        self._streams: OrderedDict[int, EventStream] | None = None
        self._waiting: dict[Any, asyncio.Future[Message]] | None = None
        self._relayed: set[Any] | None = None
        self._running: dict[Any, InFlight] | None = None
        #: one upstream listener feeds every local one (a server may allow one GET stream per session)
        self._listeners: set[asyncio.Queue[Message | None]] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._stream_counter = 0
        self._lock: asyncio.Lock | None = None

    @property
    def streams(self) -> OrderedDict[int, EventStream]:
        """The session's resumable response streams (the newest MAX_STREAMS)."""
        if self._streams is None:
            self._streams = OrderedDict()
        return self._streams

    @property
    def waiting(self) -> dict[Any, asyncio.Future[Message]]:
        """Answers the client owes for requests the gateway synthesized (bridging a stateless upstream)."""
        if self._waiting is None:
            self._waiting = {}
        return self._waiting

    @property
    def relayed(self) -> set[Any]:
        """Ids of server requests relayed from the upstream, awaiting the client's answer."""
        if self._relayed is None:
            self._relayed = set()
        return self._relayed

    @property
    def running(self) -> dict[Any, InFlight]:
        """Client request id → the client's call in flight under it (so a cancellation can end it, and
        only a call of this client's: ids are this session's)."""
        if self._running is None:
            self._running = {}
        return self._running

    async def upstream_session_ready(self) -> UpstreamSession:
        """The upstream session, (re)opened with the client's handshake if needed."""
        current = self.upstream_session
        if current is not None and current.alive:
            return current
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.upstream_session is None or not self.upstream_session.alive:
                if self.upstream_session is not None:
                    with contextlib.suppress(Exception):
                        await self.upstream_session.close()
                # the child of a stdio server counts against this session's identity's share of them
                # (`max_processes_per_principal`), its shared 2026-07-28 session's included
                self.upstream_session = await self.upstream.open_session(self.hello, owner=self.principal_key)
            return self.upstream_session

    async def subscribe(self) -> asyncio.Queue[Message | None]:
        """A queue of what the server sends outside any call; None marks the end of the upstream stream."""
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        if self._listeners is None:
            self._listeners = set()
        self._listeners.add(queue)
        if self._pump is None or self._pump.done():
            upstream = await self.upstream_session_ready()
            self._pump = asyncio.create_task(self._run_pump(upstream))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Message | None]) -> None:
        if self._listeners is None:
            return
        self._listeners.discard(queue)
        if not self._listeners and self._pump is not None:
            self._pump.cancel()
            self._pump = None

    async def _run_pump(self, upstream: UpstreamSession) -> None:
        listeners = self._listeners if self._listeners is not None else set()
        try:
            async for item in upstream.listen():
                for queue in list(listeners):
                    if queue.qsize() >= self.MAX_BACKLOG:  # a listener that stopped reading is cut off
                        listeners.discard(queue)
                        queue.put_nowait(None)
                    else:
                        queue.put_nowait(item)
        finally:
            for queue in list(listeners):
                queue.put_nowait(None)

    def new_stream(self) -> EventStream:
        self._stream_counter += 1
        stream = EventStream(self._stream_counter)
        self.streams[stream.stream_no] = stream
        while len(self.streams) > self.MAX_STREAMS:
            self.streams.popitem(last=False)
        return stream

    def find_event(self, last_event_id: str) -> tuple[EventStream, int] | None:
        stream_text, _, seq_text = last_event_id.partition("-")
        stream_no, seq = parse_uint(stream_text), parse_uint(seq_text)
        if stream_no is None or seq is None:
            return None
        stream = self.streams.get(stream_no)
        if stream is None:
            return None
        return stream, seq + 1

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for fut in (self._waiting or {}).values():
            if not fut.done():
                fut.set_exception(SessionNotFound("the session was closed"))
        for stream in (self._streams or {}).values():
            stream.close()
        if self.legacy_outbox is not None:
            self.legacy_outbox.close()
        if self.upstream_session is not None:
            with contextlib.suppress(Exception):
                await self.upstream_session.close()


class SessionRegistry:
    """In-memory sessions of this replica, plus upstream sessions shared by stateless clients."""

    def __init__(self, idle_timeout: float = 3600.0, max_per_principal: int = 64) -> None:
        self.idle_timeout = idle_timeout
        self.max_per_principal = max_per_principal
        self._sessions: dict[str, GatewaySession] = {}
        self._shared: dict[tuple[str, str], GatewaySession] = {}
        #: open sessions per principal key, kept with `_sessions` (counting them at every open was
        #: quadratic in the number of open sessions)
        self._held: dict[str, int] = {}

    def create(self, server: str, principal: Principal, hello: ClientHello, upstream: Upstream) -> GatewaySession:
        # interned: every session of a principal (and of a server) points at one string, not a copy per request
        key = sys.intern(principal.key)
        held = self._held.get(key, 0)
        if held >= self.max_per_principal:
            raise TooManySessions(
                f"this identity already holds {held} open sessions (the limit); end one with DELETE or let it "
                "expire before opening another")
        session_id = secrets.token_urlsafe(32)
        session = GatewaySession(id=session_id, server=sys.intern(server), principal_key=key, hello=hello,
                                 upstream=upstream, protocol_version=hello.protocol_version)
        self._sessions[session_id] = session
        self._held[key] = held + 1
        return session

    def _forget(self, session_id: str) -> GatewaySession | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            left = self._held.get(session.principal_key, 1) - 1
            if left > 0:
                self._held[session.principal_key] = left
            else:
                self._held.pop(session.principal_key, None)
        return session

    def get(self, session_id: str, server: str, principal: Principal) -> GatewaySession:
        session = self._sessions.get(session_id)
        if session is None or session.server != server:
            raise SessionNotFound(UNKNOWN_SESSION)
        if session.principal_key != principal.key:
            raise ForeignSession(session_id, server)
        session.last_used = time.time()
        return session

    def peek_shared(self, server: str, principal: Principal) -> GatewaySession | None:
        """The principal's shared session if one exists (nothing is created)."""
        return self._shared.get((server, principal.key))

    def shared_for(self, server: str, principal: Principal, upstream: Upstream, hello: ClientHello) -> GatewaySession:
        """The per-principal upstream session a stateless (2026-07-28) client's calls use."""
        key = (server, principal.key)
        session = self._shared.get(key)
        if session is None:
            session = GatewaySession(id="", server=server, principal_key=principal.key, hello=hello, upstream=upstream)
            self._shared[key] = session
        session.last_used = time.time()
        return session

    async def remove(self, session_id: str) -> GatewaySession | None:
        session = self._forget(session_id)
        if session is not None:
            await session.close()
        return session

    async def expire_idle(self, now: float | None = None) -> list[GatewaySession]:
        now = time.time() if now is None else now
        expired = [s for s in self._sessions.values() if now - s.last_used > self.idle_timeout]
        for s in expired:
            self._forget(s.id)
            await s.close()
        for key, s in list(self._shared.items()):
            if now - s.last_used > self.idle_timeout:
                self._shared.pop(key, None)
                await s.close()
        return expired

    def __len__(self) -> int:
        return len(self._sessions)

    async def close(self) -> None:
        for s in list(self._sessions.values()) + list(self._shared.values()):
            await s.close()
        self._sessions.clear()
        self._shared.clear()
        self._held.clear()
