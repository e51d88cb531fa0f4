"""The configured protected servers and how to open a session with each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ledgergate.errors import GatewayError, UpstreamError
from ledgergate.upstream.base import ClientHello, Era, UpstreamSession
from ledgergate.upstream.http import (
    HttpHandshakeSession,
    HttpModernSession,
    HttpPool,
    discover,
)
from ledgergate.upstream.settings import PoolLimits, ServerSettings
from ledgergate.upstream.sse import SseSession
from ledgergate.upstream.stdio import ProcessSlots, StdioSession

log = logging.getLogger("ledgergate.upstream")


class UnknownServer(GatewayError):
    http_status = 404


#: seconds a client refused at `max_processes` is told to wait (`Retry-After`): a child ends when its
#: session closes or idles out, which nothing here can predict, so a short, fixed hint
PROCESS_CAP_RETRY_AFTER = 5


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
            headers=((b"retry-after", str(PROCESS_CAP_RETRY_AFTER).encode()),))


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
        #: the children of a stdio server running now, against its `max_processes` (None for a URL server)
        self.processes = ProcessSlots(settings.max_processes) if not settings.url else None

    async def era(self) -> Era:
        if self._era is None:
            async with self._lock:
                if self._era is None:
                    assert self.pool is not None
                    self._discover = await discover(self.pool)
                    self._era = "modern" if self._discover is not None else "handshake"
                    log.info("upstream %s speaks the %s era", self.name, self._era)
        return self._era

    async def open_session(self, hello: ClientHello) -> UpstreamSession:
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
        assert self.processes is not None
        slot = self.processes.take()
        if slot is None:
            log.warning("upstream %s: a session was refused: %d processes run (servers.%s.max_processes)",
                        self.name, self.processes.limit, self.name)
            raise ProcessCapReached(self.name, self.processes.limit)
        # the session owns the slot from here: it gives it back once its child has exited, or at once if
        # the child never starts (`StdioSession.open`)
        stdio = StdioSession(argv, self.settings.env, self.settings.cwd or self.base_dir, hello, self.name,
                             self.redact, self.settings.timeout, slot)
        await stdio.open()
        return stdio

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
