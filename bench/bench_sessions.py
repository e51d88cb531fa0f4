"""Memory and opening cost of handshake sessions through the full gateway.

    .venv/bin/python bench/bench_sessions.py [--sessions 10000] [--concurrency 64] [--write docs/benchmarks.md]

Starts server-everything, an OIDC provider and `ledgergate serve` (the full pipeline: token check,
policy, masking, durable ledger records), with a small counting proxy between the gateway and
server-everything so that every upstream HTTP request the gateway makes is counted. Then:

1. the gateway's RSS idle (after one warm-up session, so that lazily loaded code is in);
2. a sample of sessions opened one at a time (`initialize` + `notifications/initialized`): the time
   per open at concurrency 1, and the upstream requests each open caused;
3. sessions opened `--concurrency` at a time until 1,000 and then `--sessions` are open, each one
   calling `tools/call echo` once all of them are open; the RSS after each step.

The client is a minimal HTTP/1.1 keep-alive client over asyncio streams (no httpx), in this process;
the figure is the gateway's own RSS (/proc/PID/status VmRSS), not the client's nor the upstream's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_section  # noqa: E402

TOKEN_SUB = "bench"


# ── a counting proxy (run as a child process: `bench_sessions.py proxy LISTEN_PORT TARGET_PORT`) ──
async def _proxy_main(listen: int, target: int) -> None:
    counts: dict[str, int] = {}

    async def pipe_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, _, rest = head.partition(b"\r\n")
                method, _, path = request_line.partition(b" ")
                if path.startswith(b"/__count"):
                    body = json.dumps(counts).encode()
                    cwriter.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                  + str(len(body)).encode() + b"\r\n\r\n" + body)
                    await cwriter.drain()
                    continue
                length = 0
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await creader.readexactly(length) if length else b""
                key = method.decode()
                if key == "POST":
                    try:
                        key = "POST " + str(json.loads(body).get("method") or "(response)")
                    except (ValueError, AttributeError):
                        key = "POST ?"
                counts[key] = counts.get(key, 0) + 1
                if upstream_writer is None:
                    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
                    asyncio.get_running_loop().create_task(pipe_back(upstream_reader, cwriter))
                upstream_writer.write(head + body)
                await upstream_writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if upstream_writer is not None:
                upstream_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


# ── a minimal HTTP/1.1 client ───────────────────────────────────────────────
class Conn:
    """One keep-alive connection to the gateway (requests one after another)."""

    def __init__(self, port: int, token: str, accept: str = "application/json") -> None:
        self.port = port
        self.accept = accept
        self.auth = f"Authorization: Bearer {token}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, body: dict[str, object], session: str | None = None,
                      method: str = "POST") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        payload = json.dumps(body).encode()
        extra = b""
        if session:
            extra = f"Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-06-18\r\n".encode()
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {self.accept}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n".encode()
                          + self.auth + extra + b"\r\n" + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            data = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                data += await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.reader = self.writer = None
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "bench-sessions", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def open_session(conn: Conn, path: str) -> str:
    status, headers, body = await conn.request(path, INIT)
    if status != 200 or "mcp-session-id" not in headers:
        raise RuntimeError(f"initialize: HTTP {status} {body[:300]!r}")
    session = headers["mcp-session-id"]
    status, _, body = await conn.request(path, INITIALIZED, session)
    if status != 202:
        raise RuntimeError(f"notifications/initialized: HTTP {status} {body[:300]!r}")
    return session


async def call_echo(conn: Conn, path: str, session: str, n: int) -> None:
    status, _, body = await conn.request(path, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                "params": {"name": "echo", "arguments": {"message": f"s{n}"}}},
                                         session)
    if status != 200 or f"s{n}".encode() not in body or b'"error"' in body:
        raise RuntimeError(f"tools/call echo: HTTP {status} {body[:300]!r}")


async def in_parallel(conns: list[Conn], items: list[int], work) -> None:  # noqa: ANN001
    queue: asyncio.Queue[int] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker(conn: Conn) -> None:
        while not queue.empty():
            await work(conn, queue.get_nowait())

    await asyncio.gather(*(worker(c) for c in conns))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")


async def upstream_counts(port: int) -> dict[str, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /__count HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0]
                 .split(b":")[1])
    data = json.loads(await reader.readexactly(length))
    writer.close()
    return data


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def ledger_counts(db: Path) -> dict[str, int]:
    """Ledger records by event, read from the gateway's SQLite store (WAL: readable while it writes)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT event, count(*) FROM ledger_leaves GROUP BY event").fetchall())


