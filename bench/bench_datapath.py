"""Added latency and throughput of the gateway on `tools/call echo`, against server-everything
directly, measured side by side in the same run (this machine is shared and noisy).

    .venv/bin/python bench/bench_datapath.py [--seconds 8] [--rounds 3] [--write docs/benchmarks.md]

Three paths, one client (httpx, one handshake session per worker, closed loop):
* direct — straight at server-everything;
* pass-through — the gateway's transport, sessions and upstream pool with no-op stages
  (bench/passthrough_gateway.py), which is what the data-path issue's target is about;
* full — `ledgergate serve`: OIDC token (cached), policy, masking, and two durable ledger records per
  call (SQLite, synchronous=FULL, group commit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_section  # noqa: E402

from tests.support import gateway as gw  # noqa: E402
from tests.support.oidc import Provider  # noqa: E402
from tests.support.procs import Proc, free_port, start_everything  # noqa: E402

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


READING = """
Reading these figures:
- Targets for the data path: at most +1 ms at c=1 and at least 0.9x direct throughput at c=8. On this
  2-core machine the httpx load generator (~1.5 ms CPU per call, `docs/upstream-client.md`),
  server-everything and the gateway share the cores, so the c=8 ratio is roughly
  (client + server) / (client + server + gateway) CPU and swings by ±0.15 from round to round;
  the CPU-per-call line is the stable figure to compare changes by.
- The full pipeline pays two durable ledger commits per call (write-ahead: a request is not forwarded
  before its record is durable, a response not returned before its record is), about 0.45 ms each at
  c=1 here (0.18 ms of it the device flush) — the price of the audit guarantee. Group commit keeps it
  one flush per batch under concurrency (see Ledger above).
- Tried and not kept: serving the gateway on its own httptools protocol instead of uvicorn saved about
  30 µs CPU per call (300–328 µs against 316–371 µs, alternating runs of the pass-through harness),
  about 9%; not worth trading uvicorn's maturity for a hand-written HTTP server on the security path.
