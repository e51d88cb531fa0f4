"""The client-facing MCP endpoint `/mcp/{server}`: Streamable HTTP in both protocol eras.

* 2026-07-28 (stateless): every POST stands alone, carries its version and the
  client's capabilities in `params._meta`, and names its method (and tool,
  prompt or resource) in `Mcp-Method`/`Mcp-Name` headers that must agree with
  the body. Server-to-client requests become input-required results.
* 2024-11-05 … 2025-11-25 (handshake): `initialize` opens a gateway session
  (`Mcp-Session-Id`), responses are JSON or SSE, GET opens the standalone
  stream, DELETE ends the session, `Last-Event-ID` resumes a broken stream.

Either kind of client reaches either kind of upstream (see bridge.py). Before
anything else runs, `Host` and `Origin` are checked against the gateway's own
names (DNS-rebinding defence) and the body size is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
)

from ledgergate.errors import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    AuthError,
    GatewayError,
    UpstreamError,
)
from ledgergate.gateway import jsonrpc
from ledgergate.gateway.bridge import Bridge
from ledgergate.gateway.http import (
    BodyTooLarge,
    header,
    header_count,
    json_error_body,
    read_body,
    send_empty,
    send_json,
    start_sse,
)
from ledgergate.gateway.pipeline import Call, Pipeline
from ledgergate.gateway.sessions import (
    EventStream,
    GatewaySession,
    SessionNotFound,
    SessionRegistry,
)
from ledgergate.gateway.sse import PING, encode
from ledgergate.identity.principal import Principal
from ledgergate.numbers import parse_uint
from ledgergate.upstream.base import (
    FULL_CLIENT_CAPABILITIES,
    HANDSHAKE_VERSIONS,
    MODERN_VERSION,
    ClientHello,
)
from ledgergate.upstream.registry import UnknownServer, Upstreams

log = logging.getLogger("ledgergate.transport")

_PING_INTERVAL = 15.0


class HostPolicy:
    """Which `Host` and `Origin` values name this gateway (MCP transport spec: DNS rebinding)."""

    def __init__(self, listen_host: str, port: int, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        names = {listen_host.strip("[]").lower(), "localhost", "127.0.0.1", "::1"}
        if listen_host in ("0.0.0.0", "::"):
            names.discard(listen_host)
        self.port = port
        self.hostnames = names | {h.lower() for h in allowed_hosts if ":" not in h.strip("[]") or h.startswith("[")}
        self.hostports = {h.lower() for h in allowed_hosts}
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}
        self._verdicts: dict[str, bool] = {}

    @staticmethod
    def _split(hostport: str) -> tuple[str, str | None]:
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            return host, rest[1:] if rest.startswith(":") else None
        host, sep, port = hostport.rpartition(":")
        return (host, port) if sep and parse_uint(port, 5) is not None else (hostport, None)

    def host_ok(self, value: str | None) -> bool:
        if not value:
            return False
        known = self._verdicts.get(value)
        if known is not None:
            return known
        verdict = self._host_ok(value)
        if len(self._verdicts) < 256:  # bounded: Host values are attacker-chosen
            self._verdicts[value] = verdict
        return verdict

    def _host_ok(self, value: str) -> bool:
        value = value.lower()
        if value in self.hostports:
            return True
        host, port = self._split(value)
        return host in self.hostnames and (port is None or parse_uint(port, 5) == self.port or value in self.hostports)

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return bool(parts.netloc) and self.host_ok(parts.netloc)


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class McpEndpoint:
    """ASGI app for `/mcp/{server}` (and `/mcp/{server}/sse` + `/messages` for legacy HTTP+SSE clients)."""

    def __init__(self, pipeline: Pipeline, upstreams: Upstreams, sessions: SessionRegistry,
                 hosts: HostPolicy, max_body: int, www_authenticate: Any, public_url: str | None) -> None:
        self.pipeline = pipeline
        self.upstreams = upstreams
        self.sessions = sessions
        self.hosts = hosts
        self.max_body = max_body
        self.www_authenticate = www_authenticate
        self.public_url = public_url
        self.bridge = Bridge(pipeline)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ── entry ───────────────────────────────────────────────────────────────
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.hosts.host_ok(header(scope, b"host")):
            await send_json(send, 403, json_error_body(None, INVALID_REQUEST, "Forbidden: Host header not allowed"))
            return
        if not self.hosts.origin_ok(header(scope, b"origin")):
            await send_json(send, 403, json_error_body(None, INVALID_REQUEST, "Forbidden: Origin not allowed"))
            return
        path = scope["path"]
        rest = path[len("/mcp/"):] if path.startswith("/mcp/") else ""
        server, _, tail = rest.partition("/")
        try:
            self.upstreams.get(server)
        except UnknownServer as exc:
            await send_json(send, 404, json_error_body(None, INVALID_REQUEST, exc.message))
            return
        if tail not in ("", "sse", "messages"):
            await send_json(send, 404, json_error_body(None, INVALID_REQUEST, "not found"))
            return
        if b"access_token" in scope.get("query_string", b""):
            query = parse_qs(scope["query_string"].decode("latin-1"))
            if "access_token" in query:
                refusal = AuthError("tokens in the query string are refused; send them in the Authorization header",
                                    "invalid_request")
                client = scope.get("client")
                with contextlib.suppress(GatewayError):  # refused either way; recorded when the ledger can
                    await self.pipeline.audit.append("auth.denied", {
                        "server": server, "reason": "token_in_query", "detail": refusal.message,
                        "remote": client[0] if client else None})
                await self._unauthorized(scope, send, server, refusal)
                return
        try:
            principal = await self._authenticate(scope, server)
        except AuthError as exc:
            await self._unauthorized(scope, send, server, exc)
            return
        except GatewayError as exc:
            await send_json(send, exc.http_status, json_error_body(None, exc.rpc_code, exc.message))
            return
        try:
            if tail == "sse":
                await self._legacy_sse(scope, receive, send, server, principal)
            elif tail == "messages":
                await self._legacy_post(scope, receive, send, server, principal)
            elif scope["method"] == "POST":
                await self._post(scope, receive, send, server, principal)
            elif scope["method"] == "GET":
                await self._get(scope, receive, send, server, principal)
            elif scope["method"] == "DELETE":
                await self._delete(scope, send, server, principal)
            else:
                await send_json(send, 405, json_error_body(None, INVALID_REQUEST, "Method Not Allowed"),
                                [(b"allow", b"GET, POST, DELETE")])
        except ConnectionAbortedError:
            return
        except GatewayError as exc:
            if not scope.get("_lg_started"):
                await send_json(send, exc.http_status, json_error_body(None, exc.rpc_code, exc.message, exc.data))
        except Exception:  # noqa: BLE001 - a bug must not become a 500 with a stack trace
            log.exception("internal error serving %s %s", scope["method"], path)
            if not scope.get("_lg_started"):
                with contextlib.suppress(Exception):
                    await send_json(send, 500, json_error_body(None, INTERNAL_ERROR, "internal gateway error"))

    async def _authenticate(self, scope: dict[str, Any], server: str) -> Principal:
        value = header(scope, b"authorization")
        credential = None
        if value:
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                credential = ""
            else:
                credential = token.strip()
        client = scope.get("client")
        return await self.pipeline.authenticate(credential, server, client[0] if client else None)

    async def _unauthorized(self, scope: dict[str, Any], send: Any, server: str, exc: AuthError) -> None:
        base = self.public_url or f"http://{header(scope, b'host')}"
        metadata_url = f"{base}/.well-known/oauth-protected-resource/mcp/{server}"
        error_code = "invalid_request" if exc.reason in ("missing_token", "invalid_request") else "invalid_token"
        challenge = self.www_authenticate(metadata_url, None if exc.reason == "missing_token" else error_code,
                                          exc.message)
        await send_json(send, 401, json_error_body(None, exc.rpc_code, f"Unauthorized: {exc.message}"),
                        [(b"www-authenticate", challenge.encode("latin-1", "replace"))])

    # ── POST ────────────────────────────────────────────────────────────────
    async def _post(self, scope: dict[str, Any], receive: Any, send: Any, server: str, principal: Principal) -> None:
        ctype = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            await send_json(send, 415, json_error_body(
                None, INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"))
            return
        accept = (header(scope, b"accept") or "").lower()
        wants_json = "application/json" in accept or "*/*" in accept
        wants_sse = "text/event-stream" in accept or "*/*" in accept
        if not wants_json:
            await send_json(send, 406, json_error_body(
                None, INVALID_REQUEST, "Not Acceptable: Accept must include application/json and text/event-stream"))
            return
        try:
            body = await read_body(receive, self.max_body)
        except BodyTooLarge:
            await send_json(send, 413, json_error_body(
                None, INVALID_REQUEST, f"Payload Too Large: the body exceeds {self.max_body} bytes"))
            return
        try:
            message = jsonrpc.loads(body)
        except GatewayError as exc:
            await send_json(send, 400, json_error_body(None, exc.rpc_code, exc.message))
            return
        if isinstance(message, list):
            await send_json(send, 400, json_error_body(
                None, INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported; send one message per POST"))
            return
        try:
            kind = jsonrpc.kind_of(message)
        except GatewayError as exc:
            msg_id = message.get("id") if isinstance(message, dict) else None
            await send_json(send, 400, json_error_body(msg_id, exc.rpc_code, exc.message))
            return
        version_header = header(scope, b"mcp-protocol-version")
        meta = (message.get("params") or {}).get("_meta") if kind != "response" else None
        modern = version_header == MODERN_VERSION or (
            isinstance(meta, dict) and meta.get("io.modelcontextprotocol/protocolVersion") == MODERN_VERSION)
        try:
            if modern:
                await self._post_modern(scope, send, server, principal, message, kind, wants_sse)
            else:
                await self._post_handshake(scope, receive, send, server, principal, message, kind, wants_sse,
                                           version_header)
        except GatewayError as exc:
            if not scope.get("_lg_started"):
                status = exc.http_status if exc.http_status != 200 else 200
                await send_json(send, status, json_error_body(message.get("id"), exc.rpc_code, exc.message, exc.data))

    # ── 2026-07-28 ──────────────────────────────────────────────────────────
    async def _post_modern(self, scope: dict[str, Any], send: Any, server: str, principal: Principal,
                           message: dict[str, Any], kind: str, wants_sse: bool) -> None:
        if kind != "request":
            await send_empty(send, 202)  # no client-to-server notifications on this wire; acknowledged and dropped
            return
        if header_count(scope, b"mcp-method") > 1 or header_count(scope, b"mcp-name") > 1:
            await send_json(send, 400, json_error_body(message["id"], HEADER_MISMATCH,
                                                       "a routing header appears more than once"))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        verdict = classify_inbound_request(message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            status = ERROR_CODE_HTTP_STATUS.get(verdict.code, 400)
            await send_json(send, status, json_error_body(message["id"], verdict.code, verdict.message, verdict.data))
            return
        upstream = self.upstreams.get(server)
        hello = ClientHello(protocol_version=MODERN_VERSION, capabilities=dict(verdict.client_capabilities or {}),
                            client_info=verdict.client_info or {"name": "unknown", "version": "0"})
        method = message["method"]
        if method == "server/discover":
            result = await self.bridge.discover(server, principal, upstream, self.sessions, hello)
            await send_json(send, 200, jsonrpc.result(message["id"], result))
            return
        if method == "subscriptions/listen":
            await self._listen_modern(scope, send, server, principal, message, upstream, hello)
            return
        stream = self.bridge.modern_call(server, principal, message, upstream, self.sessions, hello)
        await self._respond(scope, send, stream, message["id"], wants_sse, session=None)

    async def _listen_modern(self, scope: dict[str, Any], send: Any, server: str, principal: Principal,
                             message: dict[str, Any], upstream: Any, hello: ClientHello) -> None:
        messages = self.bridge.listen(server, principal, message, upstream, self.sessions, hello)
        scope["_lg_started"] = True
        await start_sse(send)
        await self._pump(send, messages, None)

    # ── 2024-11-05 … 2025-11-25 ─────────────────────────────────────────────
    async def _post_handshake(self, scope: dict[str, Any], receive: Any, send: Any, server: str,
                              principal: Principal, message: dict[str, Any], kind: str, wants_sse: bool,
                              version: str | None) -> None:
        upstream = self.upstreams.get(server)
        if kind == "request" and message["method"] == "initialize":
            params = message.get("params") or {}
            hello = ClientHello(
                protocol_version=str(params.get("protocolVersion") or HANDSHAKE_VERSIONS[-1]),
                capabilities=dict(params.get("capabilities") or {}),
                client_info=dict(params.get("clientInfo") or {"name": "unknown", "version": "0"}),
            )
            session = self.sessions.create(server, principal, hello, upstream)
            try:
                result = await self.bridge.initialize(session, principal, message)
            except GatewayError:
                await self.sessions.remove(session.id)
                raise
            session.protocol_version = result.get("protocolVersion", hello.protocol_version)
            await send_json(send, 200, jsonrpc.result(message["id"], result),
                            [(b"mcp-session-id", session.id.encode())])
            return
        session_id = header(scope, b"mcp-session-id")
        if not session_id:
            await send_json(send, 400, json_error_body(
                message.get("id"), INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required (call initialize first)"))
            return
        session = self.sessions.get(session_id, server, principal)
        if version and version not in HANDSHAKE_VERSIONS:
            await send_json(send, 400, json_error_body(
                message.get("id"), INVALID_REQUEST, f"Bad Request: unsupported MCP-Protocol-Version {version!r}"))
            return
        if kind == "notification":
            await self.bridge.client_notification(session, principal, message)
            await send_empty(send, 202)
            return
        if kind == "response":
            await self.bridge.client_reply(session, principal, message)
            await send_empty(send, 202)
            return
        stream = self.bridge.handshake_call(session, principal, message)
        await self._respond(scope, send, stream, message["id"], wants_sse, session=session, receive=receive)

    # ── responses ───────────────────────────────────────────────────────────
    async def _respond(self, scope: dict[str, Any], send: Any, stream: AsyncGenerator[dict[str, Any], None],
                       request_id: Any, wants_sse: bool, session: GatewaySession | None,
                       receive: Any = None) -> None:
        """JSON when the first thing back is the answer; otherwise commit to SSE.

        For a handshake session the rest of the stream is consumed by a task into an
        `EventStream`, so a client that drops the connection can resume it.
        """
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            raise UpstreamError("no response from upstream") from None
        if jsonrpc.is_final_for(first, request_id) or not wants_sse:
            if not jsonrpc.is_final_for(first, request_id):
                # A client that cannot read SSE only gets the answer.
                async for item in stream:
                    first = item
            await stream.aclose()  # now, rather than by a task the garbage collector would schedule
            await send_json(send, 200, first)
            return
        scope["_lg_started"] = True
        await start_sse(send)
        if session is None:
            await send({"type": "http.response.body", "body": encode(jsonrpc.dumps(first)), "more_body": True})
            await self._pump(send, stream, request_id)
            return
        events = session.new_stream()
        events.append(jsonrpc.dumps(first))
        task = asyncio.create_task(self._fill(events, stream, request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        session.running[request_id] = task
        task.add_done_callback(lambda _t: session.running.pop(request_id, None))
        await self._drain_watching(send, receive, events, 0)

    async def _drain_watching(self, send: Any, receive: Any, events: EventStream, seq: int) -> None:
        """`_drain` until the stream ends or the client hangs up (uvicorn drops writes to a gone
        client silently, so only receive() tells)."""
        drain = asyncio.create_task(self._drain(send, events, seq))
        gone = asyncio.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait({drain, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (drain, gone):
                task.cancel()
            for task in (drain, gone):
                with contextlib.suppress(BaseException):
                    await task

    async def _fill(self, events: EventStream, stream: AsyncGenerator[dict[str, Any], None], request_id: Any) -> None:
        try:
            async for item in stream:
                events.append(jsonrpc.dumps(item))
        except GatewayError as exc:
            events.append(jsonrpc.dumps(json_error_body(request_id, exc.rpc_code, exc.message, exc.data)))
        except Exception:  # noqa: BLE001 - the client must get an answer, not a hang
            log.exception("stream failed")
            events.append(jsonrpc.dumps(json_error_body(request_id, INTERNAL_ERROR, "internal gateway error")))
        finally:
            events.close()

    async def _drain(self, send: Any, events: EventStream, seq: int) -> None:
        reader = events.read_from(seq)
        try:
            while True:
                try:
                    event_id, payload = await asyncio.wait_for(reader.__anext__(), _PING_INTERVAL)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
                    continue
                await send({"type": "http.response.body", "body": encode(payload, event_id), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return
        finally:
            with contextlib.suppress(Exception):
                await reader.aclose()

    async def _pump(self, send: Any, stream: AsyncGenerator[dict[str, Any], None], request_id: Any) -> None:
        """Stream messages straight to the client (stateless: no resumption, closing the stream cancels)."""
        try:
            async for item in stream:
                await send({"type": "http.response.body", "body": encode(jsonrpc.dumps(item)), "more_body": True})
        except GatewayError as exc:
            payload = json_error_body(request_id, exc.rpc_code, exc.message, exc.data)
            await send({"type": "http.response.body", "body": encode(jsonrpc.dumps(payload)), "more_body": True})
        except OSError:
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ── GET: the standalone stream, or resumption ───────────────────────────
    async def _get(self, scope: dict[str, Any], receive: Any, send: Any, server: str, principal: Principal) -> None:
        accept = (header(scope, b"accept") or "").lower()
        if "text/event-stream" not in accept:
            await send_json(send, 406, json_error_body(None, INVALID_REQUEST,
                                                       "Not Acceptable: Accept must include text/event-stream"))
            return
        session_id = header(scope, b"mcp-session-id")
        if not session_id:
            await send_json(send, 400, json_error_body(None, INVALID_REQUEST,
                                                       "Bad Request: Mcp-Session-Id header is required"))
            return
        try:
            session = self.sessions.get(session_id, server, principal)
        except GatewayError as exc:
            await send_json(send, exc.http_status, json_error_body(None, exc.rpc_code, exc.message))
            return
        last_event_id = header(scope, b"last-event-id")
        if last_event_id:
            found = session.find_event(last_event_id)
            if found is None:
                await send_json(send, 404, json_error_body(None, INVALID_REQUEST,
                                                           "unknown Last-Event-ID for this session"))
                return
            events, seq = found
            await start_sse(send)
            await self._drain_watching(send, receive, events, seq)
            return
        standalone = session.standalone
        if standalone is None or standalone.closed:
            standalone = session.new_stream()
            session.standalone = standalone
            task = asyncio.create_task(self._fill(standalone, self.bridge.session_listen(session, principal), None))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await start_sse(send)
        await self._drain_watching(send, receive, standalone, standalone.next_seq)

    # ── DELETE ──────────────────────────────────────────────────────────────
    async def _delete(self, scope: dict[str, Any], send: Any, server: str, principal: Principal) -> None:
        session_id = header(scope, b"mcp-session-id")
        if not session_id:
            await send_json(send, 400, json_error_body(None, INVALID_REQUEST,
                                                       "Bad Request: Mcp-Session-Id header is required"))
            return
        try:
            self.sessions.get(session_id, server, principal)
        except GatewayError as exc:
            await send_json(send, exc.http_status, json_error_body(None, exc.rpc_code, exc.message))
            return
        await self.bridge.close_session(self.sessions, session_id, principal)
        await send_empty(send, 200)

    # ── legacy HTTP+SSE (2024-11-05 transport) ─────────────────────────────
    async def _legacy_sse(self, scope: dict[str, Any], receive: Any, send: Any, server: str,
                          principal: Principal) -> None:
        if scope["method"] != "GET":
            await send_json(send, 405, json_error_body(None, INVALID_REQUEST, "Method Not Allowed"),
                            [(b"allow", b"GET")])
            return
        upstream = self.upstreams.get(server)
        session = self.sessions.create(server, principal, ClientHello(protocol_version="2024-11-05"), upstream)
        session.legacy_outbox = EventStream(0)
        await start_sse(send)
        endpoint = f"/mcp/{server}/messages?session_id={session.id}"
        await send({"type": "http.response.body", "body": b"event: endpoint\ndata: " + endpoint.encode() + b"\n\n",
                    "more_body": True})
        # uvicorn's send() silently drops writes once the client is gone, so _drain alone would never
        # notice: watch receive() for the disconnect, or the session (and its upstream) would live forever.
        try:
            await self._drain_watching(send, receive, session.legacy_outbox, 0)
        finally:
            session.legacy_outbox.close()
            await self.sessions.remove(session.id)

    async def _legacy_post(self, scope: dict[str, Any], receive: Any, send: Any, server: str,
                           principal: Principal) -> None:
        if scope["method"] != "POST":
            await send_json(send, 405, json_error_body(None, INVALID_REQUEST, "Method Not Allowed"))
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_id = (query.get("session_id") or [""])[0]
        try:
            session = self.sessions.get(session_id, server, principal)
        except GatewayError as exc:
            await send_json(send, exc.http_status, json_error_body(None, exc.rpc_code, exc.message))
            return
        outbox = getattr(session, "legacy_outbox", None)
        if outbox is None:
            await send_json(send, 400, json_error_body(None, INVALID_REQUEST, "not a legacy SSE session"))
            return
        try:
            body = await read_body(receive, self.max_body)
            message = jsonrpc.loads(body)
            kind = jsonrpc.kind_of(message)
        except BodyTooLarge:
            await send_json(send, 413, json_error_body(None, INVALID_REQUEST, "Payload Too Large"))
            return
        except GatewayError as exc:
            await send_json(send, 400, json_error_body(None, exc.rpc_code, exc.message))
            return
        await send_empty(send, 202)
        task = asyncio.create_task(self._legacy_handle(session, principal, message, kind, outbox))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _legacy_handle(self, session: GatewaySession, principal: Principal, message: dict[str, Any],
                             kind: str, outbox: EventStream) -> None:
        try:
            if kind == "request" and message["method"] == "initialize":
                params = message.get("params") or {}
                session.hello = ClientHello(protocol_version=str(params.get("protocolVersion") or "2024-11-05"),
                                            capabilities=dict(params.get("capabilities") or {}),
                                            client_info=dict(params.get("clientInfo")
                                                             or {"name": "unknown", "version": "0"}))
                result = await self.bridge.initialize(session, principal, message)
                session.protocol_version = result.get("protocolVersion", session.hello.protocol_version)
                outbox.append(jsonrpc.dumps(jsonrpc.result(message["id"], result)))
            elif kind == "notification":
                await self.bridge.client_notification(session, principal, message)
            elif kind == "response":
                await self.bridge.client_reply(session, principal, message)
            else:
                async for item in self.bridge.handshake_call(session, principal, message):
                    outbox.append(jsonrpc.dumps(item))
        except GatewayError as exc:
            if kind == "request":
                outbox.append(jsonrpc.dumps(json_error_body(message["id"], exc.rpc_code, exc.message, exc.data)))
        except Exception:  # noqa: BLE001
            log.exception("legacy request failed")
            if kind == "request":
                outbox.append(jsonrpc.dumps(json_error_body(message["id"], INTERNAL_ERROR, "internal gateway error")))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


__all__ = ["McpEndpoint", "HostPolicy", "SessionNotFound", "FULL_CLIENT_CAPABILITIES", "Call"]
