"""A large message through a real gateway (`ledgergate serve`) in front of server-everything, with real OIDC
tokens: its per-value work (parsing, masking, the arguments' digest, the record's encoding) runs off the event
loop, so other callers keep being served while it is processed, and it is recorded and masked exactly as a
small one is.

Before `gateway/offload.py`, a 5.6 MB `tools/call` of 380,000 small objects held the event loop for its whole
time in the gateway: a one-line call from another session waited 2.6 s of the large call's 3.1 s (measured
with a probe kept out of the repository; the session 10 note had it as "the large-argument stall").
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import rfc8785

from ledgergate.store.ledger_store import open_ledger_store
from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.procs import Proc

pytestmark = [pytest.mark.node, pytest.mark.timeout(240)]

POLICIES = [{"name": "staff", "match": {"groups": ["staff"], "servers": ["everything"]}, "effect": "allow",
             "mask": "standard"}]
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
SSN = "123-45-6789"


def call(rpc_id: int, args: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                       "params": {"name": "echo", "arguments": args, "_meta": META}}).encode()


def start(directory: Path, idp: Provider, upstream: Proc) -> gw.RunningGateway:
    return gw.start(directory, idp.issuer, {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}},
                    POLICIES, {"audit": {"signing_key": "./data/ledger.key", "checkpoint_interval": "1h"}})


def records(directory: Path) -> list[tuple[bytes, dict[str, Any]]]:
    store = open_ledger_store("sqlite:///./data/ledgergate.db", directory)
    try:
        return [(r.record, orjson.loads(r.record)) for r in store.rows(store.logs()[0][0], 0, 1 << 30)]
    finally:
        store.close()


async def verify(directory: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config", str(directory / "ledgergate.yaml"),
        cwd=directory, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-2000:]


async def test_a_large_call_does_not_stall_other_callers_and_is_recorded_masked(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    running = await asyncio.to_thread(start, tmp_path, idp, upstream)
    items = [{"n": i, "note": f"row {i}"} for i in range(100_000)]
    items[777]["note"] = f"customer ssn {SSN}"
    big = call(1, {"message": "large", "items": items})
    try:
        async with running.http(idp.token("alice", ["staff"])) as http:
            small = call(2, {"message": "small"})
            for _ in range(10):  # warm: the token cached, the upstream session open
                r = await http.post(running.url("everything"), headers=HEADERS, content=small)
                assert r.status_code == 200, r.text[:300]

            waits: list[tuple[float, float]] = []  # (started, took) of each small call
            done = asyncio.Event()

            async def small_calls() -> None:
                async with httpx.AsyncClient(headers=http.headers, timeout=60) as other:
                    while not done.is_set():
                        began = time.perf_counter()
                        r = await other.post(running.url("everything"), headers=HEADERS, content=small)
                        assert r.status_code == 200, r.text[:300]
                        waits.append((began, time.perf_counter() - began))

            others = asyncio.create_task(small_calls())
            await asyncio.sleep(0.3)
            began = time.perf_counter()
            r = await http.post(running.url("everything"), headers=HEADERS, content=big)
            took = time.perf_counter() - began
            done.set()
            await others
            assert r.status_code == 200, r.text[:500]
            assert "Echo: large" in r.text

        during = [w for s, w in waits if s + w > began and s < began + took]
        longest = max(w for _, w in waits)
        # on the event loop, a small call waited for most of the large one's time in the gateway
        assert len(during) >= 5, (len(during), took)
        assert longest < 0.4 * took, f"a small call waited {longest:.2f} s during a {took:.2f} s large call"
    finally:
        await asyncio.to_thread(running.stop)

    docs = records(tmp_path)
    request = next(d for _, d in docs if d["event"] == "rpc.request" and d.get("args", {}).get("message") == "large")
    recorded = request["args"]["items"]
    assert len(recorded) == len(items) and recorded[5] == {"n": 5, "note": "row 5"}
    assert SSN not in recorded[777]["note"] and recorded[777]["note"].startswith("customer ssn ")
    assert request["args_masked"] == {"US_SSN": 1}
    for raw, doc in docs:  # every record, the large one too, is its own RFC 8785 encoding
        assert raw == rfc8785.dumps(doc)
    await verify(tmp_path)


async def test_a_large_answer_is_masked_for_the_caller_and_the_ledger(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    text = " ".join(f"line {i} of the statement" for i in range(40_000))
    message = f"{text} account holder ssn {SSN} {text}"  # 2 MB of text, past what is masked on the loop
    running = await asyncio.to_thread(start, tmp_path, idp, upstream)
    try:
        async with running.http(idp.token("alice", ["staff"])) as http:
            r = await http.post(running.url("everything"), headers=HEADERS, content=call(1, {"message": message}))
            assert r.status_code == 200, r.text[:500]
            answer = r.json()["result"]["content"][0]["text"]
            assert SSN not in answer and "holder ssn ***-**-6789 " in answer  # the caller's profile: partial
            assert answer.startswith("Echo: line 0 of the statement") and len(answer) > len(message)
    finally:
        await asyncio.to_thread(running.stop)
    docs = records(tmp_path)
    response = next(d for _, d in docs if d["event"] == "rpc.response" and "Echo: line 0" in json.dumps(d))
    recorded = response["response"]["content"][0]["text"]
    assert SSN not in recorded and "holder ssn [US_SSN] " in recorded  # the ledger's profile: redacted
    assert len(recorded) > len(message) - 100
    for raw, doc in docs:
        assert raw == rfc8785.dumps(doc)
    await verify(tmp_path)