async def measure(args: argparse.Namespace, gateway_pid: int, gateway_port: int, proxy_port: int,
                  token: str, db: Path) -> dict[str, object]:
    path = "/mcp/everything"
    out: dict[str, object] = {}
    await asyncio.sleep(1.0)
    out["rss_start_kb"] = rss_kb(gateway_pid)
    warm = Conn(gateway_port, token)
    await call_echo(warm, path, await open_session(warm, path), 0)
    await asyncio.sleep(1.0)
    out["rss_idle_kb"] = rss_kb(gateway_pid)

    # opening cost, one at a time, alternating with server-everything's own initialize (called straight,
    # through the proxy) so that the machine's background load falls on both alike
    before, records_before = await upstream_counts(proxy_port), ledger_counts(db)
    direct = Conn(proxy_port, token, "application/json, text/event-stream")
    times: list[float] = []
    direct_times: list[float] = []
    sample_sessions: list[str] = []
    cpu = 0.0
    for _ in range(args.sample):
        t0 = time.perf_counter()
        status, _, _ = await direct.request("/mcp", INIT)
        direct_times.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"direct initialize: {status}")
        c0, t0 = cpu_seconds(gateway_pid), time.perf_counter()
        sample_sessions.append(await open_session(warm, path))
        times.append((time.perf_counter() - t0) * 1000)
        cpu += cpu_seconds(gateway_pid) - c0
    direct.close()
    per_open = diff(await upstream_counts(proxy_port), before)
    per_open["POST initialize"] -= args.sample  # the direct ones
    out["open_ms_p50"] = statistics.median(times)
    out["open_ms_q"] = statistics.quantiles(times, n=10)
    out["open_cpu_ms"] = cpu * 1000 / args.sample
    out["upstream_per_open"] = {k: v / args.sample for k, v in per_open.items() if v}
    out["records_per_open"] = {k: v / args.sample for k, v in diff(ledger_counts(db), records_before).items()}
    out["upstream_initialize_ms_p50"] = statistics.median(direct_times)
    out["upstream_initialize_ms_q"] = statistics.quantiles(direct_times, n=10)
    warm.close()

    conns = [Conn(gateway_port, token) for _ in range(args.concurrency)]
    sessions: list[str] = list(sample_sessions)
    steps = [s for s in (1000, args.sessions) if s <= args.sessions]
    rss_steps = {}
    cpu0 = cpu_seconds(gateway_pid)
    t_open = 0.0
    counts0 = await upstream_counts(proxy_port)
    for target in dict.fromkeys(steps):
        needed = target - len(sessions)

        async def do_open(conn: Conn, _i: int) -> None:
            sessions.append(await open_session(conn, path))

        t0 = time.perf_counter()
        await in_parallel(conns, list(range(max(needed, 0))), do_open)
        t_open += time.perf_counter() - t0
        opened_counts = diff(await upstream_counts(proxy_port), counts0)

        async def do_call(conn: Conn, i: int) -> None:
            await call_echo(conn, path, sessions[i], i)

        t0 = time.perf_counter()
        await in_parallel(conns, list(range(len(sessions))), do_call)
        t_call = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        rss_steps[target] = {"rss_kb": rss_kb(gateway_pid), "open_s": t_open, "call_all_s": t_call,
                             "upstream": opened_counts}
        print(f"{target} sessions: RSS {rss_steps[target]['rss_kb'] / 1024:.1f} MB "
              f"(opened in {t_open:.1f} s, all called in {t_call:.1f} s)", flush=True)
    out["gateway_cpu_s"] = cpu_seconds(gateway_pid) - cpu0
    out["steps"] = rss_steps
    for c in conns:
        c.close()
    return out


def _fmt_counts(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items())) or "none"


