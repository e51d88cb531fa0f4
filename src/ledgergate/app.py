"""Assembling the gateway: stages from config, the ASGI app, and running it under uvicorn.

`/mcp/...` is dispatched straight to the MCP endpoint (the hot path skips the
router); everything else (well-known metadata, REST API, health, metrics, UI)
goes through a Starlette router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledgergate.audit.ledger import Ledger
from ledgergate.config import ConfigError, LoadedConfig, load_config
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.gateway.transport import HostPolicy, McpEndpoint
from ledgergate.identity.resource_metadata import protected_resource_metadata, www_authenticate
from ledgergate.identity.service import IdentityService
from ledgergate.masking.engine import Masker
from ledgergate.policy.engine import PolicyEngine
from ledgergate.upstream.registry import Upstreams

log = logging.getLogger("ledgergate")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter("ledgergate_http_requests_total", "MCP HTTP requests by server and status",
                                ["server", "status"], registry=self.registry)
        self.latency = Histogram("ledgergate_http_request_seconds", "MCP HTTP request time (to response start)",
                                 ["server"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))


class PolicyHolder:
    """The current policy engine; a reload swaps it in one assignment, so calls see old or new, never half."""

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine

    def __call__(self) -> PolicyEngine:
        return self.engine


class Gateway:
    """Owns every long-lived part; `asgi` is what uvicorn serves."""

    def __init__(self, config: LoadedConfig) -> None:
        self.config = config
        s = config.settings
        self.masker = Masker.from_settings(s.masking)
        self.policy = PolicyHolder(PolicyEngine.from_settings(s.policies, set(self.masker.profiles)))
        self.identity = IdentityService(s.identity, s.storage, config.base_dir)
        self.upstreams = Upstreams(config)
        self.sessions = SessionRegistry(s.limits.session_idle_timeout)
        self.metrics = Metrics()
        self.ledger: Ledger | None = None
        self.endpoint: McpEndpoint | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._router = Starlette(routes=self._routes())

    def _routes(self) -> list[Route]:
        routes = [
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
            Route("/.well-known/oauth-protected-resource/mcp/{server}", self._resource_metadata),
        ]
        return routes

    # ── lifecycle ───────────────────────────────────────────────────────────
    async def start(self) -> None:
        s = self.config.settings
        self.ledger = await Ledger.open(s.audit, s.storage, self.config.base_dir)
        await self.identity.start()
        pipeline = Pipeline(self.identity, self.policy, self.masker, self.ledger,
                            self.masker.mask_for_ledger, self.ledger.hmac)
        hosts = HostPolicy(s.host, s.port, s.allowed_hosts, s.allowed_origins)
        self.endpoint = McpEndpoint(pipeline, self.upstreams, self.sessions, hosts, s.limits.max_body_bytes,
                                    www_authenticate, s.public_url)
        with contextlib.suppress(ImportError):
            from ledgergate.api.audit import audit_routes

            self._router.router.routes.extend(audit_routes(self.ledger))
        self._tasks.append(asyncio.create_task(self._expire_sessions()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.endpoint is not None:
            await self.endpoint.close()
        await self.sessions.close()
        await self.upstreams.close()
        await self.identity.close()
        if self.ledger is not None:
            await self.ledger.close()

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(60)
            with contextlib.suppress(Exception):
                await self.sessions.expire_idle()

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
        checks: dict[str, Any] = {"identity": self.identity.readiness()}
        ready = self.ledger is not None and self.endpoint is not None
        checks["ledger"] = "ok" if self.ledger is not None else "not open"
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
            if record.exc_info:
                payload["exception"] = self.formatException(record.exc_info)
            return json.dumps(payload)

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run(config: LoadedConfig, ready: Callable[[Gateway], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; uvloop + httptools where available."""
    import uvicorn

    configure_logging(config.settings.log_level)
    gateway = Gateway(config)
    s = config.settings
    uv_config = uvicorn.Config(gateway.asgi, host=s.host, port=s.port, loop="auto", http="auto",
                               lifespan="on", interface="asgi3", log_config=None, access_log=False,
                               timeout_graceful_shutdown=5, server_header=False)
    server = uvicorn.Server(uv_config)
    server.run()


__all__ = ["Gateway", "run", "ConfigError", "load_config", "signal"]
