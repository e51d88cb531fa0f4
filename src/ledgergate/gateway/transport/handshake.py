"""MCP 2024-11-05 … 2025-11-25, the handshake revisions: `initialize` opens a gateway session
(`Mcp-Session-Id`, bound to the identity that opened it), answers are JSON or SSE, GET opens the
standalone stream, DELETE ends the session, and `Last-Event-ID` resumes a broken stream."""

from __future__ import annotations

import asyncio

from ledgergate.errors import BadRequest, GatewayError, NotAcceptable, NotFound
from ledgergate.gateway.bridge import Bridge
from ledgergate.gateway.http import send_empty, send_json, start_sse
from ledgergate.gateway.sessions import GatewaySession, SessionRegistry
from ledgergate.gateway.transport.core import Background, Exchange, Posted, drain_watching, fill, respond
from ledgergate.upstream.base import HANDSHAKE_VERSIONS, ClientHello
from ledgergate.upstream.registry import Upstreams
from ledgergate.wire import jsonrpc


def hello_from(params: dict[str, object], default_version: str) -> ClientHello:
    """What the client said of itself in `initialize`."""
    return ClientHello(protocol_version=str(params.get("protocolVersion") or default_version),
                       capabilities=dict(params.get("capabilities") or {}),  # type: ignore[call-overload]
                       client_info=dict(params.get("clientInfo")  # type: ignore[call-overload]
                                        or {"name": "unknown", "version": "0"}))


class HelloCache:
    """Equal hellos as one shared `ClientHello`: the clients of one deployment mostly say the same
    thing of themselves, and each open session would otherwise keep its own copy of it. Sessions
    only read their hello. Bounded: past MAX different hellos the cache starts afresh."""

    MAX = 1024
    #: a larger hello is not kept (1,024 of them at most 4 MB however clients describe themselves)
    MAX_KEY_BYTES = 4096

    def __init__(self) -> None:
        self._hellos: dict[bytes, ClientHello] = {}

    def get(self, params: dict[str, object], default_version: str) -> ClientHello:
        try:
            key = jsonrpc.dumps([params.get("protocolVersion"), params.get("capabilities"), params.get("clientInfo")])
        except (TypeError, ValueError):
            return hello_from(params, default_version)
        if len(key) > self.MAX_KEY_BYTES:
            return hello_from(params, default_version)
        hello = self._hellos.get(key)
        if hello is None:
            if len(self._hellos) >= self.MAX:
                self._hellos.clear()
            hello = self._hellos[key] = hello_from(params, default_version)
        return hello


#: event streams (GET) one session may hold open at once: two, so that a client reconnecting with
#: `Last-Event-ID` may overlap the stream it is leaving. Without a bound one identity's single session held
#: as many client connections as it opened GETs, `limits.max_client_connections` of them included
MAX_STREAMS_PER_SESSION = 2


