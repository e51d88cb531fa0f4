"""Added latency and throughput of the gateway on `tools/call echo`, against server-everything
directly, measured side by side in the same run (this machine is shared and noisy).

    .venv/bin/python bench/bench_datapath.py [--seconds 8] [--write docs/benchmarks.md]

Both paths use the same client: httpx, one handshake session per worker, closed loop.
The gateway runs its full pipeline: OIDC token (cached), policy, masking, durable ledger
records (request and response, SQLite, group commit).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import gateway as gw  # noqa: E402
from tests.support.oidc import Provider  # noqa: E402
from tests.support.procs import start_everything  # noqa: E402

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


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


async def measure(url: str, token: str | None, concurrency: int, seconds: float) -> tuple[float, float]:
    # warm-up
    await asyncio.gather(*(worker(url, token, time.perf_counter() + 0.5, []) for _ in range(concurrency)))
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(worker(url, token, deadline, latencies) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


async def main_async(args: argparse.Namespace) -> str:
    everything = start_everything()
    provider = Provider()
    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-"))
    gateway = gw.start(tmp, provider.issuer, {"everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"}},
                       [{"name": "bench", "match": {"groups": ["staff"], "servers": ["everything"]},
                         "effect": "allow", "mask": "standard"}])
    try:
        token = provider.token("bench", ["staff"])
        direct_url = f"http://127.0.0.1:{everything.port}/mcp"
        rows = []
        for rnd in range(args.rounds):
            d1 = await measure(direct_url, None, 1, args.seconds)
            g1 = await measure(gateway.url("everything"), token, 1, args.seconds)
            d8 = await measure(direct_url, None, 8, args.seconds)
            g8 = await measure(gateway.url("everything"), token, 8, args.seconds)
            rows.append((d1, g1, d8, g8))
            print(f"round {rnd + 1}: c=1 p50 direct {d1[1]:.2f} ms, gateway {g1[1]:.2f} ms "
                  f"(+{g1[1] - d1[1]:.2f} ms); c=8 direct {d8[0]:.0f}/s, gateway {g8[0]:.0f}/s "
                  f"({g8[0] / d8[0]:.2f}x)")
        best = min(rows, key=lambda r: r[1][1] - r[0][1])
        added = statistics.median(r[1][1] - r[0][1] for r in rows)
        ratio = statistics.median(r[3][0] / r[2][0] for r in rows)
        report = (
            "## Data path (pass-through with the full pipeline)\n\n"
            f"Command: `.venv/bin/python bench/bench_datapath.py --seconds {args.seconds} --rounds {args.rounds}` "
            f"({time.strftime('%Y-%m-%d')}, 2 shared cores; client, gateway and server-everything on one machine)\n\n"
            "`tools/call echo`, httpx client, one handshake session per worker, closed loop. The gateway runs OIDC "
            "(cached token), policy, masking (`standard`, partial) and two durable ledger records per call "
            "(SQLite, synchronous=FULL, group commit).\n\n"
            "| round | c=1 p50 direct | c=1 p50 gateway | added | c=8 direct | c=8 gateway | ratio |\n|---|---|---|---|---|---|---|\n"
            + "".join(f"| {i + 1} | {d1[1]:.2f} ms | {g1[1]:.2f} ms | {g1[1] - d1[1]:+.2f} ms | {d8[0]:.0f}/s | "
                      f"{g8[0]:.0f}/s | {g8[0] / d8[0]:.2f}x |\n" for i, (d1, g1, d8, g8) in enumerate(rows))
            + f"\nMedian over rounds: added latency at c=1 **{added:.2f} ms**; throughput at c=8 **{ratio:.2f}x** "
              f"of direct. Best round added {best[1][1] - best[0][1]:.2f} ms.\n"
        )
        return report
    finally:
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
        text = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        start = text.find("## Data path")
        if start >= 0:
            end = text.find("\n## ", start + 3)
            text = text[:start] + report + (text[end + 1:] if end >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + report
        args.write.write_text(text)


if __name__ == "__main__":
    main()
