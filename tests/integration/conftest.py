"""Shared real peers for integration tests: an OpenID provider, server-everything, a stateless
SDK server, and a gateway in front of them (with the demo bank server over stdio)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.integration import POLICIES
from tests.support.procs import Proc, free_port, start_everything


@pytest.fixture(scope="session")
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def everything() -> Iterator[Proc]:
    proc = start_everything()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    """server-everything of a module's own, for modules whose gateways must not share one with the rest
    (replicas killed, approvals held, counters read)."""
    proc = start_everything()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def idp() -> Iterator[Provider]:
    """An OpenID provider of a module's own (see `upstream`)."""
    p = Provider()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def stateless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    proc = Proc([*gw.STATELESS_ARGV, "--port", str(port)], port=port,
                log=tmp_path_factory.mktemp("stateless") / "server.log")
    yield proc
    proc.stop()




@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, provider: Provider, everything: Proc,
            stateless: Proc) -> Iterator[gw.RunningGateway]:
    servers = {
        "everything": {"url": f"http://127.0.0.1:{everything.port}/mcp",
                       "headers": {"X-Upstream-Key": "${UPSTREAM_KEY:-k}"}},
        # one identity (alice) runs every test of the session against this gateway, and sessions the tests do
        # not DELETE keep their child until they idle out: its share is the whole server, not a quarter of it
        "bank": {"command": gw.BANK_ARGV, "max_processes_per_principal": 32},
        "stateless": {"url": f"http://127.0.0.1:{stateless.port}/mcp"},
    }
    running = gw.start(tmp_path_factory.mktemp("gateway"), provider.issuer, servers, POLICIES,
                       {"limits": {"max_body_bytes": 65536, "max_sessions_per_principal": 1000}})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def token(provider: Provider) -> str:
    return provider.token("alice", ["staff"])


