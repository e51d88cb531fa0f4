"""kill -9 under load: every call the client saw answered has its request and its response
record after restart, and `audit verify` passes (write-ahead: a response is never returned
before its record is durable)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import Proc, start_gateway

pytestmark = pytest.mark.node

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


async def test_kill_9_under_load_loses_no_answered_call(tmp_path, everything: Proc) -> None:
    provider = Provider()
    running = gw.start(tmp_path, provider.issuer, {"everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"}},
                       POLICIES)
    answered: set[str] = set()
    try:
        token = provider.token("alice", ["staff"])

        async def load(worker: int) -> None:
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
                for n in range(10_000):
                    message = f"w{worker}-n{n}"
                    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                            "params": {"name": "echo", "arguments": {"message": message}, "_meta": META}}
                    try:
                        r = await http.post(running.url("everything"), headers=HEADERS, json=body)
                    except httpx.HTTPError:
                        return  # the gateway died under us
                    if r.status_code == 200 and r.json().get("result", {}).get("content", [{}])[0].get(
                            "text") == f"Echo: {message}":
                        answered.add(message)

        workers = [asyncio.create_task(load(w)) for w in range(8)]
        await asyncio.sleep(2.0)
        running.proc.kill()  # SIGKILL to the whole process group: no shutdown hook runs
        await asyncio.gather(*workers)
        assert len(answered) > 50, "the load really ran"

        # restart on the same data, stop it cleanly (final checkpoint), then read the evidence
        restarted = start_gateway(tmp_path / "ledgergate.yaml", running.port, tmp_path / "gateway2.log")
        restarted.stop()
    finally:
        running.proc.stop()
        provider.stop()
    config = str(tmp_path / "ledgergate.yaml")
    verify = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config", config],
                            cwd=tmp_path, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    bundle = tmp_path / "bundle.json"
    export = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "export", "--config", config,
                             "-o", str(bundle)], cwd=tmp_path, capture_output=True, text=True)
    assert export.returncode == 0, export.stdout + export.stderr
    records = [json.loads(r) for log in json.loads(bundle.read_text())["logs"] for r in log["records"]]
    requested = {r["args"]["message"]: r["request_id"] for r in records
                 if r["event"] == "rpc.request" and isinstance(r.get("args"), dict) and "message" in r["args"]}
    responded = {r["request_id"] for r in records if r["event"] == "rpc.response" and "response" in r}
    missing_request = sorted(m for m in answered if m not in requested)
    assert not missing_request, f"answered calls without a request record: {missing_request[:5]}"
    missing_response = sorted(m for m in answered if requested[m] not in responded)
    assert not missing_response, f"answered calls without a response record: {missing_response[:5]}"
