"""A lean HTTP/1.1 client for upstream MCP servers: keep-alive pool, one write per request,
incremental response parsing with httptools (the parser uvicorn uses), streamed bodies for SSE.

Why not aiohttp or httpx: measured here against server-everything (`docs/upstream-client.md`),
this client spends a fraction of their CPU per request, and on a shared 2-core machine the
gateway's CPU per request is what separates its throughput from a direct connection's.
It does exactly what the gateway needs — no redirects, cookies, proxies or decompression.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 64  # body chunks queued before the socket stops being read
_LOW_WATER = 8


class H1Error(Exception):
    """The connection failed or the peer spoke broken HTTP."""


class H1Timeout(H1Error):
    """The server took too long; the request may have been processed, so it is never retried."""


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
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

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

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

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


class H1Response:
    __slots__ = ("conn", "reused", "wait_for_data", "status", "raw_headers", "keep_alive", "complete",
                 "started", "_chunks", "_error", "_wakeup", "_released")

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
        breaks mid-body or nothing arrives for `read_timeout` seconds.

        A method, not an async generator: a reader that stops early (the gateway stops at the
        answer it waits for) leaves nothing behind for the event loop to finalize.
        """
        while not self._chunks:
            loop = asyncio.get_running_loop()
            wakeup = self._wakeup = loop.create_future()
            # A plain timer, not asyncio.wait_for: no extra task per chunk on the hot path.
            timer = None if read_timeout is None else loop.call_later(
                read_timeout, _expire, wakeup, f"no data from the server for {read_timeout:g}s")
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
    """Keep-alive connections to one origin; a connection carries one exchange at a time."""

    def __init__(self, url: str, connect_timeout: float = 10.0, unix_socket: str | None = None) -> None:
        self.origin = Origin.of(url)
        #: connect to this Unix socket instead of the URL's host and port (upstream/unix.py)
        self.unix_socket = unix_socket
        # Over a socket, Host carries the port too: servers whose DNS-rebinding guard admits
        # "localhost:*" (the MCP SDKs' default) refuse a bare "localhost".
        self.host_header = (self.origin.host_header if unix_socket is None
                            else f"{self.origin.host}:{self.origin.port}")
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._targets: dict[str, str] = {}  # URL → request target, for URLs already checked to be ours
        self._ssl = ssl.create_default_context() if self.origin.scheme == "https" else None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            if self.unix_socket is not None:
                opening = loop.create_unix_connection(lambda: _Connection(self), self.unix_socket)
            else:
                opening = loop.create_connection(lambda: _Connection(self), self.origin.host, self.origin.port,
                                                 ssl=self._ssl)
            _, conn = await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            where = f"unix:{self.unix_socket}" if self.unix_socket is not None else self.origin.host_header
            raise H1Error(f"cannot connect to {where}: {type(exc).__name__}") from None
        return conn

    def _give_back(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if not conn.closed:
            self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

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
                raise H1Error(f"{url!r} is not on {self.origin.host_header}")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if len(self._targets) < 64:
                self._targets[url] = target
        request = self._request_bytes(method, target, headers, body)
        for attempt in range(2):
            conn, reused = None, False
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed:
                    conn, reused = candidate, True
                    break
            if conn is None:
                conn = await self._connect()
            self._busy.add(conn)
            response = H1Response(conn, reused, wait_for_data)
            conn.start(request, response)
            timer = None if timeout is None else asyncio.get_running_loop().call_later(
                timeout, _expire, response.started, f"no response from {self.origin.host_header} within {timeout:g}s")
            try:
                await response.started
                return response
            except H1Error as exc:
                response.release()
                # A kept-alive connection the server closed just as we reused it: retry once on a
                # fresh one (no response byte was read, and it was not a timeout).
                if reused and attempt == 0 and response.status == 0 and not isinstance(exc, H1Timeout):
                    continue
                raise
            except BaseException:
                response.release()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        raise H1Error("unreachable")  # pragma: no cover

    async def close(self) -> None:
        for conn in list(self._idle) + list(self._busy):
            conn.close()
        self._idle.clear()
        self._busy.clear()
