"""ledgergate against IBM ContextForge 1.1.0, the Python MCP gateway users would otherwise pick, on the
same upstream (server-everything) with the same wrk load, both as shares of direct measured in the same
rounds (this machine is shared and noisy; only same-run ratios mean anything).

    .venv/bin/python bench/bench_contextforge.py [--install] [--seconds 3] [--rounds 5] [--write docs/benchmarks.md]

ContextForge needs Python 3.12 or 3.13, so it lives in its own virtualenv outside the repository
(default /work/cf/venv, `--venv` to change; `--install` creates it with pyenv's 3.12 and installs
`mcp-contextforge-gateway==1.1.0` into it). None of its code is in this repository. It is started on
127.0.0.1 with a throwaway SQLite database, JWT auth on, stateful sessions, rate limiting off, and the
settings in FAST_SETTINGS (the fastest it offers for this comparison; printed with the figures);
server-everything is registered through its admin API as a gateway, echo bound to a virtual server,
and wrk calls that server's MCP endpoint with a JWT minted by ContextForge's own tool.

Each round, at c=1 then c=8: direct, ledgergate full, ContextForge (the two gateways in alternating
order), then direct again; the baseline is the mean of the two direct runs. The ledgergate column is
`ledgergate serve` exactly as bench_datapath.py runs it (OIDC token, policy, masking, two durable
ledger records per call).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import write_section  # noqa: E402
from wrk import Run, mean_of, open_sessions, require_wrk, wrk  # noqa: E402

from tests.support import gateway as gw  # noqa: E402
from tests.support.oidc import Provider  # noqa: E402
from tests.support.procs import Proc, free_port, start_everything, wait_port  # noqa: E402

SECTION = "Against ContextForge 1.1.0"
PACKAGE = "mcp-contextforge-gateway==1.1.0"
DEFAULT_VENV = Path("/work/cf/venv")
ADMIN = "bench-admin@example.com"
POLICY = [{"name": "bench", "match": {"groups": ["staff"], "servers": ["everything"]}, "effect": "allow",
           "mask": "standard"}]

# What the comparison requires (the issue's terms): JWT auth on, stateful sessions, no rate limit.
REQUIRED_SETTINGS = {
    "AUTH_REQUIRED": "true",
    "MCP_CLIENT_AUTH_ENABLED": "true",
    "USE_STATEFUL_SESSIONS": "true",
    "RATE_LIMITING_ENABLED": "false",
}
# Everything else chosen for speed: work ContextForge can skip that ledgergate's column does not
# correspond to (or does itself, such as the durable per-call records, which ContextForge has no
# equivalent of), so any doubt falls in ContextForge's favour.
FAST_SETTINGS = {
    "JSON_RESPONSE_ENABLED": "true",  # plain JSON answers instead of an SSE stream per call
    "CACHE_TYPE": "memory",  # one process, so no shared cache (database or Redis) is needed
    "DB_METRICS_RECORDING_ENABLED": "false",  # no per-call execution metrics written to the database
    "LOG_LEVEL": "ERROR",
    "STRUCTURED_LOGGING_ENABLED": "false",
    "PERFORMANCE_TRACKING_ENABLED": "false",
    "OBSERVABILITY_ENABLED": "false",
    "OTEL_ENABLE_OBSERVABILITY": "false",
    "PLUGINS_ENABLED": "false",
    "COMPRESSION_ENABLED": "false",
    "MCPGATEWAY_UI_ENABLED": "false",
    "MCPGATEWAY_CATALOG_ENABLED": "false",
    "HEALTH_CHECK_INTERVAL": "3600",  # no upstream health probes during the runs
}
# Needed to run it here at all.
LOCAL_SETTINGS = {
    "MCPGATEWAY_ADMIN_API_ENABLED": "true",  # to register the upstream
    "SSRF_ALLOW_LOCALHOST": "true",  # the upstream is on loopback
    "PLATFORM_ADMIN_EMAIL": ADMIN,
}


READING = """
Reading these figures:
- Why one ContextForge worker: with stateful sessions every call of a session must reach the worker that
  holds it, which across workers needs its Redis-backed session affinity; one worker with the in-memory
  cache is its fastest configuration on one machine, and ledgergate runs as one process too. No Redis,
  no PostgreSQL (SQLite, like ledgergate's column).
- Settings tried and not kept, because they changed nothing measurable (two ContextForge instances
  alternated, 4 runs of 3 s each, CPU per call within noise): `CACHE_TYPE=database`,
  `SSRF_PROTECTION_ENABLED=false`, `DB_POOL_PRE_PING=false`, `TOKEN_USAGE_LOGGING_ENABLED=false`.
- Where ContextForge's time goes (py-spy, 8 s at c=8): its event-loop thread is busy nearly all the
  time — middleware layers and route matching over its many routes, per-call RBAC permission and token
  (JTI, user) lookups in the database, and its MCP client to the upstream. So its own CPU per call, not
  the upstream, sets its throughput, and the shares above are mostly that figure against
  server-everything's.
- What it sends upstream (counted through a logging TCP relay, 20 calls over 2 sessions): it opens one
  upstream MCP session per downstream session, lazily on that session's first call (`server/discover`,
  `initialize`, `notifications/initialized`, a GET stream and a `tools/list`), and then reuses it; but
  every upstream POST went over a new TCP connection (28 POSTs, 28 connections). That is why
  server-everything spends more CPU per call behind it than when called directly (its idle CPU with 24
  sessions open is nil).
