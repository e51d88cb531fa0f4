"""One large `tools/call` while another session keeps making small ones: how long the small calls wait.

    .venv/bin/python bench/bench_large_message.py [--objects 380000] [--rounds 3] [--cel] [--write docs/benchmarks.md]

The full gateway (`ledgergate serve`: OIDC token, policy, masking, two durable ledger records a call) in front
of `bench/fast_upstream.py`. A client calls `echo` one call at a time on one session; after a moment a second
session sends one call whose arguments hold `--objects` small objects (about 15 bytes each). Reported: the
small calls' median with nothing else running (the baseline, same run), their median and longest wait while
the large call is in the gateway, and the large call's own time. `--cel` adds a `when` condition that reads
`args` to the allowing rule. Run it with `PYTHONPATH=<another tree>/src` to measure that tree the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import write_section

from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.procs import free_port, wait_port

MODERN = "2026-07-28"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def body(rpc_id: int, args: dict[str, object]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                       "params": {"name": "echo", "arguments": args, "_meta": META}}).encode()


async def one_round(url: str, token: str, large: bytes) -> tuple[float, float, float, float]:
    """(baseline p50, p50 during, longest during, the large call's time), in seconds."""
    small = body(2, {"message": "small"})
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as a, \
            httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as b:
        base: list[float] = []
        for _ in range(200):
            t = time.perf_counter()
            (await a.post(url, headers=HEADERS, content=small)).raise_for_status()
            base.append(time.perf_counter() - t)
        waits: list[tuple[float, float]] = []
        done = asyncio.Event()

        async def smalls() -> None:
            while not done.is_set():
                t = time.perf_counter()
                (await a.post(url, headers=HEADERS, content=small)).raise_for_status()
                waits.append((t, time.perf_counter() - t))

        task = asyncio.create_task(smalls())
        await asyncio.sleep(0.3)
        began = time.perf_counter()
        answer = await b.post(url, headers=HEADERS, content=large)
        took = time.perf_counter() - began
        done.set()
        await task
        answer.raise_for_status()
    during = [w for s, w in waits if s + w > began and s < began + took]
    return statistics.median(base), statistics.median(during), max(during), took


async def main_async(args: argparse.Namespace) -> str:
    provider = Provider()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fast_upstream.py"), str(port)])
    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-large-"))
    rule: dict[str, object] = {"name": "bench", "match": {"groups": ["staff"], "servers": ["fast"]},
                               "effect": "allow", "mask": "standard"}
    if args.cel:
        rule["when"] = "args.message != 'forbidden'"
    try:
        wait_port(port)
        running = gw.start(tmp, provider.issuer, {"fast": {"url": f"http://127.0.0.1:{port}/mcp"}}, [rule],
                           # the message is past the default limits.max_json_values on purpose (about five
                           # values an object): it measures what such a message costs the others, once admitted
                           {"limits": {"max_body_bytes": 16 * 1024 * 1024,
                                       "max_json_values": max(500_000, 6 * args.objects),
                                       "json_values_in_flight": max(750_000, 6 * args.objects)}})
        try:
            large = body(1, {"message": "large", "items": [{"a": i, "b": "x"} for i in range(args.objects)]})
            token = provider.token("bench", ["staff"])
            rounds = [await one_round(running.url("fast"), token, large) for _ in range(args.rounds)]
        finally:
            running.stop()
    finally:
        upstream.terminate()
        upstream.wait()
        provider.stop()
    rows = ["| round | small call p50 alone | p50 during the large call | longest wait during it | the large call |",
            "|---|---|---|---|---|"]
    for i, (base, during, longest, took) in enumerate(rounds, 1):
        rows.append(f"| {i} | {base * 1e3:.2f} ms | {during * 1e3:.2f} ms | **{longest * 1e3:.0f} ms** "
                    f"({longest / took:.0%} of it) | {took:.2f} s |")
    return "\n".join([
        "## One large call beside small ones",
        "",
        (f"Command: `.venv/bin/python bench/bench_large_message.py --objects {args.objects} --rounds {args.rounds}"
         f"{' --cel' if args.cel else ''}` ({time.strftime('%Y-%m-%d')}; {len(large) / 1e6:.1f} MB of JSON in the "
         f"large call's body; the allowing rule {'reads `args` in a CEL condition' if args.cel else 'has no condition'})"),
        "",
        *rows,
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=380_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cel", action="store_true")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(report)
    if args.write:
        heading = "One large call beside small ones" + (" (a CEL condition reads args)" if args.cel else "")
        write_section(args.write, heading, report.replace("## One large call beside small ones", f"## {heading}", 1))


if __name__ == "__main__":
    main()