def report(args: argparse.Namespace, runs: list[tuple[str, dict[str, object]]], load: str) -> str:
    command = (f".venv/bin/python bench/bench_sessions.py --sessions {args.sessions} --concurrency "
               f"{args.concurrency} --sample {args.sample}"
               + (f" --baseline {args.baseline}" if args.baseline else "") + " --write docs/benchmarks.md")
    lines = ["## Sessions: memory and opening cost", "", "```", command, "```", "",
             f"Load average before the run: {load}. Full gateway (`ledgergate serve`: OIDC, policy, masking, "
             "SQLite ledger) in front of server-everything, 2025-06-18 handshake sessions "
             "(`initialize` + `notifications/initialized`, then `tools/call echo` on every session while all are "
             f"open), {args.concurrency} client connections. RSS is the gateway process's VmRSS.", ""]
    names = [name for name, _ in runs]
    lines += ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(runs)]

    def row(label: str, cell) -> None:  # noqa: ANN001
        lines.append(f"| {label} | " + " | ".join(cell(r) for _, r in runs) + " |")

    row("RSS at start (no session yet)", lambda r: f"{r['rss_start_kb'] / 1024:.1f} MB")
    row("RSS idle (one warm-up session)", lambda r: f"{r['rss_idle_kb'] / 1024:.1f} MB")
    for n in runs[0][1]["steps"]:  # type: ignore[attr-defined]
        row(f"RSS, {n:,} sessions open and each called",
            lambda r, n=n: f"{r['steps'][n]['rss_kb'] / 1024:.1f} MB")
        row(f"added per session ({n:,})",
            lambda r, n=n: f"{(r['steps'][n]['rss_kb'] - r['rss_idle_kb']) / n:.1f} KB")
    row(f"open one session, p50 (p10–p90), {args.sample} one at a time",
        lambda r: f"{r['open_ms_p50']:.2f} ms ({r['open_ms_q'][0]:.2f}–{r['open_ms_q'][-1]:.2f})")
    row("server-everything's own `initialize` straight, alternated with the above, p50",
        lambda r: f"{r['upstream_initialize_ms_p50']:.2f} ms")
    row("gateway CPU per session opened", lambda r: f"{r['open_cpu_ms']:.2f} ms")
    row("upstream HTTP requests per session opened", lambda r: _fmt_counts(r["upstream_per_open"]))
    row("ledger records per session opened", lambda r: _fmt_counts(r["records_per_open"]))
    n = max(runs[0][1]["steps"])  # type: ignore[type-var]
    row(f"{n:,} sessions opened at concurrency {args.concurrency}",
        lambda r: f"{r['steps'][n]['open_s']:.1f} s")
    row("gateway CPU, opening and calling them all", lambda r: f"{r['gateway_cpu_s']:.1f} s")
    return "\n".join(lines) + "\n"


async def run_tree(args: argparse.Namespace, src: Path | None) -> dict[str, object]:
    """The whole stack with the gateway from this checkout, or (src) from another tree's `src/`."""
    from tests.support import gateway as gw
    from tests.support.oidc import Provider
    from tests.support.procs import Proc, free_port, start_everything

    saved = os.environ.get("PYTHONPATH")
    everything = start_everything()
    provider = Provider()
    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-sessions-"))
    proxy_port = free_port()
    proxy = Proc([sys.executable, str(Path(__file__).resolve()), "proxy", str(proxy_port), str(everything.port)],
                 port=proxy_port, log=tmp / "proxy.log")
    gateway = None
    try:
        if src is not None:
            os.environ["PYTHONPATH"] = str(src)  # ahead of the editable install
        gateway = gw.start(tmp, provider.issuer, {"everything": {"url": f"http://127.0.0.1:{proxy_port}/mcp"}},
                           [{"name": "bench", "match": {"groups": ["staff"], "servers": ["everything"]},
                             "effect": "allow", "mask": "standard"}],
                           extra={"limits": {"max_sessions_per_principal": args.sessions + args.sample + 10}})
        return await measure(args, gateway.proc.proc.pid, gateway.port, proxy_port,
                             provider.token(TOKEN_SUB, ["staff"]), tmp / "data" / "ledgergate.db")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        if gateway is not None:
            gateway.stop()
        proxy.stop()
        provider.stop()
        everything.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> str:
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    runs: list[tuple[str, dict[str, object]]] = []
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="lg-bench-sessions-base-") as base:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
            print(f"baseline {args.baseline}", flush=True)
            runs.append((f"before ({args.baseline})", await run_tree(args, Path(base) / "src")))
    print("this tree", flush=True)
    runs.append(("this tree", await run_tree(args, None)))
    print(json.dumps(runs, indent=1, default=str))
    return report(args, runs, load)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "proxy":
        asyncio.run(_proxy_main(int(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sample", type=int, default=50, help="sessions opened one at a time for the timing")
    parser.add_argument("--baseline", help="also measure the gateway of this git revision first (its src/)")
    parser.add_argument("--write", type=Path, help="write the section into this markdown file")
    args = parser.parse_args()
    text = asyncio.run(main_async(args))
    print(text)
    if args.write:
        write_section(args.write, "Sessions: memory and opening cost", text)


if __name__ == "__main__":
    main()
