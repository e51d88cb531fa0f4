"""Stores recover without a restart, and /readyz tells the truth about them (issue 20 items 6 and 12).

A real gateway process on a real PostgreSQL schema, a recording upstream, the real OpenID provider.
Connections are killed with pg_terminate_backend, and a store is made unreachable by disabling its
login role, as in test_fail_closed.py."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import gateway as gw
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.pg import PG
from tests.support.upstream import RecordingUpstream

pytestmark = [pytest.mark.node, pytest.mark.postgres, pytest.mark.timeout(180)]

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def headers(method: str, name: str | None = None) -> dict[str, str]:
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
         "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if name:
        h["Mcp-Name"] = name
    return h


def tools_list(n: int) -> dict:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/list", "params": {"_meta": META}}


def call(n: int, message: str = "hi") -> dict:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message}, "_meta": META}}


@pytest.fixture()
def pg_role() -> Iterator[str]:
    role = f"lg_sr_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    yield role
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} LOGIN")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(f"DROP SCHEMA {role} CASCADE")
        conn.execute(f"DROP ROLE {role}")


def admin(statement: str, params: tuple = ()) -> list[tuple]:  # noqa: ANN001
    with psycopg.connect(PG, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


@dataclass
class Setup:
    running: gw.RunningGateway
    upstream: RecordingUpstream
    token: str
    role: str


@pytest.fixture()
async def setup(tmp_path: Path, pg_role: str) -> AsyncIterator[Setup]:
    provider = Provider()
    upstream = RecordingUpstream()
    await upstream.start()
    running = None
    try:
        running = await asyncio.to_thread(
            gw.start, tmp_path, provider.issuer, {"rec": {"url": upstream.url}}, POLICIES,
            {"storage": f"postgresql://{pg_role}@127.0.0.1:5432/test?options=-csearch_path%3D{pg_role}",
             "audit": {"signing_key": "./data/ledger.key", "checkpoint_interval": "1h", "append_timeout": "3s",
                       "replica": "r1"}})
        yield Setup(running, upstream, provider.token("alice", ["staff"]), pg_role)
    finally:
        if running is not None:
            await asyncio.to_thread(running.stop)
        await upstream.stop()
        provider.stop()


async def test_tools_list_survives_terminated_fingerprint_store_backend(setup: Setup) -> None:
    running = setup.running
    async with running.http(setup.token) as http:
        first = await http.post(running.url("rec"), headers=headers("tools/list"), json=tools_list(1))
        assert first.status_code == 200, first.text
        assert [t["name"] for t in first.json()["result"]["tools"]] == ["echo", "big"]
        for n in range(2, 5):  # each time: only the fingerprint store's connection is killed
            killed = await asyncio.to_thread(
                admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s "
                "AND query LIKE %s", (setup.role, "%tool_fingerprints%"))
            assert len(killed) == 1
            again = await http.post(running.url("rec"), headers=headers("tools/list"), json=tools_list(n))
            assert again.status_code == 200, again.text
            assert [t["name"] for t in again.json()["result"]["tools"]] == ["echo", "big"]
        assert "Traceback" not in running.log()
