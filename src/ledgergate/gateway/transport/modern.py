"""MCP 2026-07-28, the stateless revision: every POST stands alone, carries its version and the
client's capabilities in `params._meta`, and names its method (and tool, prompt or resource) in
`Mcp-Method`/`Mcp-Name` headers that must agree with the body (checked with the SDK's own
validation). Server-to-client requests become input-required results (see bridge.py)."""

from __future__ import annotations

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
)

from ledgergate.errors import GatewayError, HeaderMismatch
from ledgergate.gateway.bridge import Bridge
from ledgergate.gateway.http import header_count, send_empty, send_json, start_sse
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.gateway.transport.core import Background, Exchange, Posted, pump, respond
from ledgergate.upstream.base import MODERN_VERSION, ClientHello
from ledgergate.upstream.registry import Upstreams
from ledgergate.wire import jsonrpc


def is_modern(version_header: str | None, posted: Posted) -> bool:
    """A 2026-07-28 message says so in its header or in its `_meta`."""
    if version_header == MODERN_VERSION:
        return True
    if posted.kind == "response":
        return False
    meta = (posted.message.get("params") or {}).get("_meta")
    return isinstance(meta, dict) and meta.get("io.modelcontextprotocol/protocolVersion") == MODERN_VERSION


class ModernEndpoint:
    def __init__(self, bridge: Bridge, upstreams: Upstreams, sessions: SessionRegistry,
                 background: Background) -> None:
        self.bridge = bridge
        self.upstreams = upstreams
        self.sessions = sessions
        self.background = background

    async def post(self, ex: Exchange, posted: Posted) -> None:
        if posted.kind != "request":
            if posted.kind == "notification":
                await self.bridge.refuse_unless_notification(ex.pipeline, ex.server, ex.principal, None, posted.message)
            await send_empty(ex.send, 202)  # no client-to-server notifications on this wire; acknowledged and dropped
            return
        message = posted.message
        if header_count(ex.scope, b"mcp-method") > 1 or header_count(ex.scope, b"mcp-name") > 1:
            raise HeaderMismatch("a routing header appears more than once")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in ex.scope["headers"]}
        verdict = classify_inbound_request(message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            raise GatewayError(verdict.message, data=verdict.data, rpc_code=verdict.code,
                               http_status=ERROR_CODE_HTTP_STATUS.get(verdict.code, 400))
        upstream = self.upstreams.get(ex.server)
        hello = ClientHello(protocol_version=MODERN_VERSION, capabilities=dict(verdict.client_capabilities or {}),
                            client_info=verdict.client_info or {"name": "unknown", "version": "0"})
        method = message["method"]
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
        stream = self.bridge.modern_call(ex.pipeline, ex.server, ex.principal, message, upstream, self.sessions,
                                         hello)
        await respond(ex, stream, message["id"], posted.wants_sse, None, self.background)

