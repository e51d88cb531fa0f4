"""The gateway's transport, sessions, bridge and upstream connectors with no-op stages — the
"pass-through" the data-path issue measures (identity, policy, masking and audit are measured by
their own benchmarks and in bench_datapath.py's full-pipeline column). Benchmark use only: it
lets anyone in; never run it in front of a real server.

    python bench/passthrough_gateway.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import uvicorn

from ledgergate.app import uvicorn_config
from ledgergate.config import config_from_settings, parse_config
from ledgergate.gateway.auth import Authenticator
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.messages import Messages
from ledgergate.gateway.transport.endpoint import McpEndpoint
from ledgergate.gateway.transport.hosts import HostPolicy
from ledgergate.identity.resource_metadata import www_authenticate
from ledgergate.policy.budgets import Budgets
from ledgergate.policy.decision import Decision
from ledgergate.policy.settings import BudgetsSettings
from ledgergate.principal import Principal
from ledgergate.upstream.registry import Upstreams
from ledgergate.upstream.settings import PoolLimits

PRINCIPAL = Principal("bench", "bench", "human", frozenset({"bench"}))
ALLOW = Decision("allow", "bench")
NO_BUDGETS = Budgets.from_settings(BudgetsSettings())


class NoIdentity:
    async def authenticate(self, credential: str | None) -> Principal:
        return PRINCIPAL


class AllowAll:
    def decide(self, *args: Any) -> Decision:
        return ALLOW

    def filter_list(self, principal: Any, server: str, method: str, items: list, now: float) -> list:
        return items


class NoMasking:
    def mask(self, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
        return value, {}

    def mask_for_ledger(self, value: Any) -> tuple[Any, dict[str, int]]:
        return value, {}


class NoAudit:
    async def append(self, event: str, fields: Any) -> int:
        return 0


def build(port: int, upstream_url: str) -> McpEndpoint:
    settings = parse_config(f'listen: "127.0.0.1:{port}"\nservers:\n  everything:\n    url: "{upstream_url}"\n')
    config = config_from_settings(settings, Path.cwd())
    policy, masking = AllowAll(), NoMasking()
    snapshot = Snapshot(settings, masking, policy, NO_BUDGETS, NoIdentity(), "bench")  # type: ignore[arg-type]
    evidence = Evidence(NoAudit(), masking, lambda v: "")
    # the chain with no stages at all: transport, sessions, bridge and upstream only
    pipeline = Pipeline(snapshot, (), (), evidence, Messages(policy, masking, evidence))
    return McpEndpoint(lambda: pipeline, Authenticator(NoAudit(), www_authenticate), Upstreams(settings.servers, str(config.base_dir), PoolLimits()),
                       SessionRegistry(), HostPolicy("127.0.0.1", port, [], []), settings.limits.max_body_bytes, None)


def main() -> None:
    port, upstream_url = int(sys.argv[1]), sys.argv[2]
    endpoint = build(port, upstream_url)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await endpoint(scope, receive, send)

    # served exactly as `ledgergate serve` serves (ledgergate.app.uvicorn_config)
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", port)).run()


if __name__ == "__main__":
    main()
