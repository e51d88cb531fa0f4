"""One inbound message stream shared by many calls: stdio pipes and legacy HTTP+SSE upstreams.

Both transports deliver everything the server sends on a single stream, so the
session must sort it out: responses go to the call with that (gateway-issued)
id, progress to the call that owns the progress token, other notifications and
server-to-client requests to the newest call in flight, and anything else to
the listeners (the client's standalone stream). A server request that nobody
can answer is refused so the server does not wait forever.

"The newest call in flight" is a guess the stream's format forces (a stdio
server's `sampling/createMessage` names no request), and it is only made when
every call in flight has one owner (`Call.caller`: one handshake client's
session, or one stateless call). When calls of several owners are in flight
(a principal's stateless clients share this session), a message tied to none
of them is not handed to whichever came last: a server request is refused
(its answer could come from a client whose call it is not about), and a
notification goes to the listeners only.

Progress tokens are rewritten as request ids are: several clients (a principal's
stateless clients) share one session, and each picks its tokens on its own, so
two calls may carry the same one. Towards the server every call's token becomes
one the gateway issued (`_ProgressTokens`); the server's progress goes back to
the call that owns it, under that client's own token, and progress naming no
call in flight is dropped.

The transport supplies `write` (send one message to the server; raise
`UpstreamSessionLost` once the session is gone) and, when its stream ends,
calls `lose()` so calls in flight fail instead of hanging.

A server that is alive but never answers (a lost or misaddressed response, a
hung handler) must not hang a call either: every call has an idle timeout (the
server's `timeout`), reset only by the messages that belong to it (see `exchange`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from ledgergate.errors import UpstreamError
from ledgergate.upstream.base import (
    CALLER,
    IdMap,
    InflightIds,
    Message,
    UpstreamSession,
    UpstreamTimeout,
    rewrite_id,
    strip_modern_meta,
)
from ledgergate.wire import jsonrpc

log = logging.getLogger("ledgergate.upstream")

_CALL_BOUND_REQUESTS = ("sampling/createMessage", "elicitation/create", "roots/list")
PROGRESS = "notifications/progress"


def _key(value: Any) -> str | int | float | None:
    """`value` if it can name a call or a token (a JSON string or number), else None: what an upstream
    or a client sends in an id or a token may be any JSON, and a dict would not even be looked up."""
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


ProgressToken = str | int | float


def _progress_token(request: Message) -> ProgressToken | None:
    """The request's progress token, when it is one (the transport refuses other types; a message the
    gateway builds itself is taken as it is, and anything unhashable is no token)."""
    params = request.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return _key(meta.get("progressToken")) if isinstance(meta, dict) else None


def _with_progress_token(message: Message, token: ProgressToken) -> Message:
    """`message` with `token` in place of its progress token (a request's, in `params._meta`; a progress
    notification's, in `params`), copied where it changes: the caller's message is the call's record."""
    params = message["params"]
    if message.get("method") == PROGRESS:
        return {**message, "params": {**params, "progressToken": token}}
    return {**message, "params": {**params, "_meta": {**params["_meta"], "progressToken": token}}}


class _ProgressTokens:
    """Gateway-issued progress token → (the call in flight that owns it, its client's own token).

    The clients sharing a session choose their tokens alone, so two calls in flight may carry the same
    one; sent on as they came, the server's progress for either was read as the other's (a client saw
    another's progress under its own token) and the first call to end unrouted the other's. Each call
    is given a token of the gateway's instead, never reused in the session: a token nobody owns any more
    (the call ended, the server is late or wrong) names nothing, not a later call. Entries live exactly
    as long as their call (`Demux.exchange` releases them however it ends), so an idle session holds none.
    """

    __slots__ = ("_counter", "_owners")

    #: what the gateway's tokens start with (strings: no number a client or a server sends equals one)
    PREFIX = "ledgergate-progress-"

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._owners: dict[str, tuple[Any, ProgressToken]] = {}

    def issue(self, upstream_id: Any, original: ProgressToken) -> str:
        token = f"{self.PREFIX}{next(self._counter)}"
        self._owners[token] = (upstream_id, original)
        return token

    def release(self, token: str) -> None:
        self._owners.pop(token, None)

    def owner(self, token: Any) -> tuple[Any, ProgressToken] | None:
        """(upstream id, client's token) of the call `token` was issued for, None when no call in flight has it."""
        return self._owners.get(token) if isinstance(token, str) else None

    def __len__(self) -> int:
        return len(self._owners)


class Demux:
    """`timeout`: how long a call may go without a message of its own before it fails (None: no bound);
    `who` names the upstream in the failure ("upstream 'files'")."""

    def __init__(self, write: Callable[[Message], Awaitable[None]], timeout: float | None = None,
                 who: str = "upstream") -> None:
        self._write = write
        self.timeout = timeout
        self.who = who
        self._ids = IdMap()
        self._inflight = InflightIds()
        self._calls: dict[Any, asyncio.Queue[Message | BaseException]] = {}
        self._order: list[Any] = []
        self._owners: dict[Any, Any] = {}  # upstream id → who sent the call (`call`'s owner); see `route`
        self._progress = _ProgressTokens()
        self._listeners: list[asyncio.Queue[Message | None]] = []
        self._lost: BaseException | None = None
        self._background: set[asyncio.Future[None]] = set()

    # ── inbound ─────────────────────────────────────────────────────────────
    def route(self, msg: Message) -> None:
        if "method" not in msg:  # a response to one of our requests
            queue = self._calls.get(_key(msg.get("id")))
            if queue is not None:
                queue.put_nowait(msg)
            return
        problem = jsonrpc.relay_problem(msg)
        if problem is not None:  # neither a request, nor a notification, nor an answer: dropped
            log.warning("%s sent a message with %s; dropped", self.who, problem)
            return
        # A notification or server request: progress goes to the call that owns the token;
        # anything else belongs to the newest call in flight, or to the listeners.
        owner = None
        if msg["method"] == PROGRESS:
            params = msg.get("params")
            owned = self._progress.owner(params.get("progressToken") if isinstance(params, dict) else None)
            if owned is not None:
                owner, original = owned
                msg = _with_progress_token(msg, original)  # the client's own token, its own type
            elif "id" not in msg:
                # late (its call has ended) or naming a token the gateway never issued (a client's own,
                # another session's): no call in flight asked for it. The log does not quote the token:
                # it is the server's text, and the log is not masked.
                log.info("%s sent progress for a token no call in flight owns; dropped", self.who)
                return
        elif "id" not in msg or msg["method"] in _CALL_BOUND_REQUESTS:
            owner = self._newest_if_unambiguous()
            if owner is None and self._order and "id" in msg:
                log.info("%s sent a %s request naming no call while calls of several clients are in flight; "
                         "refused", self.who, msg["method"] if msg["method"] in _CALL_BOUND_REQUESTS else "server")
                self._refuse(msg, "the gateway cannot tell which of several calls in flight this request is "
                                  "about (it names none of them), so no client is asked")
                return
        if owner is not None and owner in self._calls:
            self._calls[owner].put_nowait(msg)
            return
        for listener in self._listeners:
            listener.put_nowait(msg)
        if "id" in msg and not self._listeners:
            # A server request nobody can answer: tell the server instead of leaving it hanging.
            self._refuse(msg, "no client is connected to answer this request")

    def _newest_if_unambiguous(self) -> Any:
        """The newest call in flight, when every call in flight has the same owner; else None."""
        order = self._order
        if not order:
            return None
        owners = self._owners
        newest = order[-1]
        mine = owners.get(newest)
        if any(owners.get(u) != mine for u in order):
            return None
        return newest

    def _refuse(self, request: Message, why: str) -> None:
        self._spawn(self._safe_write({"jsonrpc": "2.0", "id": request["id"], "error": {
            "code": -32601, "message": why}}))

    def _spawn(self, write: Awaitable[None]) -> None:
        future = asyncio.ensure_future(write)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def lose(self, failure: BaseException) -> None:
        """The inbound stream ended: every call in flight (and every later one) fails with `failure`."""
        if self._lost is None:
            self._lost = failure
        for queue in self._calls.values():
            queue.put_nowait(failure)
        for listener in self._listeners:
            listener.put_nowait(None)

    @property
    def lost(self) -> bool:
        return self._lost is not None

    async def _safe_write(self, message: Message) -> None:
        with contextlib.suppress(UpstreamError):
            await self._write(message)

    # ── outbound ────────────────────────────────────────────────────────────
    async def exchange(self, request: Message, upstream_id: Any,
                       timeout: float | None = None) -> AsyncGenerator[Message, None]:
        """Send `request` (already carrying `upstream_id`); yield what belongs to it, ending with its response.

        A progress token in `request` goes out as one the gateway issued for this call, held only while the
        call runs; the call's progress comes back with the request's own token (`_ProgressTokens`).

        Raises `UpstreamTimeout` when `timeout` seconds (the demultiplexer's own when None) pass
        without a message for this call. It is an idle timeout, reset by every message routed to
        the call (a progress notification, a log message, a server request), as the MCP SDKs do for
        progress (`resetTimeoutOnProgress`): a long call that says what it is doing is alive, and a
        total bound would fail exactly those. What goes to other calls or to the listeners resets
        nothing: it says that the server is up, not that it works on this call. The clock runs
        while the call waits for the server (writing the request included: a child that stops
        reading its stdin blocks the write), never while the caller handles a message. A call that
        waits on a server request its client has not answered yet waits within the same bound,
        as it did over Streamable HTTP.
        """
        if self._lost is not None:
            raise self._lost
        idle = self.timeout if timeout is None else timeout
        queue: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        original = _progress_token(request)
        token: str | None = None
        try:
            self._calls[upstream_id] = queue
            self._order.append(upstream_id)
            if original is not None:
                # the server sees a token of the gateway's (`_ProgressTokens`); `route` gives the client its own
                token = self._progress.issue(upstream_id, original)
                request = _with_progress_token(request, token)
            try:
                async with asyncio.timeout(idle) as bound:
                    await self._write(request)
                    item = await queue.get()
                while True:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
                    if "method" not in item:
                        return
                    bound = asyncio.timeout(idle)
                    async with bound:
                        item = await queue.get()
            except TimeoutError:
                if not bound.expired():
                    raise
                raise UpstreamTimeout(f"{self.who} sent nothing for this call within {idle:g}s (the server's "
                                      "timeout); it may still be running there") from None
        finally:
            self._calls.pop(upstream_id, None)
            with contextlib.suppress(ValueError):
                self._order.remove(upstream_id)
            if token is not None:
                self._progress.release(token)

    async def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        """`UpstreamSession.call`: a fresh upstream id out, the caller's id restored on the response."""
        owner = CALLER.get() if owner is None else owner
        original_id = request["id"]
        upstream_id = self._ids.next()
        self._inflight.add(owner, original_id, upstream_id)
        self._owners[upstream_id] = owner
        try:
            exchange = self.exchange(rewrite_id(strip_modern_meta(request), upstream_id), upstream_id)
            async with aclosing(exchange) as messages:
                async for msg in messages:
                    yield rewrite_id(msg, original_id) if "method" not in msg else msg
        except UpstreamTimeout:
            # what an MCP client does when it gives up on a request: tell the server, which can stop
            # the work (in the background: the write may block on the very server that stopped reading)
            self._spawn(self._safe_write({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
                "requestId": upstream_id, "reason": "the gateway timed out waiting for the answer"}}))
            raise
        finally:
            self._inflight.discard(owner, original_id, upstream_id)
            self._owners.pop(upstream_id, None)

    def outbound(self, notification: Message, owner: str | None = None) -> Message | None:
        """`UpstreamSession.outbound`: a cancellation only with the upstream id of a call `owner` has in flight."""
        return self._inflight.translate_cancel(strip_modern_meta(notification), owner)

    async def notify(self, notification: Message, owner: str | None = None) -> bool:
        message = self.outbound(notification, owner)
        if message is None:
            log.info("%s: a cancellation naming no call of this client's in flight was not sent", self.who)
            return False
        await self._write(message)
        return True

    async def reply(self, response: Message) -> None:
        await self._write(response)

    async def listen(self) -> AsyncGenerator[Message, None]:
        if self._lost is not None:
            return
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._listeners.remove(queue)


class DemuxedSession(UpstreamSession):
    """An upstream session whose traffic arrives on one inbound stream (stdio, legacy SSE): the
    demultiplexer does the talking; subclasses own the stream."""

    _demux: Demux

    def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        return self._demux.call(request, owner)

    def outbound(self, notification: Message, owner: str | None = None) -> Message | None:
        return self._demux.outbound(notification, owner)

    async def notify(self, notification: Message, owner: str | None = None) -> bool:
        return await self._demux.notify(notification, owner)

    async def reply(self, response: Message) -> None:
        await self._demux.reply(response)

    def listen(self, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        return self._demux.listen()