"""


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    init = await http.post(url, headers=HEADERS, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    init.raise_for_status()
    headers = {**HEADERS, "MCP-Protocol-Version": "2025-06-18"}
    if "mcp-session-id" in init.headers:
        headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


async def worker(url: str, token: str | None, deadline: float, latencies: list[float]) -> None:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=auth, timeout=30) as http:
        headers = await open_session(http, url)
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": f"hello {i}"}}}
            start = time.perf_counter()
            r = await http.post(url, headers=headers, json=body)
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200 or "Echo: hello" not in r.text:
                raise RuntimeError(f"bad answer {r.status_code}: {r.text[:200]}")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, token: str | None, concurrency: int, seconds: float,
                  pid: int | None = None) -> tuple[float, float, float]:
    """(calls/s, p50 ms, CPU µs per call spent in process `pid`)."""
    # warm-up
    await asyncio.gather(*(worker(url, token, time.perf_counter() + 0.5, []) for _ in range(concurrency)))
    latencies: list[float] = []
    cpu_before = cpu_seconds(pid) if pid else 0.0
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(worker(url, token, deadline, latencies) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = (cpu_seconds(pid) - cpu_before) * 1e6 / len(latencies) if pid else 0.0
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, cpu


async def main_async(args: argparse.Namespace) -> str:
    everything = start_everything()
    provider = Provider()
    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-"))
    direct_url = f"http://127.0.0.1:{everything.port}/mcp"
    gateway = gw.start(tmp, provider.issuer, {"everything": {"url": direct_url}},
                       [{"name": "bench", "match": {"groups": ["staff"], "servers": ["everything"]},
                         "effect": "allow", "mask": "standard"}])
    pt_port = free_port()
    passthrough = Proc([sys.executable, str(ROOT / "bench" / "passthrough_gateway.py"), str(pt_port), direct_url],
                       port=pt_port, log=tmp / "passthrough.log")
    pt_url = f"http://127.0.0.1:{pt_port}/mcp/everything"
    try:
        token = provider.token("bench", ["staff"])
        rows = []
        for rnd in range(args.rounds):
            row = {}
            for c in (1, 8):
                row[("direct", c)] = await measure(direct_url, None, c, args.seconds, everything.proc.pid)
                row[("pass", c)] = await measure(pt_url, None, c, args.seconds, passthrough.proc.pid)
                row[("full", c)] = await measure(gateway.url("everything"), token, c, args.seconds,
                                                 gateway.proc.proc.pid)
            rows.append(row)
            print(f"round {rnd + 1}: c=1 p50 direct {row['direct', 1][1]:.2f} ms, pass-through "
                  f"{row['pass', 1][1]:.2f} ms, full {row['full', 1][1]:.2f} ms; c=8 direct "
                  f"{row['direct', 8][0]:.0f}/s, pass-through {row['pass', 8][0]:.0f}/s, full {row['full', 8][0]:.0f}/s")

        def added(kind: str) -> float:
            return statistics.median(r[kind, 1][1] - r["direct", 1][1] for r in rows)

        def ratio(kind: str) -> float:
            return statistics.median(r[kind, 8][0] / r["direct", 8][0] for r in rows)

        def cpu(kind: str) -> float:
            return statistics.median(r[kind, 8][2] for r in rows)

        table = "".join(
            f"| {i + 1} | {r['direct', 1][1]:.2f} ms | {r['pass', 1][1]:.2f} ms ({r['pass', 1][1] - r['direct', 1][1]:+.2f}) "
            f"| {r['full', 1][1]:.2f} ms ({r['full', 1][1] - r['direct', 1][1]:+.2f}) | {r['direct', 8][0]:.0f}/s "
            f"| {r['pass', 8][0]:.0f}/s ({r['pass', 8][0] / r['direct', 8][0]:.2f}x) "
            f"| {r['full', 8][0]:.0f}/s ({r['full', 8][0] / r['direct', 8][0]:.2f}x) |\n"
            for i, r in enumerate(rows))
        return (
            "## Data path\n\n"
            f"Command: `.venv/bin/python bench/bench_datapath.py --seconds {args.seconds:g} --rounds {args.rounds}` "
            f"({time.strftime('%Y-%m-%d')}; 2 shared cores; the httpx client, the gateway and server-everything on "
            "one machine, so they compete for CPU)\n\n"
            "`tools/call echo`, one handshake session per worker, closed loop. *Pass-through* is the gateway's "
            "transport, sessions and upstream pool with no-op stages (`bench/passthrough_gateway.py`); *full* is "
            "`ledgergate serve` with OIDC (cached token), policy, masking (`standard`) and two durable ledger "
            "records per call (SQLite, `synchronous=FULL`, group commit; one device flush costs about 0.18 ms "
            "here).\n\n"
            "| round | c=1 p50 direct | c=1 p50 pass-through (added) | c=1 p50 full (added) | c=8 direct "
            "| c=8 pass-through | c=8 full |\n|---|---|---|---|---|---|---|\n" + table +
            f"\nMedian over rounds — pass-through: **{added('pass'):+.2f} ms** at c=1, **{ratio('pass'):.2f}x** "
            f"throughput at c=8; full pipeline: **{added('full'):+.2f} ms**, **{ratio('full'):.2f}x**.\n\n"
            "CPU per call at c=8 (user+system, read from /proc, so it does not depend on the noise of a shared "
            f"machine): server-everything **{cpu('direct'):.0f} µs**, gateway pass-through **{cpu('pass'):.0f} µs**, "
            f"gateway full pipeline **{cpu('full'):.0f} µs** (its ledger writer's two durable commits included).\n" + READING
        )
    finally:
        passthrough.stop()
        gateway.stop()
        provider.stop()
        everything.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(report)
    if args.write:
        write_section(args.write, "Data path", report)


if __name__ == "__main__":
    main()
