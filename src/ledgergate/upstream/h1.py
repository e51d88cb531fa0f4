"""A lean HTTP/1.1 client for upstream MCP servers: keep-alive pool, one write per request,
incremental response parsing with httptools (the parser uvicorn uses), streamed bodies for SSE.

Why not aiohttp or httpx: measured here against server-everything (`docs/upstream-client.md`),
this client spends a fraction of their CPU per request, and on a shared 2-core machine the
gateway's CPU per request is what separates its throughput from a direct connection's.
It does exactly what the gateway needs — no redirects, cookies, proxies or decompression.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from ledgergate.identity.redact import redact_url

_HIGH_WATER = 64  # body chunks queued before the socket stops being read
_LOW_WATER = 8


class H1Error(Exception):
    """The connection failed or the peer spoke broken HTTP."""


class H1Timeout(H1Error):
    """The server took too long; the request may have been processed (nothing is ever sent twice)."""


def _expire(waiter: asyncio.Future[None], message: str) -> None:
    # the error is built only when a timer fires, not for every request that might time out
    if not waiter.done():
        waiter.set_exception(H1Timeout(message))


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # its text is about the port or brackets, never the URL's userinfo
            raise ValueError(f"not a usable http(s) URL: {redact_url(url)!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {redact_url(url)!r}")  # no userinfo, no query
        return cls(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.response: H1Response | None = None
        # One parser per connection: llhttp starts over after each complete message.
        self._parser = httptools.HttpResponseParser(self)
        self._paused = False
        self.idle_since = 0.0  # loop time it was last handed back to the pool
        self._idle_check: select.poll | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            try:  # one poll object per connection: the check before each reuse is then one syscall
                self._idle_check = select.poll()
                self._idle_check.register(sock.fileno(), select.POLLIN)
            except (OSError, ValueError):
                self._idle_check = None

    def data_received(self, data: bytes) -> None:
        if self.response is None or self.response.complete:
            self._fail(H1Error("the server sent data nobody asked for"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(H1Error("the server tried to upgrade the connection"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, H1Error) else H1Error(f"malformed HTTP response: {exc}"))
        except httptools.HttpParserError as exc:
            self._fail(H1Error(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)  # noqa: SLF001
        if self.response is not None and not self.response.complete:
            self.response._fail(H1Error("the server closed the connection"))  # noqa: SLF001

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.response is None or self.response.complete:
            # a second response on the wire for one request: stop parsing (feed_data raises)
            raise H1Error("the server sent a response nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status = self._parser.get_status_code()
        self.response.keep_alive = self._parser.should_keep_alive()
        if not self.response.wait_for_data and not self.response.started.done():
            self.response.started.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._push(body)  # noqa: SLF001
        if len(self.response._chunks) > _HIGH_WATER and self.transport is not None and not self._paused:  # noqa: SLF001
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.complete = True
        self.response._push(None)  # noqa: SLF001

    # ours
    def start(self, request: bytes, response: H1Response) -> None:
        self.response = response
        assert self.transport is not None
        self.transport.write(request)

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, exc: Exception) -> None:
        # a response already read whole stays good; the connection is not trusted again
        if self.response is not None and not self.response.complete:
            self.response._fail(exc)  # noqa: SLF001
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        """True when an idle connection can carry the next request.

        Checked before anything is written, because afterwards nothing may be retried: the
        server may have acted on the request. An idle connection has no answer due, so a
        readable socket means the server closed it (EOF) or sent bytes nobody asked for — the
        event loop may not have run to notice either yet. This is httpcore's check, with
        poll() instead of select() so descriptors above 1023 work too.
        """
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if self._idle_check is None:
            return True
        try:
            return not self._idle_check.poll(0)
        except OSError:
            return False


class H1Response:
    __slots__ = ("conn", "reused", "wait_for_data", "status", "raw_headers", "keep_alive", "complete",
                 "started", "_chunks", "_error", "_wakeup", "_released", "_quiet_until", "_heard")

    def __init__(self, conn: _Connection, reused: bool, wait_for_data: bool = False) -> None:
        self.conn = conn
        self.reused = reused
        #: `started` waits for the first body bytes (or the end) as well as the head
        self.wait_for_data = wait_for_data
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.complete = False
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: deque[bytes | None] = deque()
        self._error: Exception | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._released = False
        #: when the read timeout expires (loop time), set by the first timed read and by each message
        self._quiet_until: float | None = None
        #: the reader found a message since the last read (`heard`): the next read starts a new quiet period
        self._heard = False

    def header(self, name: bytes) -> str:
        """One header by its lower-case name ("" when absent); the gateway reads two or three of a
        response's headers, so none is decoded unless asked for."""
        for key, value in self.raw_headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return ""

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower-cased ("" when absent)."""
        return self.header(b"content-type").split(";")[0].strip().lower()

    def _push(self, chunk: bytes | None) -> None:
        self._chunks.append(chunk)
        if self.wait_for_data and not self.started.done() and self._error is None:
            self.started.set_result(None)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        if not self.started.done():
            self.started.set_exception(exc)
        self._push(None)

    async def next_chunk(self, read_timeout: float | None = None) -> bytes | None:
        """The next body chunk as it arrives, None at the end; raises H1Error if the connection
        breaks mid-body, H1Timeout if no *message* arrives for `read_timeout` seconds.

        The read timeout is an idle timeout reset only by what shows that the call is alive: a
        message, which the reader that parses the body says it found (`heard`: in an event stream an
        event with data — a progress notification, a log message, the answer); a body no one calls
        `heard` for (one JSON message or batch) is bounded as a whole. Comments (`: ping`), events
        without data and the bytes of a message still incomplete reset nothing. A keep-alive says only that the server's process is up,
        not that it works on the call: a server that pings every second and never answers would
        otherwise hold the call and its connection (one of `limits.upstream_connections`) forever,
        and a server trickling one event byte by byte would do the same. Messages do reset it, as
        the MCP SDKs' `resetTimeoutOnProgress` does for progress: a long call that reports its
        progress is alive. The clock runs while the caller waits for data, from its first timed
        read and again from its next read after a message (the caller's own time handling a message
        is not the server's silence).

        A method, not an async generator: a reader that stops early (the gateway stops at the
        answer it waits for) leaves nothing behind for the event loop to finalize.
        """
        loop = asyncio.get_running_loop()
        if read_timeout is not None and (self._heard or self._quiet_until is None):
            self._quiet_until = loop.time() + read_timeout
            self._heard = False
        while not self._chunks:
            wakeup = self._wakeup = loop.create_future()
            # A plain timer, not asyncio.wait_for: no extra task per chunk on the hot path.
            timer = None if self._quiet_until is None or read_timeout is None else loop.call_at(
                self._quiet_until, _expire, wakeup, f"no message from the server for {read_timeout:g}s")
            try:
                await wakeup
            finally:
                if timer is not None:
                    timer.cancel()
        chunk = self._chunks.popleft()
        if len(self._chunks) < _LOW_WATER:
            self.conn.resume()
        if chunk is None:
            self._chunks.appendleft(None)  # the end stays the end for any later call
            if self._error is not None:
                raise self._error
        return chunk

    def heard(self) -> None:
        """The reader found a message in what it was handed: the read timeout starts afresh."""
        self._heard = True

    def overdue(self) -> bool:
        """No message within the read timeout, though chunks kept coming: chunks already queued are
        handed out without waiting, so a server that floods keep-alives is timed out by the reader
        that finds no message in them, not by the timer."""
        quiet = self._quiet_until
        return quiet is not None and not self._heard and asyncio.get_running_loop().time() >= quiet

    async def read(self, read_timeout: float | None = None, limit: int | None = None) -> bytes:
        """The whole body; H1Error beyond `limit` bytes (a server cannot exhaust the gateway's memory)."""
        parts: list[bytes] = []
        size = 0
        while (chunk := await self.next_chunk(read_timeout)) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                raise H1Error(f"the response exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Hand the connection back for reuse if the exchange finished cleanly, else close it."""
        if self._released:
            return
        self._released = True
        conn = self.conn
        conn.response = None
        if self.complete and self.keep_alive and self._error is None and not conn.closed:
            conn.pool._give_back(conn)  # noqa: SLF001
        else:
            conn.close()
            conn.pool._forget(conn)  # noqa: SLF001


class H1Pool:
    """Keep-alive connections to one origin; a connection carries one exchange at a time.

    At most `max_connections` are open at once (idle, busy or connecting); a request that finds
    them all busy waits its turn for up to `pool_timeout` seconds, then fails without having
    been sent. A connection idle for `keepalive_expiry` seconds is closed: kept below the
    common server defaults (5 s in Node and uvicorn), so the pool lets go of a connection
    before the server does, not while a request is being written to it.
    """

    def __init__(self, url: str, connect_timeout: float = 10.0, max_connections: int | None = None,
                 keepalive_expiry: float = 4.0, pool_timeout: float = 30.0, unix_socket: str | None = None) -> None:
        self.origin = Origin.of(url)
        #: connect to this Unix socket instead of the URL's host and port (upstream/unix.py)
        self.unix_socket = unix_socket
        # Over a socket, Host carries the port too: servers whose DNS-rebinding guard admits
        # "localhost:*" (the MCP SDKs' default) refuse a bare "localhost".
        self.host_header = (self.origin.host_header if unix_socket is None
                            else f"{self.origin.host}:{self.origin.port}")
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.pool_timeout = pool_timeout
        self._idle: list[_Connection] = []  # oldest first; reuse takes the newest
        self._busy: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._targets: dict[str, str] = {}  # URL → request target, for URLs already checked to be ours
        self._ssl = ssl.create_default_context() if self.origin.scheme == "https" else None

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy) + self._opening

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            if self.unix_socket is not None:
                opening = loop.create_unix_connection(lambda: _Connection(self), self.unix_socket)
            else:
                opening = loop.create_connection(lambda: _Connection(self), self.origin.host, self.origin.port,
                                                 ssl=self._ssl)
            _, conn = await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self._opening -= 1
            self._wake()  # its place is free again
            where = f"unix:{self.unix_socket}" if self.unix_socket is not None else self.origin.host_header
            raise H1Error(f"cannot connect to {where}: {type(exc).__name__}") from None
        except BaseException:
            self._opening -= 1
            self._wake()
            raise
        self._opening -= 1  # the caller counts it as busy before it yields again
        return conn

    def _take_idle(self) -> _Connection | None:
        """The newest idle connection that can carry a request; the unusable ones are closed."""
        now = asyncio.get_running_loop().time() if self._idle else 0.0
        while self._idle:
            candidate = self._idle.pop()
            if now - candidate.idle_since < self.keepalive_expiry and candidate.reusable():
                return candidate
            candidate.close()
        return None

    async def _acquire(self) -> tuple[_Connection, bool]:
        """A connection for one exchange (and whether it was kept alive), counted as busy."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            conn = self._take_idle()
            if conn is not None:
                self._busy.add(conn)
                return conn, True
            if self.max_connections is None or self.open_connections < self.max_connections:
                conn = await self._connect()
                self._busy.add(conn)
                return conn, False
            waiter = loop.create_future()
            if deadline is None:
                deadline = loop.time() + self.pool_timeout
                self._waiters.append(waiter)
            else:  # woken, but a newcomer took the place first: keep our turn
                self._waiters.appendleft(waiter)
            remaining = deadline - loop.time()
            timer = loop.call_later(max(remaining, 0.0), _expire, waiter, "")
            try:
                await waiter
            except H1Timeout:
                raise H1Error(f"all {self.max_connections} connections to {self.origin.host_header} are in use "
                              f"and none came free within {self.pool_timeout:g}s (limits.upstream_connections); "
                              "the request was not sent") from None
            except BaseException:
                # woken and cancelled at once: pass the turn on, or a free place goes unused
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake()
                raise
            finally:
                timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        """A place came free (a connection went idle or away): the longest waiter tries again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _give_back(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if not conn.closed:
            loop = asyncio.get_running_loop()
            conn.idle_since = loop.time()
            self._idle.append(conn)
            if self._sweep is None:
                self._sweep = loop.call_later(self.keepalive_expiry, self._expire_idle)
        self._wake()

    def _expire_idle(self) -> None:
        """Close the connections idle for keepalive_expiry; come back for the next one due."""
        self._sweep = None
        now = asyncio.get_running_loop().time()
        while self._idle and now - self._idle[0].idle_since >= self.keepalive_expiry:
            self._idle.pop(0).close()
        if self._idle:
            due = self._idle[0].idle_since + self.keepalive_expiry - now
            self._sweep = asyncio.get_running_loop().call_later(due, self._expire_idle)

    def _forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake()

    def _request_bytes(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        # exactly one CR and one LF per header line, or a name or value carried a line break
        # (header injection); one count over the block instead of four tests per header
        if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
            raise H1Error("a header name or value contains a line break")
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n{fields}{length}\r\n"
        return head.encode("latin-1") + body if body else head.encode("latin-1")

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None,
                      timeout: float | None = None, wait_for_data: bool = False) -> H1Response:
        """Send a request and wait for the response head; the body is read from the returned response.

        With `wait_for_data`, wait until the first body bytes (or the end of the body) are in too:
        an MCP server's answer usually follows its head at once, and returning with both saves the
        caller a second wake-up per call. Not for streams whose head precedes a long silence (GET).
        """
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if Origin.of(url) != self.origin:
                raise H1Error(f"{redact_url(url)!r} is not on {self.origin.host_header}")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if len(self._targets) < 64:
                self._targets[url] = target
        request = self._request_bytes(method, target, headers, body)
        conn, reused = await self._acquire()
        response = H1Response(conn, reused, wait_for_data)
        conn.start(request, response)
        # From here the request may reach the server, which may act on it (a POST can move
        # money): nothing below sends it again (RFC 9110 §9.2.2). A connection that could not
        # carry it was found out above, before any byte was written.
        timer = None if timeout is None else asyncio.get_running_loop().call_later(
            timeout, _expire, response.started, f"no response from {self.origin.host_header} within {timeout:g}s")
        try:
            await response.started
            return response
        except H1Error as exc:
            response.release()
            if response.status == 0 and not isinstance(exc, H1Timeout):
                raise H1Error(f"{exc} before answering; the request may have been processed, "
                              "so it was not sent again") from None
            raise
        except BaseException:
            response.release()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._idle) + list(self._busy):
            conn.close()
        self._idle.clear()
        self._busy.clear()
