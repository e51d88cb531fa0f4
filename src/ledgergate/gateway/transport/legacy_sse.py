"""The legacy HTTP+SSE transport (2024-11-05): GET `/mcp/{server}/sse` opens a session and its
event stream, whose first event names the URL to POST messages to (`/mcp/{server}/messages`);
answers travel on the stream."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs

from ledgergate.errors import (
    INTERNAL_ERROR,
    BadRequest,
    GatewayError,
    LedgerUnavailable,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    UpstreamError,
)
from ledgergate.gateway.bridge import Bridge
from ledgergate.gateway.http import BodyTooLarge, json_error_body, read_body, send_empty, start_sse
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.gateway.sessions import EventStream, GatewaySession, SessionRegistry
from ledgergate.gateway.transport.core import (
    Background,
    BodyLimits,
    Exchange,
    admit,
    drain_watching,
    error_message,
    parse_body,
)
from ledgergate.gateway.transport.handshake import hello_from
from ledgergate.principal import Principal
from ledgergate.upstream.base import ClientHello
from ledgergate.upstream.registry import Upstreams
from ledgergate.wire import jsonrpc

log = logging.getLogger("ledgergate.transport")


#: requests one legacy session may have running at once. Its POST is answered 202 at once and the call runs
#: in the background, so no connection bounds them: one session took 8,000 in 36 s (DoS probe D4)
MAX_IN_FLIGHT = 100


class LegacySseEndpoint:
    def __init__(self, bridge: Bridge, upstreams: Upstreams, sessions: SessionRegistry, background: Background,
                 limits: BodyLimits) -> None:
        self.bridge = bridge
        self.upstreams = upstreams
        self.sessions = sessions
        self.background = background
        self.limits = limits
        #: session id -> its requests running now
        self._in_flight: dict[str, int] = {}

    async def stream(self, ex: Exchange) -> None:
        if ex.scope["method"] != "GET":
            raise MethodNotAllowed("GET")
        await ex.pipeline.admit(ex.server, ex.principal, "initialize")  # before a session or an upstream opens
        upstream = self.upstreams.get(ex.server)
        session = self.sessions.create(ex.server, ex.principal, ClientHello(protocol_version="2024-11-05"), upstream)
        session.legacy_outbox = EventStream(0)
        ex.started = True
        await start_sse(ex.send)
        endpoint = f"/mcp/{ex.server}/messages?session_id={session.id}"
        await ex.send({"type": "http.response.body", "body": b"event: endpoint\ndata: " + endpoint.encode() + b"\n\n",
                       "more_body": True})
        # uvicorn's send() silently drops writes once the client is gone, so drain alone would never
        # notice: watch receive() for the disconnect, or the session (and its upstream) would live forever.
        try:
            await drain_watching(ex.send, ex.receive, session.legacy_outbox, 0)
        finally:
            session.legacy_outbox.close()
            await self.sessions.remove(session.id)

    async def post(self, ex: Exchange) -> None:
        if ex.scope["method"] != "POST":
            raise MethodNotAllowed("POST")
        query = parse_qs(ex.scope.get("query_string", b"").decode("latin-1"))
        session = self.sessions.get((query.get("session_id") or [""])[0], ex.server, ex.principal)
        outbox = getattr(session, "legacy_outbox", None)
        if outbox is None:
            raise BadRequest("not a legacy SSE session")
        try:
            body = await read_body(ex.receive, self.limits.max_bytes)
        except BodyTooLarge:
            raise PayloadTooLarge("Payload Too Large") from None
        # the message is handled after this POST is answered: its values are given back when it has been
        held = await admit(body, self.limits)
        try:
            message = await parse_body(body)
            kind = jsonrpc.kind_of(message)
            if kind == "notification":
                await self.bridge.refuse_unless_notification(ex.pipeline, ex.server, ex.principal, session.id,
                                                             message)
            if kind == "request":
                running = self._in_flight.get(session.id, 0)
                if running >= MAX_IN_FLIGHT:
                    raise RateLimited(f"Too Many Requests: {running} calls of this session are still running; "
                                      "send more as their answers arrive")
                self._in_flight[session.id] = running + 1
            await send_empty(ex.send, 202)
        except BaseException:
            self.limits.in_flight.give_back(held)
            raise
        self.background.spawn(self._counted(self._handle(ex.pipeline, session, ex.principal, message, kind, outbox),
                                            session.id if kind == "request" else None, held))

    async def _counted(self, work: Coroutine[Any, Any, None], session_id: str | None, held: int) -> None:
        try:
            await work
        finally:
            self.limits.in_flight.give_back(held)
            if session_id is not None:
                left = self._in_flight.get(session_id, 1) - 1
                if left > 0:
                    self._in_flight[session_id] = left
                else:
                    self._in_flight.pop(session_id, None)

    async def _handle(self, pipeline: Pipeline, session: GatewaySession, principal: Principal,
                      message: dict[str, Any], kind: str, outbox: EventStream) -> None:
        try:
            if kind == "request" and message["method"] == "initialize":
                session.hello = hello_from(message.get("params") or {}, "2024-11-05")
                result = await self.bridge.initialize(pipeline, session, principal)
                session.protocol_version = result.get("protocolVersion", session.hello.protocol_version)
                outbox.append(jsonrpc.dumps(jsonrpc.result(message["id"], result)))
            elif kind == "notification":
                await self.bridge.client_notification(pipeline, session, principal, message)
            elif kind == "response":
                await self.bridge.client_reply(pipeline, session, principal, message)
            else:
                async for item in self.bridge.handshake_call(pipeline, session, principal, message):
                    outbox.append(jsonrpc.dumps(item))
        except GatewayError as exc:
            # as the Streamable HTTP endpoint does (`McpEndpoint.__call__`): an upstream's words (its
            # initialize refused with a customer's numbers in it) are masked before the client sees
            # them, and a refusal no stage recorded is recorded here
            if isinstance(exc, UpstreamError):
                exc = pipeline.masked_error(exc)
            if not exc.recorded:
                await self._record_refusal(pipeline, session, principal, exc)
            if kind == "request":
                outbox.append(error_message(exc, message["id"]))
        except Exception:  # noqa: BLE001
            log.exception("legacy request failed")
            if kind == "request":
                outbox.append(jsonrpc.dumps(json_error_body(message["id"], INTERNAL_ERROR, "internal gateway error")))

    @staticmethod
    async def _record_refusal(pipeline: Pipeline, session: GatewaySession, principal: Principal,
                              exc: GatewayError) -> None:
        """A refusal of a legacy message that no stage recorded (the upstream session could not be
        opened, a reply that answers nothing): the record `McpEndpoint._record_refusal` writes for the
        same refusal over Streamable HTTP, masked whole before it is shortened."""
        if isinstance(exc, LedgerUnavailable):
            return  # nothing can be recorded
        evidence = pipeline.evidence
        masked, _ = evidence.mask(exc.message)
        try:
            fields: dict[str, Any] = {
                "principal": principal.summary(), "server": session.server, "session": session.id,
                "http_method": "POST", "transport": "legacy-sse", "status": exc.http_status,
                "code": exc.rpc_code, "error": str(masked)[:500]}
            request_id = (exc.data or {}).get("requestId")
            if isinstance(request_id, str):  # the id the refusal quotes (an upstream that could not be opened)
                fields["request_id"] = request_id
            await evidence.append("request.refused", fields)
        except (LedgerUnavailable, ValueError) as failed:
            log.error("a refusal (%s) could not be recorded: %s", exc.http_status, failed)
