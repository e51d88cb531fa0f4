"""Streamable HTTP upstreams (both protocol eras) over one keep-alive pool per server.

The client's credentials never travel upstream: every request is built from the
server's configured headers only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from mcp.shared.inbound import encode_header_value

from ledgergate.errors import UpstreamError
from ledgergate.upstream.base import (
    CALLER,
    MODERN_VERSION,
    ClientHello,
    IdMap,
    UpstreamTimeout,
    initialize_result,
    InflightIds,
    Message,
    UpstreamSession,
    UpstreamSessionLost,
    add_modern_meta,
    drop_cancel,
    rewrite_id,
    strip_modern_meta,
)
from ledgergate.upstream.h1 import H1Error, H1Pool, H1Response, H1Timeout
from ledgergate.upstream.unix import is_unix_url, parse_unix_url
from ledgergate.wire import jsonrpc
from ledgergate.wire.sse import SSEParser

log = logging.getLogger("ledgergate.upstream")

_ACCEPT = "application/json, text/event-stream"
#: the largest single JSON-RPC message accepted from an upstream (a server cannot exhaust the gateway's memory)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: the largest HTTP error body whose JSON-RPC error message is quoted (read whole or not at all: a body cut
#: short is not JSON, so no partial message is ever quoted)
MAX_ERROR_BODY = 64 * 1024
_NAME_FIELD = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class HttpPool:
    """The keep-alive pool for one upstream URL, plus the server's configured headers."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float, limit: int = 100,
                 keepalive_expiry: float = 4.0, pool_timeout: float = 30.0) -> None:
        unix = parse_unix_url(url) if is_unix_url(url) else None
        # over a Unix socket, requests are built from the equivalent http://localhost URL
        self.url = unix.http_url if unix is not None else url
        self.headers = {**headers}
        self.timeout = timeout
        self._h1 = H1Pool(self.url, max_connections=limit, keepalive_expiry=keepalive_expiry,
                          pool_timeout=pool_timeout, unix_socket=unix.socket_path if unix is not None else None)
        self._hello: dict[str, Any] | None = None

    def shared_hello(self, hello: dict[str, Any]) -> dict[str, Any]:
        """The server's `initialize` result, one object for all sessions while the server says the same.

        A server answers every session's `initialize` alike (server-everything's is 8 KB parsed, with
        its instructions), and the gateway only reads it, so sessions share the last one that is equal.
        """
        if hello != self._hello:
            self._hello = hello
        return self._hello

    def build_headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"Accept": _ACCEPT, "Content-Type": "application/json", **self.headers}
        headers.update(extra)
        return headers

    async def send(self, method: str, extra: Mapping[str, str], body: Message | None = None,
                   url: str | None = None, headers: Mapping[str, str] | None = None,
                   wait_for_data: bool = False) -> H1Response:
        """One request; the response head is awaited (with `wait_for_data`, its first body bytes too),
        the body is read by the caller (then `release()`)."""
        payload = jsonrpc.dumps(body) if body is not None else None
        all_headers = dict(headers) if headers is not None else self.build_headers(extra)
        if payload is None:
            all_headers.pop("Content-Type", None)
        try:
            return await self._h1.request(method, url or self.url, all_headers, payload, self.timeout, wait_for_data)
        except H1Error as exc:
            raise UpstreamError(f"upstream server: {exc}") from None

    async def post(self, body: Message, extra: Mapping[str, str]) -> H1Response:
        return await self.send("POST", extra, body, wait_for_data=True)

    async def close(self) -> None:
        await self._h1.close()