class HandshakeEndpoint:
    def __init__(self, bridge: Bridge, upstreams: Upstreams, sessions: SessionRegistry,
                 background: Background) -> None:
        self.bridge = bridge
        self.upstreams = upstreams
        self.sessions = sessions
        self.background = background
        self.hellos = HelloCache()
        #: session id -> its event streams open now (sessions with none are not kept)
        self._streams: dict[str, int] = {}

    def _session(self, ex: Exchange) -> GatewaySession:
        session_id = ex.header(b"mcp-session-id")
        if not session_id:
            raise BadRequest("Bad Request: Mcp-Session-Id header is required (call initialize first)"
                             if ex.scope["method"] == "POST" else "Bad Request: Mcp-Session-Id header is required")
        return self.sessions.get(session_id, ex.server, ex.principal)

    # ── POST ────────────────────────────────────────────────────────────────
    async def post(self, ex: Exchange, posted: Posted, version: str | None) -> None:
        message, kind = posted.message, posted.kind
        if kind == "request" and message["method"] == "initialize":
            await self._initialize(ex, message)
            return
        session = self._session(ex)
        if version and version not in HANDSHAKE_VERSIONS:
            raise BadRequest(f"Bad Request: unsupported MCP-Protocol-Version {version!r}")
        if kind == "notification":
            await self.bridge.client_notification(ex.pipeline, session, ex.principal, message)
            await send_empty(ex.send, 202)
            return
        if kind == "response":
            await self.bridge.client_reply(ex.pipeline, session, ex.principal, message)
            await send_empty(ex.send, 202)
            return
        stream = self.bridge.handshake_call(ex.pipeline, session, ex.principal, message)
        await respond(ex, stream, message["id"], posted.wants_sse, session, self.background)

    async def _initialize(self, ex: Exchange, message: dict[str, object]) -> None:
        await ex.pipeline.admit(ex.server, ex.principal, "initialize")  # before a session or an upstream opens
        hello = self.hellos.get(message.get("params") or {}, HANDSHAKE_VERSIONS[-1])  # type: ignore[arg-type]
        session = self.sessions.create(ex.server, ex.principal, hello, self.upstreams.get(ex.server))
        try:
            result = await self.bridge.initialize(ex.pipeline, session, ex.principal)
        except BaseException:
            # a refusal, a fault, or the opening cancelled: the session's slot (and its stdio child) go with it,
            # even while a second cancellation arrives (shielded), or the principal's cap fills with ghosts
            await asyncio.shield(self.sessions.remove(session.id))
            raise
        session.protocol_version = result.get("protocolVersion", hello.protocol_version)
        await send_json(ex.send, 200, jsonrpc.result(message["id"], result),
                        [(b"mcp-session-id", session.id.encode())])

    # ── GET: the standalone stream, or resumption ───────────────────────────
    async def get(self, ex: Exchange) -> None:
        if "text/event-stream" not in (ex.header(b"accept") or "").lower():
            raise NotAcceptable("Not Acceptable: Accept must include text/event-stream")
        session = self._session(ex)
        # the standalone stream is the handshake era's subscriptions/listen: still allowed for this identity?
        await ex.pipeline.admit(ex.server, ex.principal, "subscriptions/listen", session.id)
        held = self._streams.get(session.id, 0)
        if held >= MAX_STREAMS_PER_SESSION:
            raise GatewayError(f"Conflict: this session already has {held} event streams open, its maximum; "
                               "close one before opening another", http_status=409,
                               data={"reason": "streams_per_session", "maxStreams": MAX_STREAMS_PER_SESSION})
        self._streams[session.id] = held + 1
        try:
            await self._stream(ex, session)
        finally:
            left = self._streams.get(session.id, 1) - 1
            if left > 0:
                self._streams[session.id] = left
            else:
                self._streams.pop(session.id, None)

    async def _stream(self, ex: Exchange, session: GatewaySession) -> None:
        last_event_id = ex.header(b"last-event-id")
        if last_event_id:
            found = session.find_event(last_event_id)
            if found is None:
                raise NotFound("unknown Last-Event-ID for this session")
            events, seq = found
            await start_sse(ex.send)
            await drain_watching(ex.send, ex.receive, events, seq)
            return
        standalone = session.standalone
        if standalone is None or standalone.closed:
            standalone = session.standalone = session.new_stream()
            self.background.spawn(fill(standalone, self.bridge.session_listen(ex.pipeline, session, ex.principal),
                                       None, ex.pipeline.masked_error))
        await start_sse(ex.send)
        await drain_watching(ex.send, ex.receive, standalone, standalone.next_seq)

    # ── DELETE ──────────────────────────────────────────────────────────────
    async def delete(self, ex: Exchange) -> None:
        session = self._session(ex)
        await self.bridge.close_session(ex.pipeline, self.sessions, session.id, ex.principal)
        await send_empty(ex.send, 200)