- ledgergate's column is the same `ledgergate serve` as in "Data path" above; its figures there, with
  the pass-through beside them, are the ones to track the gateway's own work by. Its c=1 figure swings
  from round to round (its two durable commits per call wait on the device flush, which the machine's
  other work shares) and moves with the machine's speed, so set it beside `bench_gateway.py`'s from the
  same machine, not another day's. ContextForge's share of direct and its CPU per call held steady
  across rounds and across runs.
"""


def install_command(venv: Path) -> str:
    pythons = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12.*/bin/python")))
    python = pythons[-1] if pythons else "python3.12"
    return f"{python} -m venv {venv} && {venv}/bin/pip install '{PACKAGE}'"


def ensure_installed(venv: Path, install: bool) -> None:
    """ContextForge present in its own venv, or (with --install) put there; otherwise stop with the
    command that installs it (a missing peer is a setup problem, not a result)."""
    if (venv / "bin" / "mcpgateway").exists():
        return
    if not install:
        raise SystemExit(f"ContextForge is not installed in {venv}. Install it with --install, or:\n"
                         f"  {install_command(venv)}")
    print(f"installing {PACKAGE} into {venv}", flush=True)
    subprocess.run(["sh", "-c", install_command(venv)], check=True)


@dataclass
class ContextForge:
    proc: Proc
    port: int
    token: str
    server_id: str
    tool: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/servers/{self.server_id}/mcp"


def contextforge_env(venv: Path, directory: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
    """Fresh strong secrets (it refuses weak ones) from its own generator, and the settings above
    (`extra`, from --set, last)."""
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "mcpgateway.scripts.init_secrets", "--stdout"],
                         cwd=directory, capture_output=True, text=True, check=True).stdout
    secrets = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("#"))
    return {**secrets, **REQUIRED_SETTINGS, **FAST_SETTINGS, **LOCAL_SETTINGS, **extra,
            "HOST": "127.0.0.1", "PORT": str(port), "DATABASE_URL": f"sqlite:///{directory / 'cf.db'}",
            "PYTHONUNBUFFERED": "1"}


def start_contextforge(venv: Path, directory: Path, upstream: str, extra: dict[str, str] | None = None) -> ContextForge:
    """ContextForge on loopback with server-everything registered and echo on a virtual server."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = contextforge_env(venv, directory, port, extra or {})
    # cwd is the throwaway directory so that no .env of anyone else's is read
    proc = Proc([str(venv / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)], env=env,
                cwd=directory, log=directory / "contextforge.log")
    try:
        wait_port(port, proc.proc, timeout=180)  # it migrates a fresh database first
        token = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username", ADMIN,
             "--exp", "120"], env={**os.environ, **env}, cwd=directory, capture_output=True, text=True,
            check=True).stdout.strip().splitlines()[-1]
        server_id, tool = register(f"http://127.0.0.1:{port}", token, upstream)
        return ContextForge(proc, port, token, server_id, tool)
    except BaseException:
        proc.stop()
        log = (directory / "contextforge.log").read_text(errors="replace")
        print(f"ContextForge log (tail):\n{log[-3000:]}", file=sys.stderr)
        raise


