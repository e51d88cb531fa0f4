"""Several `ledgergate serve` processes on one real PostgreSQL (127.0.0.1:5432, a throwaway schema):
each replica writes its own ledger log and `audit verify` covers them all; a replica killed with
SIGKILL mid-traffic loses no acknowledged record; a handshake session whose replica died gets a
404 from another replica that tells the client to initialise again.

The upstream is the reference server-everything; tokens come from the real OIDC provider."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgergate.audit.checkpoint import load_or_create_signer
from tests.support import gateway as gw
from tests.support.client import MODERN, connect
from tests.support.oidc import Provider
from tests.support.pg import throwaway_schema, url_for
from tests.support.procs import Proc

pytestmark = [pytest.mark.node, pytest.mark.postgres, pytest.mark.timeout(300)]  # several processes each

POLICIES = [{"name": "staff-echo", "match": {"groups": ["staff"], "servers": ["everything"], "tools": ["echo"]},
             "effect": "allow", "mask": "standard"}]
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
MODERN_HEADERS = {"Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
                  "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
HANDSHAKE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def token(idp: Provider) -> str:
    return idp.token("alice", ["staff"])


@pytest.fixture
def storage() -> Iterator[str]:
    with throwaway_schema("lg_ha") as schema:
        yield url_for(schema)


def shared_keys(directory: Path) -> Path:
    """One signing key and HMAC key for every replica, made before any starts (as docs/kubernetes.md
    has the operator do; in the cluster they come from one Secret)."""
    key = directory / "keys" / "ledger.key"
    if not key.exists():
        load_or_create_signer(key, "ledgergate")
        key.with_name("ledger.key.hmac").write_text(secrets.token_hex(32) + "\n")
    return key


def start_replica(directory: Path, name: str, idp: Provider, upstream: Proc, storage: str) -> gw.RunningGateway:
    servers = {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}
    audit = {**gw.AUDIT, "signing_key": str(shared_keys(directory)), "replica": name}
    return gw.start(directory / name, idp.issuer, servers, POLICIES, {"storage": storage, "audit": audit})


async def echo(http: httpx.AsyncClient, replica: gw.RunningGateway, message: str) -> httpx.Response:
    """One 2026-07-28 tools/call (no session: any replica serves it)."""
    return await http.post(replica.url("everything"), headers=MODERN_HEADERS, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}, "_meta": META}})


def acknowledged(response: httpx.Response, message: str) -> bool:
    """200 with the tool's result: the client was told the call happened."""
    if response.status_code != 200:
        return False
    body = response.json()
    return "result" in body and message in json.dumps(body["result"])


def cli(replica: gw.RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args, "--config",
                           str(replica.dir / "ledgergate.yaml")], cwd=replica.dir, capture_output=True, text=True,
                          timeout=120)


def echoed(records_: list[dict[str, Any]], log_id: str, event: str) -> set[str]:
    """The echo messages that have an `event` record in log `log_id`."""
    found = set()
    for r in records_:
        if r["log"] != log_id or r["event"] != event or r.get("method") != "tools/call":
            continue
        if event == "rpc.request":
            found.add(r["args"]["message"])
        elif "response" in r:
            found.update(re.findall(r"ha-[a-z0-9-]+", json.dumps(r["response"])))
    return found


