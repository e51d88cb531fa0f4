"""Numbers and nesting the audit encoder used to refuse (issue 20 item 7), through a real gateway
process to a recording upstream: integers beyond 2^53 and 2^64 reach the upstream and come back
unchanged, deep arguments pass, and each such call has its record (with the defined markers)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import orjson
import pytest

from ledgergate.store.ledger_store import open_ledger_store
from tests.support import gateway as gw
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.upstream import RecordingUpstream

pytestmark = [pytest.mark.node, pytest.mark.timeout(180)]

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "numbers"}

NUMBERS = {"two64": 2**64, "two64m1": 2**64 - 1, "two63": 2**63, "below_i64": -(2**63) - 1,
           "neg_two64": -(2**64), "two53p1": 2**53 + 1, "huge": 10**40, "neg_huge": -(10**30) - 7,
           "tenth": 0.1, "max_double": 1.7976931348623157e308, "tiny": 5e-324, "third": 1 / 3, "zero": 0}


def nested(depth: int) -> object:
    value: object = {"leaf": 2**64}
    for i in range(depth - 1):
        value = [value] if i % 2 else {"k": value}
    return value


def exact(value: object) -> str:
    """The value as Python's json writes it: integers in full, floats in shortest round-trip form."""
    return json.dumps(value, sort_keys=True)


async def test_big_integers_and_deep_arguments_pass_unchanged_and_are_recorded(tmp_path: Path) -> None:
    provider = Provider()
    upstream = RecordingUpstream()
    await upstream.start()
    running = None
    try:
        running = await asyncio.to_thread(gw.start, tmp_path, provider.issuer, {"rec": {"url": upstream.url}},
                                          POLICIES, {"audit": {"signing_key": "./data/ledger.key",
                                                               "checkpoint_interval": "1h"}})
        async with running.http(provider.token("alice", ["staff"])) as http:
            cases = {"numbers": NUMBERS, "deep60": {"deep": nested(60)}, "deep120": {"deep": nested(120)}}
            for n, (name, args) in enumerate(cases.items()):
                body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                                   "params": {"name": "numbers", "arguments": args, "_meta": META}}).encode()
                r = await http.post(running.url("rec"), headers=HEADERS, content=body)
                assert r.status_code == 200, (name, r.text[:500])
                got = upstream.calls[-1]["params"]["arguments"]
                assert exact(got) == exact(args), name  # reached the upstream unchanged
                back = json.loads(r.content)["result"]["structuredContent"]
                assert exact(back) == exact(args), name  # and came back unchanged
            too_deep = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                   "params": {"name": "numbers", "arguments": {"deep": nested(200)},
                                              "_meta": META}}).encode()
            r = await http.post(running.url("rec"), headers=HEADERS, content=too_deep)
            assert r.status_code == 400 and "deeper than 128 levels" in r.json()["error"]["message"], r.text[:300]
            assert len(upstream.calls) == 3
    finally:
        if running is not None:
            await asyncio.to_thread(running.stop)
        await upstream.stop()
        provider.stop()

    store = open_ledger_store("sqlite:///./data/ledgergate.db", tmp_path)
    try:
        docs = [orjson.loads(r.record) for r in store.rows(store.logs()[0][0], 0, 1 << 30)]
    finally:
        store.close()
    requests = [d for d in docs if d["event"] == "rpc.request" and d.get("target") == "numbers"]
    responses = [d for d in docs if d["event"] == "rpc.response" and d.get("target") == "numbers"]
    assert len(requests) == 3 and len(responses) == 3, [d["event"] for d in docs]
    args = requests[0]["args"]
    assert args["two64"] == {"$lg.int": "18446744073709551616"}
    assert args["huge"] == {"$lg.int": str(10**40)} and args["neg_huge"] == {"$lg.int": str(-(10**30) - 7)}
    assert args["two53p1"] == {"$lg.int": str(2**53 + 1)}
    assert args["tenth"] == 0.1 and args["max_double"] == 1.7976931348623157e308
    assert len(requests[0]["args_hmac"]) == 64
    deep = requests[1]["args"]["deep"]
    for _ in range(59):
        deep = deep["k"] if isinstance(deep, dict) else deep[0]
    assert deep == {"leaf": {"$lg.int": "18446744073709551616"}}
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config", str(tmp_path / "ledgergate.yaml"),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await verify.communicate()
    assert verify.returncode == 0, out.decode()[-2000:]
