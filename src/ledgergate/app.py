"""Assembling the gateway: stages from config, the ASGI app, and running it under uvicorn.

`/mcp/...` is dispatched straight to the MCP endpoint (the hot path skips the
router); everything else (well-known metadata, REST API, health, metrics, UI)
goes through a Starlette router.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rich.markup import escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ledgergate.api.approvals import approval_routes
from ledgergate.api.ledger_reader import LedgerReader
from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.webhooks import WebhookNotifier
from ledgergate.audit.ledger import Ledger
from ledgergate.config import ConfigError, LimitsSettings, LoadedConfig, parse_config
from ledgergate.errors import AuthError, ForbiddenError, GatewayError, LedgerUnavailable
from ledgergate.gateway.auth import Authenticator
from ledgergate.gateway.call import Call
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.metrics import UNKNOWN_SERVER, GatewayMetrics, MeteredLedger
from ledgergate.gateway.pipeline import Lasting, Pipeline
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.stages.audit import MaskedLedger
from ledgergate.gateway.tasks import TaskOwners
from ledgergate.gateway.telemetry import Tracing
from ledgergate.gateway.transport.endpoint import McpEndpoint
from ledgergate.gateway.transport.hosts import HostPolicy
from ledgergate.identity.resource_metadata import (
    protected_resource_metadata,
    www_authenticate,
)
from ledgergate.identity.service import IdentityService
from ledgergate.principal import Principal
from ledgergate.reload import (
    UnstableFile,
    file_signature,
    plan_reload,
    read_stable,
    reload_problems,
)
from ledgergate.requestlog import REQUEST_ID
from ledgergate.store.fingerprints_store import FingerprintStore
from ledgergate.store.signouts_store import SignOutStore
from ledgergate.terminal import console
from ledgergate.upstream.registry import Upstreams
from ledgergate.upstream.settings import PoolLimits

log = logging.getLogger("ledgergate")

#: seconds uvicorn gives connections to close once the drain is over (the calls are answered by then:
#: what is left is writing those answers and ending event streams)
CLOSE_GRACE = 5
#: seconds a pod's termination grace period should allow beyond `limits.drain_timeout`: recording the
#: calls cut off (milliseconds normally, `audit.append_timeout` at worst), closing connections
#: (CLOSE_GRACE) and stopping (the final checkpoint and its witness pushes). The Kubernetes manifests
#: set terminationGracePeriodSeconds to the default drain_timeout plus this (docs/kubernetes.md §7).
SHUTDOWN_MARGIN = 30.0


class Gateway:
    """Owns every long-lived part; `asgi` is what uvicorn serves."""

    def __init__(self, config: LoadedConfig) -> None:
        self.config = config
        s = config.settings
        self.snapshot = Snapshot.build(s, IdentityService(s.identity, s.storage, config.base_dir))
        self.upstreams = Upstreams(s.servers, str(config.base_dir), PoolLimits(
            s.limits.upstream_connections, s.limits.upstream_keepalive_expiry, s.limits.upstream_pool_timeout),
            redact=self._mask_for_log)
        self.sessions = SessionRegistry(s.limits.session_idle_timeout, s.limits.max_sessions_per_principal)
        self.metrics = GatewayMetrics()
        self._started = time.time()
        #: freeze the start-up heap once started (`quiet_collector`); set by `run`, the serving process
        self.freeze_heap = False
        self.ledger: Ledger | None = None
        self.endpoint: McpEndpoint | None = None
        self.drift: DriftGuard | None = None
        self.signouts: SignOutStore | None = None
        self.lasting: Lasting | None = None
        self.pipeline: Pipeline | None = None
        self.auth: Authenticator | None = None
        self.approvals: ApprovalService | None = None
        #: the ledger as everything outside the pipeline writes to it: masked whole, then counted
        self.records: MaskedLedger | None = None
        self.webhooks: WebhookNotifier | None = None
        self.reader: LedgerReader | None = None
        self.tracing: Tracing | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        #: restart-only keys are compared with what the process started with, not with the last reload
        self._started_settings = config.settings
        #: what the watcher compares with, taken before the digest: a save during startup is not missed
        self._config_signature = file_signature(config.path) if config.path is not None else None
        self._config_digest = self._file_digest()
        self._reload_owed = False
        self._last_attempt = 0.0
        self._reload_lock = asyncio.Lock()
        #: SIGTERM was received: not ready, no new calls, those in flight may finish (`drain`)
        self.draining = False
        self._router = Starlette(routes=self._routes())
        # Starlette answers `/path/` for a route `/path` with a redirect built from the request's Host,
        # before any route's Host check runs: a foreign Host got a 307 to itself. No route ends in `/`
        # but the console's `/ui/`, which is a route of its own, so the redirect serves no one.
        self._router.router.redirect_slashes = False
        self._router.router.default = _json_under_api(self._router.router.default)

    def _mask_for_log(self, text: str) -> str:
        """Text from outside (a stdio server's stderr) as the log may keep it: masked with the current
        config's ledger profile, like every record."""
        masked, _ = self.snapshot.masker.mask_for_ledger(text)
        return str(masked)

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
        # records written outside the pipeline are masked whole too (gateway/stages/audit.py `seal`), then counted
        masked_ledger = self.records = MaskedLedger(metered, lambda: self.snapshot.masker)
        self.approvals = ApprovalService(open_store(s.storage, self.config.base_dir), masked_ledger.append,
                                         s.approvals, notifier=self.webhooks,
                                         args_key=self.ledger.subkey("approval-arguments"))
        await self.approvals.start()
        metered.approval_created = self._approval_created
        if s.telemetry.otlp_endpoint:
            self.tracing = Tracing.start(s.telemetry)  # the SDK is imported only here
        self.lasting = Lasting(metered, self.ledger.hmac, self.drift, TaskOwners(), self.approvals,
                               self.ledger.subkey("approval-state"), tracing=self.tracing,
                               recheck=self._may_still_run, preview_key=self.ledger.subkey("approval-preview"))
        self.pipeline = Pipeline.build(self.snapshot, self.lasting)
        self.auth = Authenticator(masked_ledger, www_authenticate)
        hosts = HostPolicy(s.host, s.port, s.allowed_hosts, s.allowed_origins)
        self.endpoint = McpEndpoint(self._current_pipeline, self.auth, self.upstreams, self.sessions, hosts,
                                    s.limits.max_body_bytes, s.public_url, s.limits.max_json_values,
                                    s.limits.json_values_in_flight)
        from ledgergate.api.audit import audit_routes

        self._router.router.routes.extend(
            Route(r.path, self._audit_reader(r.endpoint), methods=r.methods) for r in audit_routes(self.ledger))
        from ledgergate.api.tiles import tile_routes  # checkpoint and hash tiles open, entry bundles for auditors

        self._router.router.routes.extend(tile_routes(self.ledger, self._audit_reader))
        self._router.router.routes.extend(approval_routes(
            self.approvals, self._api_principal, auditor_groups=s.audit.reader_groups,
            unauthorized=self._api_unauthorized, forbidden=self._approval_forbidden))
        # ── records' offline proofs (auditors), and the web console at /ui/ ──
        from ledgergate.api.records import record_routes

        self.reader = LedgerReader(s.storage, self.config.base_dir, self.ledger.signer.verifier,
                                   tuple(s.audit.witnesses))
        self._router.router.routes.extend(
            Route(r.path, self._audit_reader(r.endpoint), methods=r.methods) for r in record_routes(self.reader))
        from ledgergate.ui.console import ConsoleContext, console_routes

        self.signouts = SignOutStore.open(s.storage, self.config.base_dir)
        # a 2026-07-28 upstream's round (`lgu1.`) is answered once, on any replica: the same store of used ids
        self.endpoint.bridge.used_rounds = self.signouts

        self._router.router.routes.extend(console_routes(ConsoleContext(
            settings=lambda: self.config.settings, identity=lambda: self.snapshot.identity, approvals=self.approvals,
            ledger=self.ledger, reader=self.reader, host_ok=hosts.host_ok, fingerprints=self.drift.store,
            config_path=self.config.path, signouts=self.signouts)))
        self._tasks.append(asyncio.create_task(self._expire_sessions()))
        if self.config.path is not None:
            self._tasks.append(asyncio.create_task(self._watch_config()))
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _file_digest(self) -> str | None:
        """SHA-256 of the config file as it is now (at start: the bytes the running config came from)."""
        if self.config.path is None:
            return None
        try:
            return hashlib.sha256(self.config.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def _may_still_run(self, call: Call) -> str | None:
        """Why `call`, approved after a wait, may not run under the config in force now (None: it may)."""
        snapshot = self.snapshot
        try:
            snapshot.identity.check_disabled(call.principal)
        except AuthError:
            return "the requester has been disabled since the call was made"
        now = snapshot.policy.decide(call.principal, call.server, call.method, call.target, call.arguments,
                                     time.time())
        if now.effect not in ("allow", "approve"):
            return f"the policy now in force refuses it (rule {now.rule or 'default deny'})"
        was = call.decision
        if now.effect == "approve" and (was is None or now.rule != was.rule):
            return f"the policy now in force puts it under another approval rule ({now.rule}); send it again"
        if now.effect == "approve" and was is not None and now.approvers != was.approvers:
            return f"the approvers of rule {now.rule} have changed since it was asked; send it again"
        return None

    def _current_pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline

    # ── shutdown ────────────────────────────────────────────────────────────
    async def drain(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM (`serving.DrainingServer`, before it closes the listener): from now on /readyz says not
        ready, so the Service stops sending traffic here, and a new call is refused (503, recorded); the
        calls in flight have up to `limits.drain_timeout` to finish (`hurry()`, a second signal, ends the
        wait early). Those still running then are cut off: each answered with an error naming its request id,
        its outcome recorded, all before the server closes connections and `stop` closes the ledger."""
        self.draining = True
        if self.lasting is None:
            return
        flights = self.lasting.flights
        flights.close()
        timeout = self.config.settings.limits.drain_timeout
        holding = flights.holding()
        if holding:
            log.info("shutting down: no new calls; %d call(s) in flight may finish within %gs "
                     "(limits.drain_timeout)", holding, timeout)
        else:
            log.info("shutting down: no new calls; none in flight")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while flights.holding() and loop.time() < deadline and not hurry():
            await asyncio.sleep(0.05)
        await self._cut_off(f"still running after {timeout:g}s (limits.drain_timeout)"
                            if flights.holding() else "streams open at the end of the drain")

    async def _cut_off(self, why: str) -> None:
        """End every call still in flight, each answered and recorded (`pipeline.InFlight.cut_off`)."""
        if self.lasting is None or not len(self.lasting.flights):
            return
        patience = self.config.settings.audit.append_timeout + 1.0
        cut = await self.lasting.flights.cut_off(patience)
        log.warning("shutting down: %d call(s) %s were cut off; each was answered with an error and its outcome "
                    "recorded", len(cut), why)

    async def stop(self) -> None:
        self.draining = True
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._tasks:
            task.cancel()
        # Served without a drain (embedded), or a call parked where nothing of ours runs: cut off now, while
        # the ledger still takes its record.
        await self._cut_off("still in flight at shutdown")
        if self.endpoint is not None:
            await self.endpoint.close()
        if self.auth is not None and self.ledger is not None:
            await self.auth.close()  # the refusals still counted are recorded before the ledger closes
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
        if self.signouts is not None:
            self.signouts.close()
        if self.tracing is not None:
            await self.tracing.close()
        if self.ledger is not None:
            await self.ledger.close()  # last: every record above is durable, then the final checkpoint

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(60)
            with contextlib.suppress(Exception):
                await self.sessions.expire_idle()

    # ── reload ──────────────────────────────────────────────────────────────
    #: seconds between the watcher's looks at the file
    WATCH_INTERVAL = 1.0
    #: a reload that could not be recorded is tried again after this long
    RETRY_INTERVAL = 2.0

    async def _watch_config(self) -> None:
        """Poll the file; reload when its (size, mtime, inode) changed, or when a reload could not be
        recorded. Nothing a reload raises may end this loop: a dead watcher ignores every later save."""
        assert self.config.path is not None
        seen = self._config_signature
        while True:
            await asyncio.sleep(self.WATCH_INTERVAL)
            try:
                current = file_signature(self.config.path)
                retry = self._reload_owed and time.monotonic() - self._last_attempt >= self.RETRY_INTERVAL
                changed = current != seen
                if current is not None and (changed or retry):
                    seen = current
                    await self.reload("file change" if changed else "retry")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one reload
                self._reload_owed = True
                log.error("config watcher: reload failed, will try again: %s: %s", type(exc).__name__, exc)

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self._reload_logged("SIGHUP"))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _reload_logged(self, trigger: str) -> None:
        try:
            await self.reload(trigger)
        except Exception as exc:  # noqa: BLE001 - a signal handler has no caller to raise to
            self._reload_owed = True
            log.error("config reload (%s) failed, will try again: %s: %s", trigger, type(exc).__name__, exc)

    async def reload(self, trigger: str) -> bool:
        """Re-read the config file; True when a new config was applied.

        The file is used only once it is stable (`reload.read_stable`). Bytes equal to the last ones
        applied or refused are a no-op, so a save announced by both SIGHUP and the watcher reloads
        once. A valid config replaces policy, masking, budgets, drift mode, off-boarding lists and
        audit readers atomically; an invalid one is refused and the running one kept. Either way the
        outcome is recorded *before* anything changes: when the ledger cannot record it, nothing is
        applied, and the watcher tries again (`RETRY_INTERVAL`)."""
        assert self.config.path is not None and self.ledger is not None and self.lasting is not None
        async with self._reload_lock:
            self._last_attempt = time.monotonic()
            self._reload_owed = False
            digest: str | None = None
            try:
                stable = await read_stable(self.config.path, self.RELOAD_SETTLE)
                digest = stable.sha256
                if digest == self._config_digest:
                    log.info("config reload (%s): file unchanged since the last reload, nothing to do", trigger)
                    return False
                try:
                    text = stable.data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ConfigError([f"not UTF-8 text (byte {exc.start})"], str(self.config.path)) from None
                new = parse_config(text, str(self.config.path))
                problems = reload_problems(self.config.settings, new)
                if problems:
                    raise ConfigError(problems, str(self.config.path))
                plan = plan_reload(self._started_settings, self.config.settings, new)
                identity = self.snapshot.identity
                fresh_identity = None
                if not identity.can_reconfigure(plan.effective.identity):
                    fresh_identity = IdentityService(plan.effective.identity, plan.effective.storage,
                                                     self.config.base_dir)
                snapshot = Snapshot.build(plan.effective, fresh_identity or identity)
            except Exception as exc:  # noqa: BLE001 - whatever the new config trips over refuses it
                if not isinstance(exc, (ConfigError, ValueError, OSError, UnstableFile)):
                    exc = ConfigError([f"{type(exc).__name__}: {exc}"], str(self.config.path))
                log.error("config reload (%s) refused, keeping the running config: %s", trigger, exc)
                if await self._record_reload("config.reload_refused", trigger, {"config_sha256": digest,
                                                                             "error": str(exc)[:2000]}):
                    self._config_digest = digest or self._config_digest
                return False
            if fresh_identity is not None:
                await fresh_identity.start()
            recorded = await self._record_reload("config.reloaded", trigger, {
                "config_sha256": digest, "policies": len(plan.effective.policies),
                "applied": plan.applied, "needs_restart": plan.needs_restart})
            if not recorded:
                if fresh_identity is not None:
                    await fresh_identity.close()
                return False
            # Recorded: swap. Nothing below can fail half-way (assignments and an in-place list swap).
            if fresh_identity is None:
                identity.reconfigure(plan.effective.identity)
            old_identity = self.snapshot.identity
            self.snapshot, self.pipeline = snapshot, Pipeline.build(snapshot, self.lasting)
            self.config.settings = plan.effective
            self._config_digest = digest
            if self.drift is not None:
                self.drift.settings = plan.effective.tool_drift
            if fresh_identity is not None:
                await old_identity.close()
            log.info("config reloaded (%s): applied %s; %s", trigger, ", ".join(plan.applied) or "nothing new",
                     f"restart needed for {', '.join(plan.needs_restart)}" if plan.needs_restart
                     else "nothing waits for a restart")
            return True

    #: seconds between the two reads that must agree before a config file is used
    RELOAD_SETTLE = 0.15

    async def _record_reload(self, event: str, trigger: str, fields: dict[str, Any]) -> bool:
        """Append a reload record; False (logged, retried by the watcher) when the ledger cannot."""
        assert self.records is not None
        try:
            await self.records.append(event, {"trigger": trigger, **fields})
        except (LedgerUnavailable, ValueError) as exc:
            self._reload_owed = True
            log.error("config reload (%s) not applied: the ledger cannot record it (%s); the running config "
                      "stays and the reload is tried again", trigger, getattr(exc, "message", str(exc)))
            return False
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

    async def _approval_forbidden(self, request: Request, principal: Principal, approval_id: str, why: str) -> None:
        assert self.auth is not None
        await self.auth.forbidden(principal, "api", request.client.host if request.client else None, why,
                                  approval=approval_id)

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
                detail = f"Forbidden: reading the audit ledger needs one of the groups {sorted(readers)}"
                assert self.auth is not None
                await self.auth.forbidden(principal, "api", request.client.host if request.client else None,
                                          detail, path=request.url.path)
                return JSONResponse({"error": detail}, status_code=403)
            return await endpoint(request)

        return guarded

    # ── ASGI ────────────────────────────────────────────────────────────────
    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith("/mcp/") and self.endpoint is not None:
            server = scope["path"][5:].partition("/")[0]
            # the label is a configured server's name, never the path's text: anyone can send a
            # request to /mcp/<anything>, and a series per name would grow /metrics without end
            label = server if self.upstreams.known(server) else UNKNOWN_SERVER
            started = time.perf_counter()
            status_box: list[int] = [0]

            async def counting_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status_box[0] = message["status"]
                    self.metrics.latency.labels(label).observe(time.perf_counter() - started)
                await send(message)

            try:
                await self.endpoint(scope, receive, counting_send)
            finally:
                self.metrics.requests.labels(label, str(status_box[0])).inc()
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
                if self.freeze_heap:
                    quiet_collector()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ── small endpoints ─────────────────────────────────────────────────────
    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        identity_service = self.snapshot.identity
        identity = identity_service.readiness()
        # The ledger's state is the outcome of its last write (records or an idle probe write), so a
        # replica that cannot record (full disk, lost database) is taken out of rotation; the
        # fingerprint store is asked now (one small read), since every tools/list needs it.
        ledger = self.ledger.readiness() if self.ledger is not None else "not open"
        problem = "not open" if self.drift is None else await asyncio.to_thread(self.drift.store.check)
        fingerprints = problem or "ok"
        checks: dict[str, Any] = {"identity": identity, "ledger": ledger, "tool_fingerprints": fingerprints}
        # Ready when requests can be both authenticated and recorded (`IdentityService.unready`: with
        # issuers configured, one of them must have its keys loaded).
        unauthenticated = identity_service.unready()
        if unauthenticated is not None:
            checks["authentication"] = unauthenticated
        if self.draining:
            checks["shutdown"] = "draining: the gateway is shutting down and takes no new calls"
        ready = (ledger == "ok" and fingerprints == "ok" and self.endpoint is not None and unauthenticated is None
                 and not self.draining)
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


def quiet_collector() -> None:
    """Take the start-up heap out of the cyclic garbage collector's view.

    What start-up builds (modules, config, schemas, the policy and masking engines: ~130,000
    objects) lives until exit, yet every full collection walked all of it again: 45-75 ms here,
    during which every call in flight waited. That was the p99 tail at c=8 in
    `bench/bench_gateway.py` (+40 to +190 ms over direct; within a few ms of direct once frozen).
    Frozen, a full collection walks only what was made since. Nothing frozen is freed, which costs
    nothing for objects that live until exit; the serving process alone does this (`run`), not an
    embedding one whose heap is not ours to pin."""
    gc.collect()
    gc.freeze()


#: the exit status of a config `serve` cannot use, as the CLI's config errors (commands/common.EXIT_USAGE)
EXIT_CONFIG = 2


def listen_problem(host: str, port: int) -> str | None:
    """Why the gateway cannot listen at `host`:`port` because the host does not resolve, or None.

    `listen` may name a host, and only resolving it tells whether it exists. Left to uvicorn, a host that
    does not resolve fails after the gateway has started (store opened, ledger records written) with the
    resolver's words alone, "[Errno -2] Name or service not known", which name neither the setting nor
    the value."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"the host {host!r} does not resolve ({exc.strerror or exc})"
    except (UnicodeError, OSError) as exc:  # a label IDNA cannot encode; a resolver that cannot be asked
        return f"the host {host!r} cannot be resolved ({type(exc).__name__}: {exc})"
    return None


def run(config: LoadedConfig, ready: Callable[[Gateway], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; uvloop + httptools where available. A `listen` host that does not
    resolve is one line naming the setting on stderr and exit EXIT_CONFIG, before anything is started."""
    import uvicorn

    problem = listen_problem(config.settings.host, config.settings.port)
    if problem is not None:
        console(stderr=True).print(f"[red]error[/red] listen: cannot listen on {escape(config.settings.listen)}: "
                                   f"{escape(problem)}; check `listen` in the config", highlight=False)
        raise SystemExit(EXIT_CONFIG)
    configure_logging(config.settings.log_level)
    # The ledger's writer thread must get the GIL promptly when its commit returns, or every
    # request waits for it; CPython's default 5 ms switch interval would let the event loop
    # thread hold it that long under load.
    sys.setswitchinterval(0.0005)
    from ledgergate.gateway.serving import DrainingServer

    gateway = Gateway(config)
    gateway.freeze_heap = True
    s = config.settings
    # SIGTERM drains first (`Gateway.drain`: not ready, no new calls, those in flight finish or are cut off),
    # then uvicorn closes the listener and the connections, then the lifespan stops the gateway
    server: uvicorn.Server = DrainingServer(uvicorn_config(gateway.asgi, s.host, s.port, s.limits), gateway.drain)
    server.run()


def uvicorn_config(app: Any, host: str, port: int, limits: LimitsSettings | None = None) -> Any:
    """How the gateway is served: uvloop and httptools, no access log (the ledger is the record),
    no proxy-header rewriting (the client address is what connected), no headers we do not mean,
    no WebSocket (nothing here speaks it: an upgrade request is answered as plain HTTP), and the
    client limits of `limits` (slow clients, connection count; `gateway/serving.py`). Connections get
    CLOSE_GRACE to close at shutdown: the calls were drained before (`Gateway.drain`)."""
    import uvicorn

    from ledgergate.gateway.serving import ClientLimits, GatheringHttpToolsProtocol

    lim = limits or LimitsSettings()
    http = GatheringHttpToolsProtocol.with_limits(ClientLimits(
        header_timeout=lim.client_header_timeout, body_timeout=lim.client_body_timeout,
        keepalive_timeout=lim.client_keepalive_timeout, max_connections=lim.max_client_connections,
        max_header_bytes=lim.max_header_bytes))
    return uvicorn.Config(app, host=host, port=port, loop="uvloop", http=http, ws="none",
                          lifespan="on", interface="asgi3", log_config=None, access_log=False,
                          timeout_graceful_shutdown=CLOSE_GRACE, server_header=False, proxy_headers=False,
                          date_header=False)


def _json_under_api(fallback: ASGIApp) -> ASGIApp:
    """The router's answer when no route matches: under `/api/`, the JSON every API error is
    (`{"error": ...}`), not a plain-text body a client reading JSON cannot parse; elsewhere `fallback`."""
    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith("/api/"):
            response = JSONResponse({"error": "no such API endpoint (the README lists them)"}, status_code=404)
            await response(scope, receive, send)
            return
        await fallback(scope, receive, send)
    return not_found
