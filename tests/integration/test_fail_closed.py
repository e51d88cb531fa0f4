"""Fail closed: when the ledger cannot record, the client gets 503 and nothing is forwarded;
when the store is back, the gateway serves again. PostgreSQL is made unavailable to the gateway
for real — its login role is disabled and its connections are terminated — without stopping the
shared server. The upstream is a recording HTTP server, so "nothing forwarded" is observed."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Iterator

import psycopg
import pytest

from tests.support import gateway as gw
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import free_port
from tests.support.upstream import RecordingUpstream

pytestmark = [pytest.mark.node, pytest.mark.postgres]

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture()
def pg_role() -> Iterator[str]:
    role = f"lg_fc_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    yield role
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} LOGIN")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(f"DROP SCHEMA {role} CASCADE")
        conn.execute(f"DROP ROLE {role}")


def set_login(role: str, allowed: bool) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} {'LOGIN' if allowed else 'NOLOGIN'}")
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))


async def test_ledger_unavailable_refuses_with_503_then_recovers(tmp_path, pg_role: str) -> None:
    provider = Provider()
    upstream = RecordingUpstream()
    await upstream.start()
    running = None
    try:
        running = await asyncio.to_thread(
            gw.start, tmp_path, provider.issuer, {"rec": {"url": upstream.url}}, POLICIES,
            {"storage": f"postgresql://{pg_role}@127.0.0.1:5432/test?options=-csearch_path%3D{pg_role}",
             "audit": {"signing_key": "./data/ledger.key", "checkpoint_interval": "1h", "append_timeout": "3s"}})
        token = provider.token("alice", ["staff"])

        def call(n: int) -> dict:
            return {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": f"m{n}"}, "_meta": META}}

        async with running.http(token) as http:
            ok = await http.post(running.url("rec"), headers=HEADERS, json=call(1))
            assert ok.status_code == 200 and ok.json()["result"]["content"][0]["text"] == "Echo: m1"
            assert len(upstream.calls) == 1

            await asyncio.to_thread(set_login, pg_role, False)
            refused = await http.post(running.url("rec"), headers=HEADERS, json=call(2))
            assert refused.status_code == 503, refused.text
            assert "Traceback" not in refused.text
            assert refused.json()["error"]["code"] == -32012
            assert len(upstream.calls) == 1, "nothing may be forwarded while the ledger cannot record"

            await asyncio.to_thread(set_login, pg_role, True)
            for _ in range(50):
                again = await http.post(running.url("rec"), headers=HEADERS, json=call(3))
                if again.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert again.status_code == 200, again.text
            assert again.json()["result"]["content"][0]["text"] == "Echo: m3"
    finally:
        if running is not None:
            await asyncio.to_thread(running.stop)
        await upstream.stop()
        provider.stop()
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config", str(tmp_path / "ledgergate.yaml"),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await verify.communicate()
    assert verify.returncode == 0, out.decode()[-2000:]


async def test_no_usable_keys_starts_but_refuses_and_says_why(tmp_path) -> None:
    """An issuer whose keys cannot be fetched: the gateway starts, /readyz says why, tokens are refused."""
    upstream = RecordingUpstream()
    await upstream.start()
    dead_issuer = f"http://127.0.0.1:{free_port()}"
    running = None
    try:
        running = await asyncio.to_thread(gw.start, tmp_path, dead_issuer, {"rec": {"url": upstream.url}}, POLICIES,
                                          {"identity": {"api_keys": False, "oidc": [
                                              {"issuer": dead_issuer, "audience": "ledgergate"}]}})
        async with running.http("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln") as http:
            ready = await http.get(f"{running.base}/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert body["ready"] is False and body["checks"]["ledger"] == "ok", body
            assert body["checks"]["identity"][dead_issuer].startswith("no usable keys: cannot reach the issuer"), body
            refused = await http.post(running.url("rec"), headers=HEADERS, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "x"}, "_meta": META}})
            assert refused.status_code == 401
            assert upstream.calls == []
    finally:
        if running is not None:
            await asyncio.to_thread(running.stop)
        await upstream.stop()
