"""uvicorn's HTTP/1.1 protocol with one change: the writes of one event-loop turn leave as one.

uvicorn writes a response's head and its body with separate `transport.write` calls, and
uvloop sends each at once: two segments, and the client (or a proxy in front of us) is
woken twice for one answer. Handing uvicorn a transport that gathers the writes of the
current loop turn and sends them together at the start of the next makes a JSON answer
one `send()` and one wake-up of the client (about 60 µs off the c=1 median latency in an
alternating comparison here; docs/benchmarks.md).

It also bounds what a client may hold (uvicorn bounds only the idle time between requests):
the request head must arrive within `header_timeout` of the connection or of its first byte,
the body within `body_timeout` of the head, the head is at most `max_header_bytes` long (431),
and at most `max_connections` clients are
connected at once — a slow or silent client (slowloris) is answered 408 and closed, one too
many is answered 503 and closed, so a few hundred of them cannot take every file descriptor.
It stops in order (`DrainingServer`): on SIGTERM the listener stays open while the application
drains — not ready, no new calls, those in flight finish or are cut off, answered and recorded
(`app.Gateway.drain`) — and only then does uvicorn close the listener and the connections. An
open event stream (a GET whose answer has begun and never ends by itself) is then finished — its
chunked body terminated, the connection closed, the application told the client has gone —
instead of holding the shutdown until uvicorn's grace period runs out and cancels it with a
logged traceback; a request still running when that grace period ends is cancelled with one log
line, not a traceback, and answered with a JSON-RPC error (503) if its answer had not begun.
A stateless (2026-07-28) client cancels a call by closing its connection: the application leaves a
callable in the request's scope (`ON_HANGUP`), and a connection lost before the answer is complete
calls it, from `connection_lost`, with no task watching per request (not when the gateway closes
the connection in a graceful shutdown: the drain ends those calls). And it refuses, before any
application code runs, a request whose meaning depends on which of two copies of a header one
reads: two `Host` lines (RFC 9112 §3.2), or two of any header the gateway reads as a single value
(identity, media type, origin, MCP session and routing).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ledgergate.errors import INVALID_REQUEST, RATE_LIMITED, SHUTTING_DOWN


class GatheringTransport(asyncio.Transport):
    """Delegates to the real transport; `write()` is deferred to the end of the loop turn."""

    __slots__ = ("_real", "_loop", "_pending")

    def __init__(self, real: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._real = real
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending = []
            if not self._real.is_closing():
                self._real.write(data)

    def close(self) -> None:
        self._flush()  # what was written before close() still goes out, as with any transport
        self._real.close()

    def abort(self) -> None:
        self._pending = []
        self._real.abort()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._real.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._real.get_protocol()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._real.write_eof()


@dataclass(frozen=True)
class ClientLimits:
    """How long a client may take to send a request, and how many may be connected at once."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 5.0
    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024


#: headers the gateway reads as one value: a second copy makes the request ambiguous
#: (one reader takes the first, another the last), so it is refused with 400
SINGLE_VALUED = frozenset({
    b"host", b"authorization", b"content-type", b"origin",
    b"mcp-session-id", b"mcp-protocol-version", b"mcp-method", b"mcp-name", b"last-event-id",
})

_IDLE, _HEAD, _BODY = 0, 1, 2  # where the current request stands on the wire

#: the ASGI scope key under which an application leaves a callable (no arguments) to be called, once, if the
#: client's connection is lost before the request's answer is complete: how a 2026-07-28 client cancels. A
#: connection lost before the application left one leaves `already_gone` there instead, so an application
#: that finds something else in its place (`dict.setdefault`) knows its client has gone already.
ON_HANGUP = "ledgergate.on_hangup"


def already_gone() -> None:
    """What `ON_HANGUP` holds when the client left before the application was ready to be told."""


log = logging.getLogger("ledgergate.serving")


