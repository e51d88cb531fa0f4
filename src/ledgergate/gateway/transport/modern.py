"""MCP 2026-07-28, the stateless revision: every POST stands alone, carries its version and the
client's capabilities in `params._meta`, and names its method (and tool, prompt or resource) in
`Mcp-Method`/`Mcp-Name` headers that must agree with the body (checked with the SDK's own
validation). Server-to-client requests become input-required results (see bridge.py).

Which era a request speaks is told as the SDK's servers tell it (docs/sdk-notes.md §2.1): an
`MCP-Protocol-Version` header that names no handshake revision, or the 2026-07-28 envelope in
`_meta`, is this era's; a version this gateway does not serve is refused here with -32022 and the
versions it does serve, so a client can probe again at one of them."""

from __future__ import annotations

from typing import Any

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
)

from ledgergate.errors import METHOD_NOT_FOUND, UNSUPPORTED_PROTOCOL_VERSION, GatewayError, HeaderMismatch
from ledgergate.gateway.bridge import Bridge
from ledgergate.gateway.call import Call
from ledgergate.gateway.http import header_count, send_empty, send_json, start_sse
from ledgergate.gateway.pipeline import Hangup
from ledgergate.gateway.serving import ON_HANGUP
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.gateway.transport.core import Background, Exchange, Posted, pump, respond
from ledgergate.upstream.base import HANDSHAKE_VERSIONS, META_PROTOCOL_VERSION, MODERN_VERSION, ClientHello
from ledgergate.upstream.registry import Upstreams
from ledgergate.wire import jsonrpc

#: handshake-era methods that are not 2026-07-28 methods and change the state of an upstream session: a
#: stateless client's calls share the principal's upstream session, so one of these would re-negotiate or
#: reconfigure it for every other client of that principal. The SDK's 2026 servers answer them -32601.
HANDSHAKE_ONLY = frozenset({"initialize", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})


def is_modern(version_header: str | None, posted: Posted) -> bool:
    """A 2026-07-28 message (or one of a later revision) says so in its header or in its `_meta`: a
    version header naming no handshake revision (absent, it names none), or the 2026-07-28 envelope's
    version key. Handshake clients send one of the handshake versions, or none on `initialize`."""
    if version_header and version_header not in HANDSHAKE_VERSIONS:
        return True
    if posted.kind == "response":
        return False
    meta = (posted.message.get("params") or {}).get("_meta")
    return isinstance(meta, dict) and META_PROTOCOL_VERSION in meta


def unsupported_version(requested: str) -> GatewayError:
    """-32022 (400) with the versions served, as a 2026-era server answers (docs/sdk-notes.md §2.2)."""
    return GatewayError(f"Unsupported protocol version {requested[:100]!r}: this gateway serves "
                        f"{MODERN_VERSION} (and the handshake revisions {', '.join(HANDSHAKE_VERSIONS)})",
                        rpc_code=UNSUPPORTED_PROTOCOL_VERSION, http_status=400,
                        data={"supported": [MODERN_VERSION], "requested": requested})


class ModernEndpoint:
    def __init__(self, bridge: Bridge, upstreams: Upstreams, sessions: SessionRegistry,
                 background: Background) -> None:
        self.bridge = bridge
        self.upstreams = upstreams
        self.sessions = sessions
        self.background = background

    async def post(self, ex: Exchange, posted: Posted) -> None:
        version = ex.header(b"mcp-protocol-version")
        if posted.kind != "request":
            if posted.kind == "notification":
                await self.bridge.refuse_unless_notification(ex.pipeline, ex.server, ex.principal, None, posted.message)
            if version and version != MODERN_VERSION:
                raise unsupported_version(version)
            await send_empty(ex.send, 202)  # no client-to-server notifications on this wire; acknowledged and dropped
            return
        message = posted.message
        if header_count(ex.scope, b"mcp-method") > 1 or header_count(ex.scope, b"mcp-name") > 1:
            raise HeaderMismatch("a routing header appears more than once")
        if version and version != MODERN_VERSION:
            raise unsupported_version(version)  # before the envelope: a later revision may not carry this one
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in ex.scope["headers"]}
        verdict = classify_inbound_request(message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            raise GatewayError(verdict.message, data=verdict.data, rpc_code=verdict.code,
                               http_status=ERROR_CODE_HTTP_STATUS.get(verdict.code, 400))
        method = message["method"]
        if method in HANDSHAKE_ONLY:
            await self._refuse_handshake_only(ex, message)
        upstream = self.upstreams.get(ex.server)
        hello = ClientHello(protocol_version=MODERN_VERSION, capabilities=dict(verdict.client_capabilities or {}),
                            client_info=verdict.client_info or {"name": "unknown", "version": "0"})
        if method == "server/discover":
            await ex.pipeline.admit(ex.server, ex.principal, "server/discover")  # before an upstream opens
            result = await self.bridge.discover(ex.pipeline, ex.server, ex.principal, upstream, self.sessions,
                                                 hello)
            await send_json(ex.send, 200, jsonrpc.result(message["id"], result))
            return
        if method == "subscriptions/listen":
            messages = self.bridge.listen(ex.pipeline, ex.server, ex.principal, message, upstream, self.sessions,
                                          hello)
            ex.started = True
            await start_sse(ex.send)
            await pump(ex.send, messages, None, ex.pipeline.masked_error)
            return
        # This era's client cancels a call by closing its connection (there is no notifications/cancelled on
        # its wire): the server calls this if it does before the answer is complete (`serving.ON_HANGUP`), on
        # the JSON answer path as on the SSE one. A handshake client's disconnect is no cancellation.
        hangup = Hangup(ex.pipeline.flights)
        if ex.scope.setdefault(ON_HANGUP, hangup) is not hangup:
            hangup()  # the client left while the request was being read: the bridge forwards nothing
        stream = self.bridge.modern_call(ex.pipeline, ex.server, ex.principal, message, upstream, self.sessions,
                                         hello, hangup)
        await respond(ex, stream, message["id"], posted.wants_sse, None, self.background)

    @staticmethod
    async def _refuse_handshake_only(ex: Exchange, message: dict[str, Any]) -> None:
        """`initialize` (and the other handshake-only methods) at 2026-07-28: refused at the edge and
        recorded. Forwarded, it went through policy into the principal's shared upstream session (an
        allowed `rpc.request`), where a server that accepts a second `initialize` would re-negotiate the
        session every stateless client of that principal uses."""
        call = Call(server=ex.server, principal=ex.principal, message=message, era="modern")
        await ex.pipeline.evidence.record("rpc.refused", call, reason="not_a_2026_method")
        refusal = GatewayError(f"Method not found: {call.method} is not a {MODERN_VERSION} method (a stateless "
                               f"client starts with server/discover); nothing was forwarded (request id "
                               f"{call.request_id})", rpc_code=METHOD_NOT_FOUND, http_status=404,
                               data={"method": call.method, "requestId": call.request_id})
        refusal.recorded = True
        raise refusal
