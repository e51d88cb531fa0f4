"""Tool-definition drift ("rug pull") at the gateway: every upstream `tools/list` is compared with
the accepted fingerprints; a changed tool is hidden and its calls refused (mode `block`) or only
reported (mode `alert`) until an operator runs `ledgergate tools accept`.

The judgement is policy.drift's (pure); this shell keeps the latest verdicts per server in memory
and does the store I/O off the event loop.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from ledgergate.policy.drift import DriftReport
from ledgergate.policy.settings import DriftMode, ToolDriftSettings
from ledgergate.store.fingerprints_store import FingerprintStore


class DriftGuard:
    def __init__(self, store: FingerprintStore, settings: ToolDriftSettings) -> None:
        self.store = store
        self.settings = settings
        self._reports: dict[str, DriftReport] = {}

    def mode_for(self, server: str) -> DriftMode:
        return self.settings.servers.get(server, self.settings.mode)

    async def is_blocked(self, server: str, tool: str | None) -> bool:
        """Whether a call must be refused. A tool blocked by the last listing is re-checked against the
        store, so `ledgergate tools accept` takes effect at once, without waiting for a new listing."""
        report = self._reports.get(server)
        if not tool or report is None or not report.blocks(tool):
            return False
        accepted = await anyio.to_thread.run_sync(self.store.accepted, server)
        return accepted.get(tool) != report.verdicts[tool].seen

    async def observe(self, server: str, tools: list[dict[str, Any]]) -> DriftReport:
        report = await anyio.to_thread.run_sync(self.store.observe, server, tools, self.mode_for(server), time.time())
        self._reports[server] = report
        return report

    def close(self) -> None:
        self.store.close()
