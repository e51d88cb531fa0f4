"""Legacy HTTP+SSE upstreams (the 2024-11-05 transport), handshake era only.

The server's SSE endpoint (the configured `url`) is opened with GET; its first
event, `endpoint`, names the URL the gateway POSTs messages to. Every reply and
every server-initiated message then arrives on that one SSE stream, so routing
is the same as for a stdio child (see demux.py). The endpoint must stay on the
SSE URL's origin: a server cannot send the gateway's requests elsewhere.

When the stream ends, calls in flight fail with `UpstreamSessionLost`, the
session reports itself dead, and the gateway opens a new one (replaying the
client's handshake) on the next request. Only the server's configured headers
travel upstream, never the client's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson

from ledgergate.errors import UpstreamError
from ledgergate.upstream.base import ClientHello, Message, UpstreamSessionLost, initialize_result
from ledgergate.upstream.base import UpstreamTimeout
from ledgergate.upstream.demux import Demux, DemuxedSession
from ledgergate.upstream.h1 import H1Error, H1Response
from ledgergate.upstream.http import MAX_MESSAGE_BYTES, HttpPool
from ledgergate.wire import jsonrpc
from ledgergate.wire.sse import SSEParser

log = logging.getLogger("ledgergate.upstream.sse")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), f"{(parts.hostname or '').lower()}:{port}"


class SseSession(DemuxedSession):
    era = "handshake"

    def __init__(self, pool: HttpPool, hello: ClientHello, name: str = "") -> None:
        self.pool = pool
        self.hello = hello
        self.name = name
        self.server_hello: dict[str, Any] = {}
        self.endpoint: str | None = None
        # a call fails once the server has sent nothing for it for `timeout` (the stream's own
        # keep-alives and other calls' messages reset nothing: `Demux.exchange`)
        self._demux = Demux(self._write, pool.timeout, f"upstream {name!r}")
        self._response: H1Response | None = None
        self._reader: asyncio.Task[None] | None = None
        self._endpoint_ready: asyncio.Future[str] | None = None
        self._alive = False

    @property
    def alive(self) -> bool:
        return self._alive and not self._demux.lost

    # ── the inbound stream ──────────────────────────────────────────────────
    async def open(self) -> None:
        try:
            self._response = await self.pool.send("GET", {"Accept": "text/event-stream"})
        except UpstreamError as exc:
            raise UpstreamError(f"upstream {self.name!r}: {exc.message}") from None
        ctype = self._response.media_type
        if self._response.status >= 400 or ctype != "text/event-stream":
            status = self._response.status
            self._response.release()
            raise UpstreamError(f"upstream {self.name!r} refused the SSE stream (HTTP {status}, {ctype or 'no type'})")
        self._alive = True
        self._endpoint_ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(self._handshake(), self.pool.timeout)
        except (TimeoutError, UpstreamTimeout):
            await asyncio.shield(self.close())
            raise UpstreamTimeout(f"upstream {self.name!r} did not complete the SSE handshake within "
                                  f"{self.pool.timeout:g}s (the server's timeout)") from None
        except BaseException:
            await asyncio.shield(self.close())  # a caller that gives up must not leave the stream open
            raise

    async def _handshake(self) -> None:
        assert self._endpoint_ready is not None
        self.endpoint = await self._endpoint_ready
        request = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": self.hello.initialize_params()}
        final: Message | None = None
        async for msg in self._demux.exchange(request, "init"):
            final = msg
        self.server_hello = initialize_result(final, f"upstream {self.name!r}")
        await self.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _set_endpoint(self, data: str) -> bool:
        """Accept the `endpoint` event; False when it names another origin (the session is then dropped)."""
        assert self._endpoint_ready is not None
        endpoint = urljoin(self.pool.url, data.strip())
        if _origin(endpoint) != _origin(self.pool.url):
            log.warning("upstream %s named a message endpoint on another origin; refused", self.name)
            if not self._endpoint_ready.done():
                self._endpoint_ready.set_exception(UpstreamError(
                    f"upstream {self.name!r} named a message endpoint on another origin; refused"))
            return False
        if not self._endpoint_ready.done():  # the endpoint is fixed for the life of the stream
            self._endpoint_ready.set_result(endpoint)
        return True

    async def _read(self) -> None:
        assert self._response is not None
        parser = SSEParser()
        reason = "closed its SSE stream"
        try:
            while (chunk := await self._response.next_chunk(None)) is not None:
                if parser.pending > MAX_MESSAGE_BYTES:
                    reason = f"sent an event larger than {MAX_MESSAGE_BYTES} bytes"
                    return
                for event in parser.feed(chunk):
                    if event.event == "endpoint":
                        if not self._set_endpoint(event.data):
                            reason = "named a message endpoint on another origin"
                            return
                        continue
                    if event.event != "message" or not event.data.strip():
                        continue
                    try:
                        msg = jsonrpc.parse(event.data)
                    except orjson.JSONDecodeError:
                        log.warning("upstream %s sent an SSE event that is not JSON; dropped", self.name)
                        continue
                    if isinstance(msg, dict):
                        self._demux.route(msg)
        except H1Error as exc:
            reason = f"SSE stream failed ({exc})"
        finally:
            self._alive = False
            failure = UpstreamSessionLost(
                f"upstream {self.name!r} {reason} before answering; the session is reopened on the next request")
            if self._endpoint_ready is not None and not self._endpoint_ready.done():
                self._endpoint_ready.set_exception(failure)
            self._demux.lose(failure)
            self._response.release()

    # ── outbound: POSTs to the endpoint, answers come on the stream ────────
    async def _write(self, message: Message) -> None:
        if not self.alive or self.endpoint is None:
            raise UpstreamSessionLost(f"upstream {self.name!r} SSE session is gone; it is reopened on the next request")
        try:
            resp = await self.pool.send("POST", {}, message, url=self.endpoint)
        except UpstreamError as exc:
            raise UpstreamError(f"upstream {self.name!r}: {exc.message}") from None
        try:
            if resp.status == 404:
                self._alive = False
                raise UpstreamSessionLost(f"upstream {self.name!r} no longer knows the SSE session")
            if resp.status >= 400:
                raise UpstreamError(f"upstream {self.name!r} refused a message (HTTP {resp.status})")
        finally:
            resp.release()

    async def close(self) -> None:
        self._alive = False
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._response is not None:
            self._response.release()  # unfinished, so the connection is dropped: the server ends the session
