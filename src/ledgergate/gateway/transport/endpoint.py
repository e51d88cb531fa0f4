"""`/mcp/{server}`: the client-facing MCP endpoint, routed by path, HTTP method and protocol era.

In order, before anything reaches an era's module: `Host`/`Origin` (DNS rebinding), the server
name, authentication (`gateway/auth.py`), and the pipeline of the current config snapshot, which
the request then keeps to its end. Every refusal, wherever it is raised, is answered here by
`core.refuse` from the exception; a bug becomes a 500 without a stack trace on the wire.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ledgergate.config import LimitsSettings
from ledgergate.errors import (
    INTERNAL_ERROR,
    AuthError,
    ForbiddenError,
    GatewayError,
    LedgerUnavailable,
    MethodNotAllowed,
    NotFound,
    UpstreamError,
)
from ledgergate.gateway.auth import Authenticator
from ledgergate.gateway.bridge import Bridge
from ledgergate.gateway.http import header, json_error_body, send_json
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.gateway.serving import ON_HANGUP
from ledgergate.gateway.sessions import ForeignSession, SessionRegistry
from ledgergate.gateway.transport.core import (
    Background,
    BodyLimits,
    Exchange,
    read_posted,
    refuse,
)
from ledgergate.gateway.transport.handshake import HandshakeEndpoint
from ledgergate.gateway.transport.hosts import HostPolicy
from ledgergate.gateway.transport.legacy_sse import LegacySseEndpoint
from ledgergate.gateway.transport.modern import ModernEndpoint, is_modern
from ledgergate.upstream.base import HANDSHAKE_VERSIONS
from ledgergate.upstream.registry import UnknownServer, Upstreams

log = logging.getLogger("ledgergate.transport")

_LIMITS = LimitsSettings()  # the defaults, for an endpoint built without a config (bench/passthrough_gateway.py)


class McpEndpoint:
    """ASGI app for `/mcp/{server}` (and `/mcp/{server}/sse` + `/messages` for legacy HTTP+SSE clients)."""

    def __init__(self, pipeline: Callable[[], Pipeline], auth: Authenticator, upstreams: Upstreams,
                 sessions: SessionRegistry, hosts: HostPolicy, max_body: int, public_url: str | None,
                 max_values: int = _LIMITS.max_json_values,
                 values_in_flight: int = _LIMITS.json_values_in_flight) -> None:
        self.pipeline = pipeline
        self.auth = auth
        self.upstreams = upstreams
        self.sessions = sessions
        self.hosts = hosts
        self.limits = BodyLimits.of(max_body, max_values, values_in_flight)
        self.public_url = public_url
        self.bridge = Bridge()
        self.background = Background()
        self.modern = ModernEndpoint(self.bridge, upstreams, sessions, self.background)
        self.handshake = HandshakeEndpoint(self.bridge, upstreams, sessions, self.background)
        self.legacy = LegacySseEndpoint(self.bridge, upstreams, sessions, self.background, self.limits)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ex: Exchange | None = None
        try:
            if not self.hosts.host_ok(header(scope, b"host")):
                raise ForbiddenError("Forbidden: Host header not allowed")
            if not self.hosts.origin_ok(header(scope, b"origin")):
                raise ForbiddenError("Forbidden: Origin not allowed")
            server, _, tail = scope["path"][len("/mcp/"):].partition("/")
            try:
                self.upstreams.get(server)
            except UnknownServer as exc:
                raise NotFound(exc.message) from None
            if tail not in ("", "sse", "messages"):
                raise NotFound("not found")
            pipeline = self.pipeline()  # this request's config snapshot, kept to its end
            principal = await self._authenticate(scope, server, pipeline)
            ex = Exchange(scope, receive, send, server, principal, pipeline)
            await self._route(ex, tail)
        except ConnectionAbortedError:
            return
        except GatewayError as exc:
            if isinstance(exc, UpstreamError) and ex is not None:  # opening the upstream session failed
                exc = ex.pipeline.masked_error(exc)
            if isinstance(exc, ForeignSession) and ex is not None:
                await self._record_foreign(ex, exc)
            elif ex is not None and not exc.recorded:
                await self._record_refusal(ex, exc)
            if ex is None or not ex.started:
                await refuse(send, exc, ex.message_id if ex else None)
        except Exception:  # noqa: BLE001 - a bug must not become a 500 with a stack trace
            log.exception("internal error serving %s %s", scope["method"], scope["path"])
            if ex is None or not ex.started:
                with contextlib.suppress(Exception):
                    await send_json(send, 500, json_error_body(None, INTERNAL_ERROR, "internal gateway error"))
        finally:
            # uvicorn keeps a kept-alive connection's last scope until its next request, and the hangup hook a
            # 2026-07-28 call leaves there holds the call and its message: every idle connection pinned its
            # last message (8 connections, 8 messages of 150 MB). The answer is complete: nothing is cancelled
            scope.pop(ON_HANGUP, None)
            if ex is not None:  # the parsed message is let go with the request: its values make room for others
                self.limits.in_flight.give_back(ex.values_held)

    async def _record_refusal(self, ex: Exchange, exc: GatewayError) -> None:
        """A refusal of an authenticated request that no stage recorded (wrong media type, a body that
        is not JSON-RPC, an unknown session, ...): an investigator looks for exactly these."""
        if isinstance(exc, LedgerUnavailable):
            return  # nothing can be recorded; the 503 says so
        evidence = ex.pipeline.evidence
        message = str(evidence.mask(exc.message)[0])[:500]  # masked whole, then shortened (never cut first)
        try:
            fields: dict[str, Any] = {
                "principal": ex.principal.summary(), "server": ex.server, "http_method": ex.scope["method"],
                "status": exc.http_status, "code": exc.rpc_code, "error": message}
            data = exc.data or {}
            request_id = data.get("requestId")
            if isinstance(request_id, str):  # the id the refusal quotes (an upstream that could not be opened)
                fields["request_id"] = request_id
            # the limit that refused it, as the client's error names it (max_processes_per_principal,
            # max_json_values, ...): a name, so nothing else is let into the record this way
            reason = data.get("reason")
            if isinstance(reason, str) and reason.isidentifier() and len(reason) <= 64:
                fields["reason"] = reason
            await evidence.append("request.refused", fields)
        except (LedgerUnavailable, ValueError) as failed:
            log.error("a refusal (%s) could not be recorded: %s", exc.http_status, failed)

    async def _authenticate(self, scope: dict[str, Any], server: str, pipeline: Pipeline) -> Any:
        client = scope.get("client")
        try:
            return await self.auth.authenticate(pipeline.snapshot.identity, header(scope, b"authorization"),
                                                scope.get("query_string", b""), server, client[0] if client else None)
        except AuthError as exc:
            base = self.public_url or f"http://{header(scope, b'host')}"
            refusal = AuthError(f"Unauthorized: {exc.message}", exc.reason)
            refusal.headers = self.auth.challenge(exc, f"{base}/.well-known/oauth-protected-resource/mcp/{server}")
            raise refusal from None

    @staticmethod
    async def _record_foreign(ex: Exchange, exc: ForeignSession) -> None:
        """Someone presented another identity's session: refused (403) either way, and recorded under
        that session, which is where an investigator looks."""
        client = ex.scope.get("client")
        try:
            await ex.pipeline.evidence.append("session.foreign", {
                "session": exc.session_id, "server": ex.server, "principal": ex.principal.summary(),
                "remote": client[0] if client else None, "http_method": ex.scope["method"],
                "transport": "legacy-sse" if ex.scope["path"].endswith("/messages") else "streamable-http"})
        except GatewayError as failure:
            log.error("session.foreign for %s not recorded: %s", ex.principal.key, failure.message)

    async def _route(self, ex: Exchange, tail: str) -> None:
        if tail == "sse":
            await self.legacy.stream(ex)
        elif tail == "messages":
            await self.legacy.post(ex)
        elif ex.scope["method"] == "POST":
            posted = await read_posted(ex, self.limits)
            version = ex.header(b"mcp-protocol-version")
            if is_modern(version, posted):
                await self.modern.post(ex, posted)
            else:
                await self.handshake.post(ex, posted, version)
        elif ex.scope["method"] in ("GET", "DELETE"):
            version = ex.header(b"mcp-protocol-version")
            if version and version not in HANDSHAKE_VERSIONS:
                # a 2026-07-28 (or later) client: that era has no sessions and no standalone stream, only
                # POST (what its servers answer, docs/sdk-notes.md §2.2); not "Mcp-Session-Id required"
                raise MethodNotAllowed("POST")
            if ex.scope["method"] == "GET":
                await self.handshake.get(ex)
            else:
                await self.handshake.delete(ex)
        else:
            raise MethodNotAllowed("GET, POST, DELETE")

    async def close(self) -> None:
        await self.background.close()