def verify(replica: gw.RunningGateway) -> str:
    out = cli(replica, "audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


async def test_each_replica_writes_its_own_log_and_verify_covers_all(tmp_path: Path, idp: Provider, upstream: Proc,
                                                                     token: str, storage: str) -> None:
    replicas = [await asyncio.to_thread(start_replica, tmp_path, name, idp, upstream, storage)
                for name in ("a", "b", "c")]
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            sent = {r.dir.name: [f"ha-{r.dir.name}-{i}" for i in range(5)] for r in replicas}
            answers = await asyncio.gather(*(echo(http, r, m) for r in replicas for m in sent[r.dir.name]))
            assert all(resp.status_code == 200 for resp in answers), [a.text for a in answers]
        # a handshake session too, on one replica
        async with connect(replicas[1].url("everything"), token, "legacy") as client:
            assert "ha-b-session" in str((await client.call_tool("echo", {"message": "ha-b-session"})).content)
    finally:
        for r in replicas:
            await asyncio.to_thread(r.stop)
    everything = replicas[0].records()
    for r in replicas:
        name = r.dir.name
        mine = echoed(everything, name, "rpc.request")
        expected = set(sent[name]) | ({"ha-b-session"} if name == "b" else set())
        assert mine == expected, f"log {name} holds the calls its replica served, and only those"
    logs = {rec["log"] for rec in everything}
    assert logs == {"a", "b", "c"}
    report = verify(replicas[2])
    for name in ("a", "b", "c"):
        assert f"log {name}:" in report, report
    assert "FAIL" not in report
    # each replica signed a checkpoint of its own log on the way out: everything is covered
    assert "not yet checkpointed" not in report, report


async def test_a_replica_killed_mid_traffic_loses_no_acknowledged_record(tmp_path: Path, idp: Provider,
                                                                         upstream: Proc, token: str,
                                                                         storage: str) -> None:
    a = await asyncio.to_thread(start_replica, tmp_path, "a", idp, upstream, storage)
    b = await asyncio.to_thread(start_replica, tmp_path, "b", idp, upstream, storage)
    acked: set[str] = set()
    failed: set[str] = set()
    counter = itertools.count()
    stop = asyncio.Event()

    async def client(n: int) -> None:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
            while not stop.is_set():
                message = f"ha-kill-{n}-{next(counter)}"
                try:
                    response = await echo(http, a, message)
                except httpx.HTTPError:
                    failed.add(message)
                    return  # the replica is gone
                (acked if acknowledged(response, message) else failed).add(message)

    try:
        clients = [asyncio.create_task(client(n)) for n in range(8)]
        await asyncio.sleep(3.0)
        before_kill = len(acked)
        await asyncio.to_thread(a.proc.kill)  # SIGKILL: no shutdown, no final checkpoint
        await asyncio.wait_for(asyncio.gather(*clients), 20)
        stop.set()
        # the load really ran (a low bar: a shared, busy machine answers a few dozen a second)
        assert before_kill >= 10, f"only {before_kill} calls were answered before the kill"
        assert failed, "the kill landed between calls; some call should have been in flight"
        print(f"\nkill: {before_kill} acknowledged before the kill, {len(acked)} in all, {len(failed)} unanswered")
        # the survivor keeps serving
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            assert acknowledged(await echo(http, b, "ha-survivor"), "ha-survivor")
        after = b.records()
        requested, responded = echoed(after, "a", "rpc.request"), echoed(after, "a", "rpc.response")
        assert acked <= requested, f"acknowledged calls with no rpc.request record: {sorted(acked - requested)[:5]}"
        assert acked <= responded, f"acknowledged calls with no rpc.response record: {sorted(acked - responded)[:5]}"
        report = verify(b)
        assert "log a:" in report and "log b:" in report and "FAIL" not in report, report

        # the killed replica comes back on its own log, which continues where it stopped
        size_before = sum(1 for r in after if r["log"] == "a")
        a = await asyncio.to_thread(start_replica, tmp_path, "a", idp, upstream, storage)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            assert acknowledged(await echo(http, a, "ha-restarted"), "ha-restarted")
        again = b.records()
        assert "ha-restarted" in echoed(again, "a", "rpc.request")
        assert max(r["seq"] for r in again if r["log"] == "a") >= size_before
        assert "FAIL" not in verify(b)
    finally:
        stop.set()
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)


async def test_a_session_whose_replica_died_gets_404_telling_the_client_to_initialise(
        tmp_path: Path, idp: Provider, upstream: Proc, token: str, storage: str) -> None:
    a = await asyncio.to_thread(start_replica, tmp_path, "a", idp, upstream, storage)
    b = await asyncio.to_thread(start_replica, tmp_path, "b", idp, upstream, storage)
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            init = await http.post(a.url("everything"), headers=HANDSHAKE_HEADERS, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}})
            assert init.status_code == 200, init.text
            headers = {**HANDSHAKE_HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"],
                       "MCP-Protocol-Version": "2025-06-18"}
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": "ha-before"}}}
            assert (await http.post(a.url("everything"), headers=headers, json=call)).status_code == 200
            await asyncio.to_thread(a.proc.kill)

            # the router sends the session's next request to a survivor
            lost = await http.post(b.url("everything"), headers=headers, json={**call, "id": 3})
            assert lost.status_code == 404, lost.text
            error = lost.json()["error"]
            assert lost.json()["id"] == 3 and error["code"] == -32013
            assert "initialize" in error["message"] and "new session" in error["message"], error
            assert "another" in error["message"] or "replica" in error["message"], error

        # re-initialising on the survivor works, with the official SDK client
        async with connect(b.url("everything"), token, "legacy") as client:
            result = await client.call_tool("echo", {"message": "ha-after"})
            assert "ha-after" in str(result.content)
    finally:
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(b.stop)