class Messages:
    """Every JSON-RPC message in a response body, JSON or SSE, as an async iterator.

    A class rather than an async generator: callers stop at the answer they wait for, and an
    unfinished generator would be left for the event loop to finalize with a task of its own.
    """

    __slots__ = ("_done", "_parser", "_ready", "_resp", "_timeout")

    def __init__(self, resp: H1Response, read_timeout: float | None) -> None:
        media_type = resp.media_type
        if media_type not in ("application/json", "text/event-stream"):
            raise UpstreamError(f"upstream answered with unexpected content type {media_type or 'none'!r}")
        self._resp = resp
        self._timeout = read_timeout
        self._ready: deque[Message] = deque()
        self._done = False
        # None: a JSON body, read whole (one message or a batch)
        self._parser = SSEParser() if media_type == "text/event-stream" else None

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Message:
        message = await self.next()
        if message is None:
            raise StopAsyncIteration
        return message

    async def next(self) -> Message | None:
        """The next message, None at the end of the body."""
        try:
            while not self._ready:
                if self._done:
                    return None
                if self._parser is None:
                    self._done = True
                    payload = jsonrpc.parse(await self._resp.read(self._timeout, MAX_MESSAGE_BYTES))
                    messages = payload if isinstance(payload, list) else [payload]
                    if not all(isinstance(m, dict) for m in messages):  # `false`, `[1]`: a hostile server
                        raise UpstreamError("upstream answered with JSON that is not a JSON-RPC message")
                    self._ready.extend(messages)
                    continue
                chunk = await self._resp.next_chunk(self._timeout)
                if chunk is None:
                    self._done = True
                    continue
                if self._parser.pending > MAX_MESSAGE_BYTES:
                    raise UpstreamError(f"upstream sent an event larger than {MAX_MESSAGE_BYTES} bytes")
                heard = False
                for event in self._parser.feed(chunk):
                    if event.event != "message" or not event.data.strip():
                        continue
                    heard = True  # a message, even one dropped below: the server works on the call
                    try:
                        message = jsonrpc.parse(event.data)
                    except orjson.JSONDecodeError:
                        log.warning("upstream sent an SSE event that is not JSON; dropped")
                        continue
                    if isinstance(message, dict):
                        self._ready.append(message)
                    else:
                        log.warning("upstream sent an SSE event that is not a JSON-RPC message; dropped")
                if heard:
                    self._resp.heard()  # the read timeout (an idle one) starts afresh
                elif self._timeout is not None and self._resp.overdue():
                    raise H1Timeout(f"no message from the server for {self._timeout:g}s")
        except H1Timeout as exc:
            raise UpstreamTimeout(f"upstream sent no message for {self._timeout:g}s (the server's timeout): "
                                  f"{exc}") from None
        except H1Error as exc:
            raise UpstreamError(f"upstream connection failed: {exc}") from None
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream answered with a body that is not JSON") from None
        return self._ready.popleft()


async def _error_text(resp: H1Response) -> str:
    """The JSON-RPC error message of an HTTP error answer, whole: it is masked before anyone sees it and
    shortened only then (`Pipeline.masked_error`); cut here, a value at the cut would pass masking. A
    body past `MAX_ERROR_BODY` is not read (and not quoted)."""
    try:
        data = jsonrpc.parse(await resp.read(5.0, MAX_ERROR_BODY))
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("message", ""))
    except Exception:  # noqa: BLE001 - only for a friendlier message
        pass
    return ""


def _session_lost(status: int, text: str) -> bool:
    """Whether an error answer says the server no longer knows the session: 404, as the transport spec
    says, or a 400 whose message is about the session id, as the TypeScript SDK's servers answer
    (server-everything among them, after a restart: "Bad Request: No valid session ID provided").
    Either way the request was not run, so the session is reopened for the next one."""
    return status == 404 or (status == 400 and "session" in text.lower())


