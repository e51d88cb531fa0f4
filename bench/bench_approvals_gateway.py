"""Approvals through the real gateway: from the decision to the held call's answer, and the memory
of many held calls.

    .venv/bin/python bench/bench_approvals_gateway.py [--rounds 20] [--held 1000] [--write docs/benchmarks.md]

* one replica (SQLite): a handshake-era SDK client's call is held; bob approves over REST; the time
  from the approve answer (the decision is durable and applied) to the held call's answer;
* two replicas on PostgreSQL (127.0.0.1:5432, db `test`, a throwaway schema): the call held on replica
  b, the decision made on replica a (released through LISTEN/NOTIFY);
* memory: `--held` calls held at once on one gateway (2026-07-28 requests, each held for
  `approvals.hold`), the gateway's RSS before and while they wait.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import write_section  # noqa: E402

from tests.support import gateway as gw  # noqa: E402
from tests.support.client import connect  # noqa: E402
from tests.support.oidc import Provider  # noqa: E402
from tests.support.pg import throwaway_schema, url_for  # noqa: E402
from tests.support.procs import start_everything  # noqa: E402

POLICIES = [
    {"name": "staff", "match": {"groups": ["staff"], "servers": ["everything"], "tools": ["get-sum"]}, "effect": "allow"},
    {"name": "sums-need-approval", "match": {"servers": ["everything"], "tools": ["get-sum"]}, "when": "args.a > 1000",
     "effect": "approve", "approvers": {"groups": ["approvers"]}},
]
HEADERS = {"Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
           "Mcp-Method": "tools/call", "Mcp-Name": "get-sum"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def next_pending(base: str, bob: str, seen: set[str]) -> str:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {bob}"}) as http:
        while True:
            listed = (await http.get(f"{base}/api/v1/approvals", params={"status": "pending"})).json()["approvals"]
            fresh = [a["id"] for a in listed if a["id"] not in seen]
            if fresh:
                seen.add(fresh[0])
                return fresh[0]
            await asyncio.sleep(0.005)


async def release_latency(held_on: gw.RunningGateway, decide_on: gw.RunningGateway, alice: str, bob: str,
                          rounds: int) -> list[float]:
    seen: set[str] = set()
    out = []
    async with connect(held_on.url("everything"), alice, "legacy") as client:
        for i in range(rounds):
            call = asyncio.create_task(client.call_tool("get-sum", {"a": 5000 + i, "b": 1}))
            approval = await next_pending(decide_on.base, bob, seen)
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {bob}"}) as http:
                r = await http.post(f"{decide_on.base}/api/v1/approvals/{approval}/approve", json={"reason": "bench"})
                decided = time.perf_counter()
                assert r.status_code == 200, r.text
            await call
            out.append((time.perf_counter() - decided) * 1000)
    return out


async def held_memory(g: gw.RunningGateway, alice: str, n: int) -> tuple[int, int]:
    before = rss_kib(g.proc.proc.pid)
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {alice}"}, limits=limits, timeout=120) as http:
        async def one(i: int) -> Any:
            return await http.post(g.url("everything"), headers=HEADERS, json={
                "jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "get-sum", "arguments": {"a": 100000 + i, "b": 0}, "_meta": META}})
        calls = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(min(20.0, 5 + n / 100))  # every call requested and held
        during = rss_kib(g.proc.proc.pid)
        answers = await asyncio.gather(*calls)
    assert all(a.json()["result"]["resultType"] == "input_required" for a in answers)
    return before, during


async def main_async(args: argparse.Namespace) -> str:
    everything = start_everything()
    provider = Provider()
    tmp = Path(tempfile.mkdtemp(prefix="lg-apr-bench-"))
    servers = {"everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"}}
    running: list[gw.RunningGateway] = []
    try:
        alice, bob = provider.token("alice", ["staff"]), provider.token("bob", ["approvers"])
        one = gw.start(tmp / "one", provider.issuer, servers, POLICIES, {"approvals": {"hold": "30s"},
                                                                        "limits": {"max_client_connections": 5000}})
        running.append(one)
        single = await release_latency(one, one, alice, bob, args.rounds)
        one.stop()
        running.remove(one)
        mem = gw.start(tmp / "mem", provider.issuer, servers, POLICIES,
                       {"approvals": {"hold": f"{int(min(20.0, 5 + args.held / 100)) + 10}s", "max_pending": args.held + 10},
                        "limits": {"max_client_connections": args.held + 100, "max_sessions_per_principal": 100}})
        running.append(mem)
        before, during = await held_memory(mem, alice, args.held)
        mem.stop()
        running.remove(mem)
        with throwaway_schema("lg_aprb") as schema:
            extra = {"storage": url_for(schema), "approvals": {"hold": "30s"}}
            a = gw.start(tmp / "a", provider.issuer, servers, POLICIES, {**extra, "audit": {**gw.AUDIT, "replica": "a"}})
            b = gw.start(tmp / "b", provider.issuer, servers, POLICIES, {**extra, "audit": {**gw.AUDIT, "replica": "b"}})
            running += [a, b]
            across = await release_latency(b, a, alice, bob, args.rounds)

        def q(xs: list[float]) -> str:
            xs = sorted(xs)
            return f"median {statistics.median(xs):.1f} ms, p95 {xs[int(0.95 * (len(xs) - 1))]:.1f} ms, max {xs[-1]:.1f} ms"

        return (
            "## Approvals through the gateway\n\n"
            f"Command: `.venv/bin/python bench/bench_approvals_gateway.py --rounds {args.rounds} --held {args.held}` "
            f"({time.strftime('%Y-%m-%d')}; 2 shared cores, other work running)\n\n"
            "| what | measured | target |\n|---|---:|---:|\n"
            f"| approve over REST → the held call's answer at the SDK client, one replica (SQLite) | {q(single)} | < 100 ms |\n"
            f"| approve on replica a → the answer of the call held on replica b (PostgreSQL LISTEN/NOTIFY) | {q(across)} "
            "| < 500 ms |\n"
            f"| gateway RSS with {args.held:,} calls held at once (2026-07-28 requests over {args.held:,} connections) "
            f"| {before / 1024:.0f} MiB idle → {during / 1024:.0f} MiB holding ({(during - before) / args.held:.1f} KiB "
            "per held call, connection included) | bounded |\n\n"
            "Counted from the moment the approve request returned (the decision durable in the ledger and applied "
            "in the store) to the moment the client had its result, which includes running the call upstream and "
            "its two durable ledger records.\n"
        )
    finally:
        for g in running:
            g.stop()
        provider.stop()
        everything.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(report)
    if args.write:
        write_section(args.write, "Approvals through the gateway", report)


if __name__ == "__main__":
    main()