def _error_response(status: int, code: int, message: str) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: ",
                     str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body])


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    limits = ClientLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._phase = _IDLE
        self._head_bytes = 0  # read while the current request's head is incomplete
        self._deadline: asyncio.TimerHandle | None = None
        self._shutting_down = False
        self.app = self._cancelled_quietly(self.app)

    @classmethod
    def with_limits(cls, limits: ClientLimits) -> type[GatheringHttpToolsProtocol]:
        """The protocol class uvicorn instantiates per connection, carrying these limits."""
        return type("LimitedHttpToolsProtocol", (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(GatheringTransport(transport, self.loop))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, RATE_LIMITED, "too many connections to the gateway; try again later")
            return
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete and not self._shutting_down:
            # The client left before its answer was complete. Looked at here, once per lost connection, rather
            # than by a task per request awaiting `receive()` for `http.disconnect`.
            scope = cast("dict[str, Any]", cycle.scope)
            hangup = scope.pop(ON_HANGUP, None)
            if hangup is None:
                scope[ON_HANGUP] = already_gone
            else:
                try:
                    hangup()
                except Exception:  # a fault there must not break the server's connection handling
                    log.exception("ending a request whose client hung up failed")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The parser keeps a head it has not finished in memory, and httptools sets no bound on it: a
        # client (before any token is checked) could send one header of megabytes. Bytes read while the
        # head is still incomplete are counted, and past `max_header_bytes` the request is refused.
        if self._phase == _HEAD and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, INVALID_REQUEST,
                             f"the request head exceeds {self.limits.max_header_bytes} bytes")
                return
        else:
            self._head_bytes = 0
        # Deadlines are armed here, once per read, rather than per parser event: a request that
        # arrives whole in one read costs no timer at all.
        if self._deadline is not None or self.transport.is_closing():
            return
        if self._phase == _HEAD:
            self._deadline = self.loop.call_later(self.limits.header_timeout, self._timed_out)
        elif self._phase == _BODY:
            self._deadline = self.loop.call_later(self.limits.body_timeout, self._timed_out)
        elif self.timeout_keep_alive_task is None and (self.cycle is None or self.cycle.response_complete):
            # bytes between requests that began none (blank lines): a head is due
            self._deadline = self.loop.call_later(self.limits.header_timeout, self._timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        # A head that arrived whole in one read was never counted by `data_received` (it counts reads that
        # leave the head incomplete): its size is taken from what the parser kept.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse(431, INVALID_REQUEST, f"the request head exceeds {self.limits.max_header_bytes} bytes")
            raise _Refused
        seen: set[bytes] = set()
        for name, _ in self.headers:
            if name in SINGLE_VALUED:
                if name in seen:
                    self._refuse(400, INVALID_REQUEST, f"more than one {name.decode().title()} header")
                    raise _Refused
                seen.add(name)
        if b"host" not in seen and self.parser.get_http_version() == "1.1":
            self._refuse(400, INVALID_REQUEST, "no Host header")  # RFC 9112 §3.2
            raise _Refused
        self._phase = _BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self._phase = _IDLE
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing():  # refused by us already; the parser error is our _Refused
            return
        super().send_400_response(msg)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown, which waits for every connection to close."""
        self._shutting_down = True
        cycle = self.cycle
        if (cycle is not None and cycle.response_started and not cycle.response_complete
                and cycle.scope["method"] == "GET" and not self.transport.is_closing()):
            # An event stream ends only when its client goes: end it as a server does, with the
            # last chunk, and tell the application its client is gone so it closes the stream.
            if cycle.chunked_encoding:
                self.transport.write(b"0\r\n\r\n")
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()
            return
        super().shutdown()

    def _cancelled_quietly(self, app: Any) -> Any:
        async def run(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if not self._shutting_down:
                    raise
                # uvicorn's grace period ran out: the cancellation is the shutdown, not a fault. The calls were
                # drained and answered before (app.Gateway.drain); what is cut here is anything else (a session
                # being opened, a slow body), and it gets a JSON-RPC error, not uvicorn's plain-text 500.
                log.warning("a %s %s still running at the end of the shutdown grace period was cancelled",
                            scope.get("method", ""), scope.get("path", ""))
                cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
                if scope.get("type") == "http" and cycle is not None and not cycle.response_started \
                        and not self.transport.is_closing():
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                        "code": SHUTTING_DOWN, "message": "the gateway shut down before answering this request",
                        "data": {"reason": "shutdown"}}}).encode()
                    try:
                        await send({"type": "http.response.start", "status": 503, "headers": [
                            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
                        await send({"type": "http.response.body", "body": body})
                    except Exception as exc:  # noqa: BLE001 - the client may be gone; nothing more to tell it
                        log.debug("the shutdown's answer could not be sent: %s", type(exc).__name__)
        return run

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        what, limit = ("body", self.limits.body_timeout) if self._phase == _BODY \
            else ("head", self.limits.header_timeout)
        if self._phase == _BODY and self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is under way (the body was refused early): just end it
            return
        if self._phase != _BODY and self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head is late while an answer is being written
            return
        self._refuse(408, INVALID_REQUEST, f"the request {what} did not arrive within {limit:g}s")

    def _refuse(self, status: int, code: int, message: str) -> None:
        """Answer with a JSON-RPC error and close; no application code sees the request."""
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.write(_error_response(status, code, message))
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its shutdown.

    On SIGTERM or SIGINT uvicorn would close the listener at once and give requests a fixed grace period.
    Here `drain` runs first, with the listener still open: the application says not ready and refuses new
    calls with an answer (a client the Service still routes here learns to go elsewhere, rather than
    finding the port closed), and the calls in flight finish or are cut off, answered and recorded
    (`app.Gateway.drain`). Then uvicorn's own shutdown closes the listener and the connections. A second
    signal during the drain ends it at once; a signal after that is uvicorn's (SIGINT then forces the exit,
    skipping the application's orderly stop)."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[Callable[[], bool]], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._draining = False
        self._hurry = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining and not self._hurry:
            self._hurry = True  # read by the drain between its looks at the calls in flight
            return
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        self._draining = True
        try:
            await self._drain(lambda: self._hurry or self.force_exit)
        except Exception:  # the listener and the ledger must still close in order
            log.exception("the drain before shutdown failed")
        finally:
            self._draining = False
        await super().shutdown(sockets)
