"""Which HTTP client the gateway uses upstream, by measurement: httpx, aiohttp and our own
httptools-based client (ledgergate.upstream.h1), each sending `tools/call echo` to
server-everything over one keep-alive connection, in the same run.

    .venv/bin/python bench/bench_upstream_client.py [--calls 2000]

Prints p50 latency and the client process's CPU time per call (what a gateway pays for every request).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledgergate.upstream.h1 import H1Pool  # noqa: E402
from tests.support.procs import start_everything  # noqa: E402

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(name: str, call, calls: int) -> tuple[str, float, float]:  # noqa: ANN001
    for _ in range(50):
        await call()
    latencies = []
    c0 = cpu()
    for _ in range(calls):
        t = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t)
    return name, statistics.median(latencies) * 1000, (cpu() - c0) * 1e6 / calls


async def main_async(calls: int) -> None:
    everything = start_everything()
    url = f"http://127.0.0.1:{everything.port}/mcp"
    try:
        async with httpx.AsyncClient() as h:
            init = await h.post(url, headers=HEADERS, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}})
            headers = {**HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                             "params": {"name": "echo", "arguments": {"message": "hi"}}})
        results = []
        async with httpx.AsyncClient() as client:
            async def via_httpx() -> None:
                r = await client.post(url, headers=headers, content=body)
                assert b"Echo: hi" in r.content
            results.append(await run("httpx", via_httpx, calls))
        async with aiohttp.ClientSession() as session:
            async def via_aiohttp() -> None:
                async with session.post(url, headers=headers, data=body) as r:
                    assert b"Echo: hi" in await r.read()
            results.append(await run("aiohttp", via_aiohttp, calls))
        pool = H1Pool(url)

        async def via_h1() -> None:
            r = await pool.request("POST", url, headers, body, 10)
            data = await r.read(10)
            r.release()
            assert b"Echo: hi" in data
        results.append(await run("ledgergate.upstream.h1", via_h1, calls))
        await pool.close()
        print("| client | p50 latency | client CPU per call |\n|---|---|---|")
        for name, p50, cpu_us in results:
            print(f"| {name} | {p50:.2f} ms | {cpu_us:.0f} µs |")
    finally:
        everything.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    asyncio.run(main_async(parser.parse_args().calls))
