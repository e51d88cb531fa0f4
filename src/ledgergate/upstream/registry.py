"""The configured protected servers and how to open a session with each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ledgergate.errors import RATE_LIMITED, GatewayError, UpstreamError
from ledgergate.upstream.base import ClientHello, Era, UpstreamSession
from ledgergate.upstream.http import (
    HttpHandshakeSession,
    HttpModernSession,
    HttpPool,
    discover,
)
from ledgergate.upstream.settings import PoolLimits, ServerSettings
from ledgergate.upstream.sse import SseSession
from ledgergate.upstream.stdio import (
    ProcessSlot,
    ProcessSlots,
    SlotRefusal,
    StdioSession,
)

log = logging.getLogger("ledgergate.upstream")


class UnknownServer(GatewayError):
    http_status = 404


#: seconds a client refused at `max_processes` or `max_processes_per_principal` is told to wait
#: (`Retry-After`): a child ends when its session closes or idles out, which nothing here can predict, so a
#: short, fixed hint
PROCESS_CAP_RETRY_AFTER = 5
_RETRY_AFTER = ((b"retry-after", str(PROCESS_CAP_RETRY_AFTER).encode()),)


class ProcessCapReached(UpstreamError):
    """A session of a stdio server would start one child more than its `max_processes`, counted across
    every identity. Refused at once, never queued (a flood of openings must not pile up waiting): a 503
    with `Retry-After`, recorded by the transport like every other failed opening (`request.refused`)."""

    http_status = 503

    def __init__(self, server: str, limit: int) -> None:
        super().__init__(
            f"server {server!r} runs its maximum of {limit} processes (servers.{server}.max_processes), so no "
            f"session of it can be opened now; try again later (in {PROCESS_CAP_RETRY_AFTER}s or more)",
            data={"reason": "max_processes", "server": server, "maxProcesses": limit,
                  "retryAfter": PROCESS_CAP_RETRY_AFTER},
            headers=_RETRY_AFTER)


class PrincipalProcessCapReached(UpstreamError):
    """A session of a stdio server would start one child more than its `max_processes_per_principal`
    allows the caller's identity. Refused at once like `ProcessCapReached` and recorded the same way, but a
    429 (the caller's own limit, which ending one of its own sessions lifts, as at
    `max_sessions_per_principal`), not a 503 (the server is there for everyone else)."""

    http_status = 429
    rpc_code = RATE_LIMITED

    def __init__(self, server: str, limit: int) -> None:
        super().__init__(
            f"this identity already runs {limit} processes of server {server!r}, its maximum "
            f"(servers.{server}.max_processes_per_principal), so it can open no more sessions of it now; end "
            f"one of its sessions (DELETE) or try again later (in {PROCESS_CAP_RETRY_AFTER}s or more)",
            data={"reason": "max_processes_per_principal", "server": server, "maxProcessesPerPrincipal": limit,
                  "retryAfter": PROCESS_CAP_RETRY_AFTER},
            headers=_RETRY_AFTER)


class Upstream:
    """One protected server. Learns its protocol era once (a `server/discover` probe) and opens sessions."""

    def __init__(self, name: str, settings: ServerSettings, base_dir: str, limits: PoolLimits,
                 redact: Callable[[str], str] | None = None) -> None:
        self.name = name
        self.redact = redact
        self.settings = settings
        self.base_dir = base_dir
        self.pool = HttpPool(settings.url, settings.headers, settings.timeout, limits.connections,
                             limits.keepalive_expiry, limits.pool_timeout) if settings.url else None
        # stdio and legacy HTTP+SSE servers are handshake-era by definition: no discover probe
        self._era: Era | None = None if settings.url and settings.transport != "sse" else "handshake"
        self._discover: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        #: the children of a stdio server running now, against its `max_processes` and, per identity, its
        #: `max_processes_per_principal` (None for a URL server)
        self.processes = (ProcessSlots(settings.max_processes, settings.principal_process_cap)
                          if not settings.url else None)

    async def era(self) -> Era:
        if self._era is None:
            async with self._lock:
                if self._era is None:
                    assert self.pool is not None
                    self._discover = await discover(self.pool)
                    self._era = "modern" if self._discover is not None else "handshake"
                    log.info("upstream %s speaks the %s era", self.name, self._era)
        return self._era

    async def open_session(self, hello: ClientHello, owner: str | None = None) -> UpstreamSession:
        """A new session of this server. `owner` is the key of the identity the session serves (a
        principal's `key`): a stdio child counts against that identity's `max_processes_per_principal`
        (None: only against `max_processes`)."""
        era = await self.era()
        if self.pool is not None and self.settings.transport == "sse":
            sse_session = SseSession(self.pool, hello, self.name)
            await sse_session.open()
            return sse_session
        if self.pool is not None:
            if era == "modern":
                assert self._discover is not None
                return HttpModernSession(self.pool, hello, self._discover)
            http_session = HttpHandshakeSession(self.pool, hello)
            await http_session.open()
            return http_session
        argv = self.settings.argv
        if not argv:
            raise UpstreamError(f"server {self.name!r} has no command")
        slot = self._process_slot(owner)
        # the session owns the slot from here: it gives it back once its child has exited, or at once if
        # the child never starts (`StdioSession.open`)
        stdio = StdioSession(argv, self.settings.env, self.settings.cwd or self.base_dir, hello, self.name,
                             self.redact, self.settings.timeout, slot)
        await stdio.open()
        return stdio

    def _process_slot(self, owner: str | None) -> ProcessSlot:
        """A slot for one more child of this stdio server, or the refusal of the cap it would pass."""
        assert self.processes is not None
        taken = self.processes.take(owner)
        if isinstance(taken, ProcessSlot):
            return taken
        raise self._refusal(taken)

    def _refusal(self, reason: SlotRefusal) -> UpstreamError:
        assert self.processes is not None
        if reason == "max_processes_per_principal":
            # the identity is not named: the ledger's `request.refused` record names it, the log need not
            log.warning("upstream %s: a session was refused: an identity runs %d processes "
                        "(servers.%s.max_processes_per_principal)", self.name, self.processes.per_principal,
                        self.name)
            return PrincipalProcessCapReached(self.name, self.processes.per_principal)
        log.warning("upstream %s: a session was refused: %d processes run (servers.%s.max_processes)",
                    self.name, self.processes.limit, self.name)
        return ProcessCapReached(self.name, self.processes.limit)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class Upstreams:
    """`redact` masks what a stdio server writes to stderr before the gateway logs it (masking is
    not this package's: the app passes the current config's masker in)."""

    def __init__(self, servers: Mapping[str, ServerSettings], base_dir: str, limits: PoolLimits,
                 redact: Callable[[str], str] | None = None) -> None:
        self._servers = {name: Upstream(name, server, base_dir, limits, redact) for name, server in servers.items()}

    def get(self, name: str) -> Upstream:
        try:
            return self._servers[name]
        except KeyError:
            raise UnknownServer(f"unknown server {name!r}") from None

    @property
    def names(self) -> list[str]:
        return list(self._servers)

    def known(self, name: str) -> bool:
        return name in self._servers

    async def close(self) -> None:
        for upstream in self._servers.values():
            await upstream.close()