def register(base: str, token: str, upstream: str) -> tuple[str, str]:
    """Its documented admin-API flow: the upstream as a gateway, then a virtual server holding echo."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        answer = http.post("/gateways", json={"name": "everything", "url": upstream, "transport": "STREAMABLEHTTP"})
        if answer.status_code >= 300:
            raise RuntimeError(f"POST /gateways: {answer.status_code} {answer.text[:500]}")
        tools = http.get("/tools").json()
        tools = tools.get("items", tools) if isinstance(tools, dict) else tools
        echo = [t for t in tools if (t.get("originalName") or t.get("original_name")) == "echo"]
        if not echo:
            raise RuntimeError(f"echo not among ContextForge's tools: {[t.get('name') for t in tools]}")
        answer = http.post("/servers", json={"server": {"name": "bench", "associated_tools": [echo[0]["id"]]}})
        if answer.status_code >= 300:
            raise RuntimeError(f"POST /servers: {answer.status_code} {answer.text[:500]}")
        return answer.json()["id"], echo[0]["name"]


def settings_text(extra: dict[str, str]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in {**REQUIRED_SETTINGS, **FAST_SETTINGS, **extra}.items())


async def main_async(args: argparse.Namespace) -> str:
    require_wrk()
    ensure_installed(args.venv, args.install)
    args.load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="lg-cf-bench-"))
    everything = start_everything()
    provider = Provider()
    direct_url = f"http://127.0.0.1:{everything.port}/mcp"
    procs: list[Any] = []
    try:
        gateway = gw.start(tmp / "ledgergate", provider.issuer, {"everything": {"url": direct_url}}, POLICY)
        procs.append(gateway)
        cf = start_contextforge(args.venv, tmp / "contextforge", direct_url, args.set)
        procs.append(cf.proc)
        token = provider.token("bench", ["staff"])
        server = everything.proc.pid
        targets = {  # name -> (url, sessions, token, pid whose CPU is the figure, tool name)
            "direct": (direct_url, await open_sessions(direct_url, None, 8), None, server, "echo"),
            "full": (gateway.url("everything"), await open_sessions(gateway.url("everything"), token, 8), token,
                     gateway.proc.proc.pid, "echo"),
            "cf": (cf.url, await open_sessions(cf.url, cf.token, 8), cf.token, cf.proc.proc.pid, cf.tool),
        }
        if not all(targets["cf"][1].split(",")):
            raise RuntimeError("ContextForge gave no Mcp-Session-Id: stateful sessions are not on")

        def run(name: str, concurrency: int) -> Run:
            url, sessions, tok, pid, tool = targets[name]
            return wrk(url, sessions, tok, concurrency, args.seconds, pid, server, tool)

        for name in targets:  # warm-up; long enough for ContextForge's first (cold) calls to finish
            url, sessions, tok, pid, tool = targets[name]
            wrk(url, sessions, tok, 8, max(args.seconds, 3), pid, server, tool)
        rows = []
        for rnd in range(args.rounds):
            order = ("full", "cf") if rnd % 2 == 0 else ("cf", "full")
            row = {}
            for c in (1, 8):
                before = run("direct", c)
                for name in order:
                    row[name, c] = run(name, c)
                row["direct", c] = mean_of(before, run("direct", c))
            rows.append(row)
            print(f"round {rnd + 1}: c=1 p50 direct {row['direct', 1].p50_ms:.2f} ms, ledgergate "
                  f"{row['full', 1].p50_ms:.2f} ms, ContextForge {row['cf', 1].p50_ms:.2f} ms; c=8 direct "
                  f"{row['direct', 8].rps:.0f}/s, ledgergate {row['full', 8].rps:.0f}/s, ContextForge "
                  f"{row['cf', 8].rps:.0f}/s; CPU/call ledgergate {row['full', 8].cpu_us:.0f} µs, ContextForge "
                  f"{row['cf', 8].cpu_us:.0f} µs", flush=True)
        return report(args, rows)
    finally:
        for proc in reversed(procs):
            proc.stop()
        provider.stop()
        everything.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, rows: list[dict[tuple[str, int], Run]]) -> str:
    def added(kind: str) -> list[float]:
        return [r[kind, 1].p50_ms - r["direct", 1].p50_ms for r in rows]

    def times(kind: str) -> list[float]:
        return [r[kind, 1].p50_ms / r["direct", 1].p50_ms for r in rows]

    def share(kind: str) -> list[float]:
        return [r[kind, 8].rps / r["direct", 8].rps for r in rows]

    def med(kind: str, c: int, field: str) -> float:
        return statistics.median(getattr(r[kind, c], field) for r in rows)

    def spread(values: list[float], fmt: str) -> str:
        return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)} to {format(max(values), fmt)})"

    table = "".join(
        f"| {i + 1} | {r['direct', 1].p50_ms:.2f} ms | {r['full', 1].p50_ms:.2f} ms "
        f"({r['full', 1].p50_ms - r['direct', 1].p50_ms:+.2f}) | {r['cf', 1].p50_ms:.2f} ms "
        f"({r['cf', 1].p50_ms - r['direct', 1].p50_ms:+.2f}) | {r['direct', 8].rps:.0f}/s "
        f"| {r['full', 8].rps:.0f}/s ({r['full', 8].rps / r['direct', 8].rps:.2f}x) "
        f"| {r['cf', 8].rps:.0f}/s ({r['cf', 8].rps / r['direct', 8].rps:.3f}x) |\n"
        for i, r in enumerate(rows))
    before, after = args.load_before, os.getloadavg()
    return (
        f"## {SECTION}\n\n"
        f"Command: `.venv/bin/python bench/bench_contextforge.py --seconds {args.seconds:g} --rounds {args.rounds}"
        + "".join(f" --set {k}={v}" for k, v in args.set.items()) + "` "
        f"({time.strftime('%Y-%m-%d')}; 2 shared cores; 1-minute load average "
        f"{before[0]:.2f} at the start, {after[0]:.2f} at the end; "
        "wrk, both gateways and server-everything on one machine)\n\n"
        f"IBM ContextForge 1.1.0 (`{PACKAGE}`, Python {contextforge_python(args.venv)}, one uvicorn worker, "
        "SQLite) and `ledgergate serve` (full pipeline: OIDC token, policy, masking, two durable ledger records "
        "per call on SQLite) in front of the same server-everything, `tools/call echo` driven by wrk "
        "(`bench/wrk_call.lua`, every answer checked) over 8 handshake sessions opened beforehand, each with "
        "its own bearer JWT. In each round, per concurrency: direct, the two gateways in alternating order, "
        "direct again; the baseline is the mean of the two direct runs.\n\n"
        f"ContextForge settings: {settings_text(args.set)}; its upstream registered as a gateway "
        "(`POST /gateways`, streamable HTTP), echo bound to a virtual server (`POST /servers`), called at "
        "`/servers/<id>/mcp` as `everything-echo` with a token from `mcpgateway.utils.create_jwt_token`.\n\n"
        "| round | c=1 p50 direct | c=1 p50 ledgergate (added) | c=1 p50 ContextForge (added) | c=8 direct "
        "| c=8 ledgergate | c=8 ContextForge |\n|---|---|---|---|---|---|---|\n" + table +
        "\nMedian over rounds (spread: lowest to highest round):\n\n"
        "| | ledgergate full | ContextForge 1.1.0 |\n|---|---|---|\n"
        f"| c=8 throughput, share of direct | **{spread(share('full'), '.2f')}** | "
        f"**{spread(share('cf'), '.3f')}** |\n"
        f"| c=1 p50 added to direct | **{spread(added('full'), '+.2f')} ms** | "
        f"**{spread(added('cf'), '+.2f')} ms** |\n"
        f"| c=1 p50, times direct's | {spread(times('full'), '.1f')} | {spread(times('cf'), '.1f')} |\n"
        f"| c=8 p99 (direct: {med('direct', 8, 'p99_ms'):.1f} ms) | {med('full', 8, 'p99_ms'):.1f} ms | {med('cf', 8, 'p99_ms'):.1f} ms |\n"
        f"| gateway CPU per call, c=8 | {med('full', 8, 'cpu_us'):.0f} µs | {med('cf', 8, 'cpu_us'):.0f} µs |\n"
        f"| server-everything CPU per call behind it, c=8 | {med('full', 8, 'server_cpu_us'):.0f} µs | "
        f"{med('cf', 8, 'server_cpu_us'):.0f} µs |\n\n"
        f"server-everything called directly: {med('direct', 8, 'rps'):.0f} calls/s at c=8, "
        f"{med('direct', 1, 'p50_ms'):.2f} ms p50 at c=1, {med('direct', 8, 'cpu_us'):.0f} µs CPU per call "
        "(user+system from /proc; a gateway's figure includes any processes it forks).\n" + READING
    )


def contextforge_python(venv: Path) -> str:
    return subprocess.run([str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="ContextForge's own virtualenv")
    parser.add_argument("--install", action="store_true", help=f"create that venv and install {PACKAGE}")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another ContextForge setting (overrides the defaults above; shown with the figures)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    args.set = dict(item.split("=", 1) for item in args.set)
    text = asyncio.run(main_async(args))
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()