class HttpHandshakeSession(UpstreamSession):
    """An initialized session with a handshake-era Streamable HTTP server.

    Opening costs one round trip: `initialize` is awaited, `notifications/initialized` is sent
    without waiting for its 202, and every later message of the session waits for it first, so the
    server still sees them in the handshake's order. Thousands may be open, so the session keeps
    slots, shares the server's hello (`HttpPool.shared_hello`) and makes its in-flight map on first use.
    """

    __slots__ = ("pool", "hello", "session_id", "protocol_version", "server_hello", "_next_id", "_inflight",
                 "_alive", "_initialized")

    era = "handshake"

    def __init__(self, pool: HttpPool, hello: ClientHello) -> None:
        self.pool = pool
        self.hello = hello
        self.session_id: str | None = None
        self.protocol_version = hello.initialize_params()["protocolVersion"]
        self.server_hello: dict[str, Any] = {}
        self._next_id = 0
        self._inflight: InflightIds | None = None
        self._alive = False
        #: `notifications/initialized` on its way; what follows in this session waits for it
        self._initialized: asyncio.Task[None] | None = None

    async def open(self) -> None:
        request = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": self.hello.initialize_params()}
        resp = await self.pool.post(request, {})
        try:
            if resp.status >= 400:
                raise UpstreamError(f"upstream refused initialize (HTTP {resp.status}) {await _error_text(resp)}".strip())
            final = None
            async for msg in Messages(resp, self.pool.timeout):
                if msg.get("id") == 0 and "method" not in msg:
                    final = msg
                    break
        finally:
            resp.release()
        self.server_hello = self.pool.shared_hello(initialize_result(final, "upstream"))
        self.protocol_version = self.server_hello.get("protocolVersion", self.protocol_version)
        self.session_id = resp.header(b"mcp-session-id") or None
        self._alive = True
        task = asyncio.get_running_loop().create_task(self._send_initialized())
        task.add_done_callback(self._initialized_sent)
        self._initialized = task

    def _initialized_sent(self, task: asyncio.Task[None]) -> None:
        # sent: nothing waits any more (an idle session keeps no finished task); failed: the
        # session's next request raises it (and the failure counts as seen)
        if task.cancelled() or task.exception() is None:
            if self._initialized is task:
                self._initialized = None

    async def _send_initialized(self) -> None:
        try:
            await self._post_no_reply({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except BaseException:
            self._alive = False  # the handshake is incomplete: the next request opens a new session
            raise

    async def _handshake_done(self) -> None:
        """Wait until the server has `notifications/initialized` (a failure is raised here, once per waiter)."""
        task = self._initialized
        if task is None:
            return
        try:
            await asyncio.shield(task)  # a cancelled call must not cancel the session's handshake
        finally:
            if task.done():
                self._initialized = None

    def _headers(self) -> dict[str, str]:
        headers = {"MCP-Protocol-Version": self.protocol_version}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    @property
    def alive(self) -> bool:
        return self._alive

    async def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        owner = CALLER.get() if owner is None else owner
        await self._handshake_done()
        original_id = request["id"]
        self._next_id += 1
        upstream_id = self._next_id
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = InflightIds()
        inflight.add(owner, original_id, upstream_id)
        try:
            resp = await self.pool.post(rewrite_id(strip_modern_meta(request), upstream_id), self._headers())
        except BaseException:
            inflight.discard(owner, original_id, upstream_id)
            if not inflight.ids and self._inflight is inflight:
                self._inflight = None
            raise
        try:
            if resp.status >= 400:
                text = await _error_text(resp)
                if self.session_id and _session_lost(resp.status, text):
                    self._alive = False
                    lost = UpstreamSessionLost("the upstream server lost the session; it is reopened on the next "
                                               "request")
                    lost.unprocessed = True  # refused for its session id, before any answer: it did not run
                    raise lost
                raise UpstreamError(f"upstream answered HTTP {resp.status} {text}".strip())
            async for msg in Messages(resp, self.pool.timeout):
                if "method" not in msg:
                    if msg.get("id") == upstream_id:
                        yield rewrite_id(msg, original_id)
                        return
                    _unasked(msg)
                    continue
                if _relayable(msg):
                    yield msg
            raise UpstreamError("upstream closed the response stream before answering")
        finally:
            inflight.discard(owner, original_id, upstream_id)
            if not inflight.ids and self._inflight is inflight:
                self._inflight = None  # an idle session keeps no map
            resp.release()

    async def _post_no_reply(self, message: Message) -> None:
        resp = await self.pool.post(message, self._headers())
        try:
            if resp.status >= 400:
                text = await _error_text(resp)
                if self.session_id and _session_lost(resp.status, text):
                    self._alive = False
                    raise UpstreamSessionLost("the upstream server lost the session")
                raise UpstreamError(f"upstream answered HTTP {resp.status}")
        finally:
            resp.release()

    def outbound(self, notification: Message, owner: str | None = None) -> Message | None:
        """A cancellation goes out only with the upstream id of a call `owner` has in flight (`InflightIds`);
        with no call in flight at all (no map) it names nothing here."""
        return drop_cancel(strip_modern_meta(notification), owner, self._inflight)

    async def notify(self, notification: Message, owner: str | None = None) -> bool:
        await self._handshake_done()
        message = self.outbound(notification, owner)
        if message is None:
            log.info("a cancellation naming no call of this client's in flight upstream was not sent")
            return False
        await self._post_no_reply(message)
        return True

    async def reply(self, response: Message) -> None:
        await self._handshake_done()
        await self._post_no_reply(response)

    async def listen(self, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        await self._handshake_done()
        extra = {**self._headers(), "Accept": "text/event-stream"}
        if last_event_id:
            extra["Last-Event-ID"] = last_event_id
        resp = await self.pool.send("GET", extra)
        try:
            if resp.status == 405:
                return  # the server offers no standalone stream
            if resp.status >= 400:
                raise UpstreamError(f"upstream refused the event stream (HTTP {resp.status})")
            async for msg in Messages(resp, None):
                if "method" not in msg or _relayable(msg):
                    yield msg
        except UpstreamError:
            return  # the stream broke; the client reconnects
        finally:
            resp.release()

    async def close(self) -> None:
        if self._initialized is not None:
            with contextlib.suppress(BaseException):
                await self._handshake_done()
        if not self._alive or not self.session_id:
            return
        self._alive = False
        try:
            resp = await self.pool.send("DELETE", self._headers())
            resp.release()
        except UpstreamError:
            pass


def _relayable(msg: Message) -> bool:
    """Whether a message with a `method` is a request or notification that may be relayed; one that is
    not (`jsonrpc.relay_problem`: a `method` beside a `result`, an id that is no id) is dropped here."""
    problem = jsonrpc.relay_problem(msg)
    if problem is None:
        return True
    log.warning("upstream sent a message with %s; dropped", problem)
    return False


def _unasked(msg: Message) -> None:
    """A response on a call's stream to a request this call did not make: dropped. Taken as the call's
    answer it was recorded as the call's outcome and sent to a client that never asked for it, and the
    real answer after it was lost."""
    # the id is the server's own text, and the log is not masked: only its kind is said
    log.warning("upstream sent a response to a request it was not asked on this stream (an id of type %s); "
                "dropped", type(msg.get("id")).__name__)


class HttpModernSession(UpstreamSession):
    """A stateless 2026-07-28 server: every request stands alone and carries the client's envelope."""

    era = "modern"

    def __init__(self, pool: HttpPool, hello: ClientHello, discover: dict[str, Any]) -> None:
        self.pool = pool
        self.hello = hello
        self.server_hello = discover
        self._ids = IdMap()

    def _headers(self, request: Message) -> dict[str, str]:
        method = request.get("method", "")
        headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
        field = _NAME_FIELD.get(method)
        if field:
            name = (request.get("params") or {}).get(field)
            if isinstance(name, str):
                headers["Mcp-Name"] = encode_header_value(name)
        return headers

    async def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        original_id = request["id"]
        upstream_id = self._ids.next()
        body = rewrite_id(add_modern_meta(request, self.hello), upstream_id)
        resp = await self.pool.post(body, self._headers(body))
        try:
            if resp.status >= 400 and "json" not in resp.media_type:
                raise UpstreamError(f"upstream answered HTTP {resp.status}")
            async for msg in Messages(resp, self.pool.timeout):
                if "method" not in msg:
                    if msg.get("id") in (upstream_id, None):
                        yield rewrite_id(msg, original_id)
                        return
                    _unasked(msg)
                    continue
                if _relayable(msg):
                    yield msg
            raise UpstreamError("upstream closed the response stream before answering")
        finally:
            resp.release()

    def outbound(self, notification: Message, owner: str | None = None) -> Message | None:
        return None  # 2026-07-28 defines no client-to-server notifications over HTTP

    async def notify(self, notification: Message, owner: str | None = None) -> bool:
        return False

    async def reply(self, response: Message) -> None:
        raise UpstreamError("a stateless server cannot receive replies; use input responses")

    async def listen(self, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        request = {"jsonrpc": "2.0", "id": "listen", "method": "subscriptions/listen",
                   "params": {"notifications": {"toolsListChanged": True, "promptsListChanged": True,
                                                "resourcesListChanged": True}}}
        body = add_modern_meta(request, self.hello)
        resp = await self.pool.post(body, self._headers(body))
        try:
            if resp.status >= 400:
                return
            async for msg in Messages(resp, None):
                if "method" in msg and _relayable(msg):
                    yield msg
        except UpstreamError:
            return
        finally:
            resp.release()

    async def close(self) -> None:
        return None


async def discover(pool: HttpPool) -> dict[str, Any] | None:
    """The server's `server/discover` result if it speaks 2026-07-28, else None (handshake era)."""
    hello = ClientHello()
    request = add_modern_meta({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {}}, hello)
    resp = await pool.post(request, {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": "server/discover"})
    try:
        if resp.status >= 400:
            return None
        async for msg in Messages(resp, pool.timeout):
            if msg.get("id") == 0 and isinstance(msg.get("result"), dict):
                result = msg["result"]
                if MODERN_VERSION in (result.get("supportedVersions") or []):
                    return result
                return None
    except (orjson.JSONDecodeError, UpstreamError):
        return None
    finally:
        resp.release()
    return None
