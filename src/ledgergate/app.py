"""Assembling the gateway: stages from config, the ASGI app, and running it under uvicorn.

`/mcp/...` is dispatched straight to the MCP endpoint (the hot path skips the
router); everything else (well-known metadata, REST API, health, metrics, UI)
goes through a Starlette router.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledgergate.api.approvals import approval_routes
from ledgergate.approvals.service import ApprovalService
from ledgergate.approvals.webhooks import WebhookNotifier
from ledgergate.audit.ledger import Ledger
from ledgergate.config import ConfigError, LimitsSettings, LoadedConfig, load_config
from ledgergate.errors import AuthError, ForbiddenError, GatewayError
from ledgergate.gateway.auth import Authenticator
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.metrics import GatewayMetrics, MeteredLedger
from ledgergate.gateway.pipeline import Lasting, Pipeline
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.telemetry import Tracing
from ledgergate.gateway.tasks import TaskOwners
from ledgergate.gateway.transport.endpoint import McpEndpoint
from ledgergate.gateway.transport.hosts import HostPolicy
from ledgergate.identity.resource_metadata import (
    protected_resource_metadata,
    www_authenticate,
)
from ledgergate.identity.service import IdentityService
from ledgergate.principal import Principal
from ledgergate.requestlog import REQUEST_ID
from ledgergate.store.approvals_store import ApprovalStore
from ledgergate.store.fingerprints_store import FingerprintStore
from ledgergate.upstream.registry import Upstreams

log = logging.getLogger("ledgergate")


class Gateway:
    """Owns every long-lived part; `asgi` is what uvicorn serves."""

    def __init__(self, config: LoadedConfig) -> None:
        self.config = config
        s = config.settings
        self.snapshot = Snapshot.build(s, IdentityService(s.identity, s.storage, config.base_dir))
        self.upstreams = Upstreams(config)
        self.sessions = SessionRegistry(s.limits.session_idle_timeout, s.limits.max_sessions_per_principal)
        self.metrics = GatewayMetrics()
        self._started = time.time()
        self.ledger: Ledger | None = None
        self.endpoint: McpEndpoint | None = None
        self.drift: DriftGuard | None = None
        self.lasting: Lasting | None = None
        self.pipeline: Pipeline | None = None
        self.auth: Authenticator | None = None
        self.approvals: ApprovalService | None = None
        self.webhooks: WebhookNotifier | None = None
        self.tracing: Tracing | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._config_mtime = self._mtime()
        self._reload_lock = asyncio.Lock()
        self._router = Starlette(routes=self._routes())

    def _routes(self) -> list[Route]:
        return [
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
            Route("/.well-known/oauth-protected-resource/mcp/{server}", self._resource_metadata),
        ]

    # ── lifecycle ───────────────────────────────────────────────────────────
    async def start(self) -> None:
        s = self.config.settings
        self.ledger = await Ledger.open(s.audit, s.storage, self.config.base_dir)
        metered = MeteredLedger(self.ledger, self.metrics)  # every record is counted where it is written
        await self.snapshot.identity.start()
        self.drift = DriftGuard(FingerprintStore.open(s.storage, self.config.base_dir), s.tool_drift)
        self.webhooks = WebhookNotifier(s.approvals.webhooks, console_url=s.approvals.console_url)
        await self.webhooks.start()
        self.approvals = ApprovalService(ApprovalStore.from_url(s.storage, self.config.base_dir), metered.append,
                                         s.approvals, notifier=self.webhooks)
        await self.approvals.start()
        metered.approval_created = self._approval_created
        if s.telemetry.otlp_endpoint:
            self.tracing = Tracing.start(s.telemetry)  # the SDK is imported only here
        self.lasting = Lasting(metered, self.ledger.hmac, self.drift, TaskOwners(), self.approvals,
                               self.ledger.subkey("approval-state"), tracing=self.tracing)
        self.pipeline = Pipeline.build(self.snapshot, self.lasting)
        self.auth = Authenticator(metered, www_authenticate)
        hosts = HostPolicy(s.host, s.port, s.allowed_hosts, s.allowed_origins)
        self.endpoint = McpEndpoint(self._current_pipeline, self.auth, self.upstreams, self.sessions, hosts,
                                    s.limits.max_body_bytes, s.public_url)
        from ledgergate.api.audit import audit_routes

        self._router.router.routes.extend(
            Route(r.path, self._audit_reader(r.endpoint), methods=r.methods) for r in audit_routes(self.ledger))
        self._router.router.routes.extend(approval_routes(
            self.approvals, self._api_principal, auditor_groups=s.audit.reader_groups,
            unauthorized=self._api_unauthorized))
        self._tasks.append(asyncio.create_task(self._expire_sessions()))
        if self.config.path is not None:
            self._tasks.append(asyncio.create_task(self._watch_config()))
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, lambda: self._tasks.append(asyncio.create_task(self.reload("SIGHUP"))))

    def _current_pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._tasks:
            task.cancel()
        if self.endpoint is not None:
            await self.endpoint.close()
        await self.sessions.close()
        await self.upstreams.close()
        await self.snapshot.identity.close()
        if self.lasting is not None:
            await self.lasting.gateway_tasks.close()
        if self.approvals is not None:
            await self.approvals.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.drift is not None:
            self.drift.close()
        if self.ledger is not None:
            await self.ledger.close()
        if self.tracing is not None:
            await self.tracing.close()

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(60)
            with contextlib.suppress(Exception):
                await self.sessions.expire_idle()

    # ── reload ──────────────────────────────────────────────────────────────
    def _mtime(self) -> float | None:
        try:
            return self.config.path.stat().st_mtime if self.config.path else None
        except OSError:
            return None

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            mtime = self._mtime()
            if mtime is not None and mtime != self._config_mtime:
                self._config_mtime = mtime
                await self.reload("file change")

    async def reload(self, trigger: str) -> bool:
        """Re-read the config file; a valid one replaces policy, masking, budgets and off-boarding lists
        atomically, an invalid one is refused with the error logged and the old one kept. Listeners,
        servers, storage and the ledger need a restart (the reload says so)."""
        assert self.config.path is not None and self.ledger is not None
        async with self._reload_lock:
            digest = None
            try:
                text = self.config.path.read_bytes()
                digest = hashlib.sha256(text).hexdigest()
                loaded = load_config(self.config.path)
                new = loaded.settings
                identity = self.snapshot.identity
                fresh_identity = None
                if not identity.can_reconfigure(new.identity):
                    fresh_identity = IdentityService(new.identity, new.storage, loaded.base_dir)
                snapshot = Snapshot.build(new, fresh_identity or identity)
            except (ConfigError, ValueError, OSError) as exc:
                log.error("config reload (%s) refused, keeping the running config: %s", trigger, exc)
                await self.ledger.append("config.reload_refused", {"trigger": trigger, "config_sha256": digest,
                                                                   "error": str(exc)[:2000]})
                return False
            if fresh_identity is not None:
                await fresh_identity.start()
            else:
                identity.reconfigure(new.identity)
            restart_needed = [k for k in ("listen", "storage", "servers", "audit", "limits")
                              if getattr(new, k) != getattr(self.config.settings, k)]
            old_identity = self.snapshot.identity
            assert self.lasting is not None
            self.snapshot, self.pipeline = snapshot, Pipeline.build(snapshot, self.lasting)
            self.config.settings = new
            if self.drift is not None:
                self.drift.settings = new.tool_drift
            if fresh_identity is not None:
                await old_identity.close()
            await self.ledger.append("config.reloaded", {"trigger": trigger, "config_sha256": digest,
                                                         "policies": len(new.policies),
                                                         "needs_restart": restart_needed})
            log.info("config reloaded (%s); %s", trigger,
                     f"restart needed for {', '.join(restart_needed)}" if restart_needed else "all applied")
            return True

    # ── REST: callers authenticate as on /mcp ───────────────────────────────
    async def _api_principal(self, request: Request) -> Principal:
        """The caller of a REST route (raises AuthError, recorded; a foreign Host is refused first)."""
        if not self.endpoint or not self.endpoint.hosts.host_ok(request.headers.get("host")):
            raise ForbiddenError("Forbidden: Host header not allowed")
        assert self.auth is not None
        return await self.auth.authenticate(
            self.snapshot.identity, request.headers.get("authorization"), request.scope.get("query_string", b""),
            "api", request.client.host if request.client else None)

    def _api_unauthorized(self, request: Request, exc: AuthError) -> Response:
        base = self.config.settings.public_url or f"{request.url.scheme}://{request.headers.get('host')}"
        challenge = www_authenticate(f"{base}/.well-known/oauth-protected-resource/mcp", None, exc.message)
        return JSONResponse({"error": f"Unauthorized: {exc.message}"}, status_code=401,
                            headers={"WWW-Authenticate": challenge})

    def _audit_reader(self, endpoint: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def guarded(request: Request) -> Response:
            try:
                principal = await self._api_principal(request)
            except AuthError as exc:
                return self._api_unauthorized(request, exc)
            except GatewayError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.http_status)
            readers = set(self.config.settings.audit.reader_groups)
            if principal.groups.isdisjoint(readers):
                return JSONResponse({"error": "Forbidden: reading the audit ledger needs one of the groups "
                                              f"{sorted(readers)}"}, status_code=403)
            return await endpoint(request)

        return guarded

    # ── ASGI ────────────────────────────────────────────────────────────────
    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith("/mcp/") and self.endpoint is not None:
            server = scope["path"][5:].partition("/")[0]
            started = time.perf_counter()
            status_box: list[int] = [0]

            async def counting_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status_box[0] = message["status"]
                    self.metrics.latency.labels(server).observe(time.perf_counter() - started)
                await send(message)

            try:
                await self.endpoint(scope, receive, counting_send)
            finally:
                self.metrics.requests.labels(server, str(status_box[0])).inc()
            return
        await self._router(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which exits
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ── small endpoints ─────────────────────────────────────────────────────
    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        identity = self.snapshot.identity.readiness()
        checks: dict[str, Any] = {"identity": identity, "ledger": "ok" if self.ledger is not None else "not open"}
        # Ready when requests can be both authenticated and recorded: with no usable keys for any
        # issuer and no API keys, every caller would be refused.
        can_authenticate = not identity or any(state == "ok" for state in identity.values())
        ready = self.ledger is not None and self.endpoint is not None and can_authenticate
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        approvals = self.approvals
        pending = (lambda: asyncio.to_thread(approvals.store.count, "pending")) if approvals is not None else None
        await self.metrics.state.refresh(self.ledger, pending, self._started)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _approval_created(self, approval_id: str) -> float:
        assert self.approvals is not None
        return (await self.approvals.get(approval_id)).created

    async def _resource_metadata(self, request: Request) -> Response:
        server = request.path_params["server"]
        if server not in self.upstreams.names:
            return JSONResponse({"error": f"unknown server {server!r}"}, status_code=404)
        s = self.config.settings
        base = s.public_url or f"{request.url.scheme}://{request.headers.get('host')}"
        issuers = [i.issuer for i in s.identity.oidc]
        return JSONResponse(protected_resource_metadata(f"{base}/mcp/{server}", issuers, []))


def configure_logging(level: str) -> None:
    import json

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            payload = {"time": self.formatTime(record), "level": record.levelname.lower(),
                       "logger": record.name, "message": record.getMessage()}
            request_id = REQUEST_ID.get()
            if request_id is not None:
                payload["request_id"] = request_id
            if record.exc_info:
                payload["exception"] = self.formatException(record.exc_info)
            return json.dumps(payload)

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn follows "Unsupported upgrade request." with advice to install a WebSocket library;
    # the gateway serves no WebSocket on purpose (uvicorn_config), so that advice would mislead.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: not record.getMessage().startswith("No supported WebSocket library"))


def run(config: LoadedConfig, ready: Callable[[Gateway], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; uvloop + httptools where available."""
    import uvicorn

    configure_logging(config.settings.log_level)
    # The ledger's writer thread must get the GIL promptly when its commit returns, or every
    # request waits for it; CPython's default 5 ms switch interval would let the event loop
    # thread hold it that long under load.
    sys.setswitchinterval(0.0005)
    gateway = Gateway(config)
    s = config.settings
    server = uvicorn.Server(uvicorn_config(gateway.asgi, s.host, s.port, s.limits))
    server.run()


def uvicorn_config(app: Any, host: str, port: int, limits: LimitsSettings | None = None) -> Any:
    """How the gateway is served: uvloop and httptools, no access log (the ledger is the record),
    no proxy-header rewriting (the client address is what connected), no headers we do not mean,
    no WebSocket (nothing here speaks it: an upgrade request is answered as plain HTTP), and the
    client limits of `limits` (slow clients, connection count; `gateway/serving.py`)."""
    import uvicorn

    from ledgergate.gateway.serving import ClientLimits, GatheringHttpToolsProtocol

    lim = limits or LimitsSettings()
    http = GatheringHttpToolsProtocol.with_limits(ClientLimits(
        header_timeout=lim.client_header_timeout, body_timeout=lim.client_body_timeout,
        keepalive_timeout=lim.client_keepalive_timeout, max_connections=lim.max_client_connections))
    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http=http, ws="none",
                          lifespan="on", interface="asgi3", log_config=None, access_log=False,
                          timeout_graceful_shutdown=5, server_header=False, proxy_headers=False,
                          date_header=False)

