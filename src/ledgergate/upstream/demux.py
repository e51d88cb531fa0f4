"""One inbound message stream shared by many calls: stdio pipes and legacy HTTP+SSE upstreams.

Both transports deliver everything the server sends on a single stream, so the
session must sort it out: responses go to the call with that (gateway-issued)
id, progress to the call that owns the progress token, other notifications and
server-to-client requests to the newest call in flight, and anything else to
the listeners (the client's standalone stream). A server request that nobody
can answer is refused so the server does not wait forever.

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


def _key(value: Any) -> str | int | float | None:
    """`value` if it can name a call or a token (a JSON string or number), else None: what an upstream
    or a client sends in an id or a token may be any JSON, and a dict would not even be looked up."""
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _progress_token(request: Message) -> str | int | float | None:
    """The request's progress token, when it is one (the transport refuses other types; a message the
    gateway builds itself is taken as it is, and anything unhashable is no token)."""
    params = request.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return _key(meta.get("progressToken")) if isinstance(meta, dict) else None


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
        self._progress: dict[Any, Any] = {}
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
        params = msg.get("params")
        owner = None
        if msg["method"] == "notifications/progress":
            owner = self._progress.get(_key(params.get("progressToken") if isinstance(params, dict) else None))
        elif "id" not in msg or msg["method"] in _CALL_BOUND_REQUESTS:
            owner = self._order[-1] if self._order else None
        if owner is not None and owner in self._calls:
            self._calls[owner].put_nowait(msg)
            return
        for listener in self._listeners:
            listener.put_nowait(msg)
        if "id" in msg and not self._listeners:
            # A server request nobody can answer: tell the server instead of leaving it hanging.
            self._spawn(self._safe_write({"jsonrpc": "2.0", "id": msg["id"], "error": {
                "code": -32601, "message": "no client is connected to answer this request"}}))

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
        token = _progress_token(request)
        try:
            self._calls[upstream_id] = queue
            self._order.append(upstream_id)
            if token is not None:
                self._progress[token] = upstream_id
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
                self._progress.pop(token, None)

    async def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        """`UpstreamSession.call`: a fresh upstream id out, the caller's id restored on the response."""
        owner = CALLER.get() if owner is None else owner
        original_id = request["id"]
        upstream_id = self._ids.next()
        self._inflight.add(owner, original_id, upstream_id)
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
