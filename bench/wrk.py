"""The pieces the data-path benchmarks share: opening handshake sessions, driving `tools/call echo`
with wrk (bench/wrk_call.lua, every answer checked) and reading a process's CPU time from /proc.

They live here so that bench_datapath.py, bench_compare.py and bench_contextforge.py measure every
target in exactly the same way; a figure is only comparable with another measured by the same code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_call.lua"
PROTOCOL = "2025-06-18"


@dataclass
class Run:
    """One wrk run against one target."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # CPU per call of the measured process tree (server-everything or a gateway)
    server_cpu_us: float  # CPU per call of server-everything during the run


def mean_of(a: Run, b: Run) -> Run:
    """The baseline of a round: direct measured before and after the gateway, averaged, so that the
    machine's background load falls on baseline and gateway alike."""
    return Run((a.rps + b.rps) / 2, (a.p50_ms + b.p50_ms) / 2, (a.p99_ms + b.p99_ms) / 2,
               (a.cpu_us + b.cpu_us) / 2, (a.server_cpu_us + b.server_cpu_us) / 2)


def require_wrk() -> None:
    """wrk is the load generator (C, so the client is not what limits throughput)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")


async def open_sessions(url: str, token: str | None, n: int) -> str:
    """n handshake sessions, as wrk_call.lua's SESSIONS (comma-separated ids); opened beforehand so
    that the runs measure calls, not handshakes."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    ids = []
    async with httpx.AsyncClient(headers=auth, timeout=30) as http:
        for _ in range(n):
            init = await http.post(url, headers=HEADERS, json={
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                           "clientInfo": {"name": "bench", "version": "1"}}})
            init.raise_for_status()
            session = init.headers.get("mcp-session-id", "")
            headers = {**HEADERS, "MCP-Protocol-Version": PROTOCOL}
            if session:
                headers["Mcp-Session-Id"] = session
            await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            ids.append(session)
    return ",".join(ids)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """pid and every live process below it: a server that forks workers (ContextForge under some
    settings) is charged for all of them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process, its reaped children and its live descendants, from /proc."""
    total = 0.0
    for p in descendants(pid):
        try:
            total += sum(int(f) for f in _stat(p)[11:15])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url: str, sessions: str, token: str | None, concurrency: int, seconds: float, pid: int,
        server_pid: int, tool: str = "echo", pin: str | None = None) -> Run:
    """One closed-loop wrk run of `tools/call <tool>`; any bad answer or socket error fails the run
    (a fast wrong answer is not a result). `pin` runs wrk on those CPUs only (taskset). A call may
    take up to 30 s before it counts as a timeout: at c=64 server-everything's own p99 passes wrk's
    default of 2 s."""
    env = {**os.environ, "SESSIONS": sessions, "TOOL": tool}
    if token:
        env["BEARER"] = token
    cpu0, server0 = cpu_seconds(pid), cpu_seconds(server_pid)
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(WRK_SCRIPT), url]
    if pin is not None:
        argv = ["taskset", "-c", pin, *argv]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    cpu, server_cpu = cpu_seconds(pid) - cpu0, cpu_seconds(server_pid) - server0
    stats = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    if stats["bad"] or stats["socket_errors"] or not stats["requests"]:
        raise RuntimeError(f"{url}: {stats['bad']} bad answers, {stats['socket_errors']} socket errors:\n{out}")
    n = stats["requests"]
    return Run(n / stats["seconds"], stats["p50_us"] / 1000, stats["p99_us"] / 1000, cpu * 1e6 / n,
               server_cpu * 1e6 / n)
