"""The data path of this tree against an earlier commit, alternated in one run (the machine is shared
and noisy, so only a same-run comparison means anything).

    .venv/bin/python bench/bench_compare.py [--base 3f92b8f] [--this REV] [--storage postgres] [--seconds 3] [--rounds 7] [--write docs/benchmarks.md]

The base commit (and `--this`, when given instead of this checkout) is checked out with `git worktree`
into a temporary folder and served by the same
interpreter and virtualenv with `PYTHONPATH` pointing at its `src/` (so only ledgergate's code differs).
Both run `ledgergate serve` with the full pipeline (OIDC token, policy, masking, two durable ledger
records per call) in front of one server-everything; wrk drives `tools/call echo` over 8 handshake
sessions, and the two gateways take turns within every round, in alternating order. Their ledgers
are SQLite files, or with `--storage postgres` a throwaway schema each in the PostgreSQL at
127.0.0.1:5432 (database test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from report import write_section  # noqa: E402
from wrk import Run, open_sessions, require_wrk, wrk  # noqa: E402

from tests.support import gateway as gw  # noqa: E402
from tests.support.oidc import Provider  # noqa: E402
from tests.support.procs import Proc, free_port, start_everything  # noqa: E402

POLICY = [{"name": "bench", "match": {"groups": ["staff"], "servers": ["everything"]}, "effect": "allow",
           "mask": "standard"}]


def serve(tree: Path, directory: Path, issuer: str, upstream: str, storage: str | None = None) -> tuple[Proc, int]:
    port = free_port()
    config = gw.write_config(directory, port, issuer, {"everything": {"url": upstream}}, POLICY,
                             {"storage": storage} if storage else None)
    proc = Proc([sys.executable, "-m", "ledgergate.cli", "serve", "--config", str(config)],
                env={"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tree / "src")}, cwd=directory, port=port,
                log=directory / "gateway.log")
    return proc, port


async def main_async(args: argparse.Namespace) -> str:
    require_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="lg-compare-"))
    base_tree = tmp / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), args.base], check=True)
    this_tree = ROOT
    if args.this:
        this_tree = tmp / "this"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(this_tree), args.this],
                       check=True)
    if args.fast:
        fast_port = free_port()
        everything = Proc([sys.executable, str(ROOT / "bench" / "fast_upstream.py"), str(fast_port)], port=fast_port)
    else:
        everything = start_everything()
    provider = Provider()
    upstream = f"http://127.0.0.1:{everything.port}/mcp"
    procs: list[Proc] = []
    schemas = contextlib.ExitStack()
    try:
        token = provider.token("bench", ["staff"])
        targets = {}
        for name, tree in (("base", base_tree), ("this", this_tree)):
            (tmp / f"run-{name}").mkdir()
            storage = None
            if args.storage == "postgres":
                from tests.support.pg import throwaway_schema, url_for

                storage = url_for(schemas.enter_context(throwaway_schema(f"lg_compare_{name}")))
            proc, port = serve(tree, tmp / f"run-{name}", provider.issuer, upstream, storage)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}/mcp/everything"
            targets[name] = (url, await open_sessions(url, token, 8), proc.proc.pid)

        def run(name: str, c: int) -> Run:
            url, sessions, pid = targets[name]
            return wrk(url, sessions, token, c, args.seconds, pid, everything.proc.pid)

        for name in targets:
            run(name, 8)  # warm-up
        rows = []
        for rnd in range(args.rounds):
            order = ("base", "this") if rnd % 2 == 0 else ("this", "base")
            row = {(name, c): run(name, c) for c in (1, 8) for name in order}
            rows.append(row)
            print(f"round {rnd + 1}: c=1 p50 base {row['base', 1].p50_ms:.2f} ms, this {row['this', 1].p50_ms:.2f} ms; "
                  f"c=8 base {row['base', 8].rps:.0f}/s, this {row['this', 8].rps:.0f}/s; CPU/call base "
                  f"{row['base', 8].cpu_us:.0f} µs, this {row['this', 8].cpu_us:.0f} µs", flush=True)

        def med(name: str, c: int, field: str) -> float:
            return statistics.median(getattr(r[name, c], field) for r in rows)

        ratio = [r["this", 8].rps / r["base", 8].rps for r in rows]
        cpu_ratio = [r["this", 8].cpu_us / r["base", 8].cpu_us for r in rows]
        return (
            f"## {title(args)}\n\n"
            f"Command: `.venv/bin/python bench/bench_compare.py --base {args.base}"
            f"{' --this ' + args.this if args.this else ''}{' --fast' if args.fast else ''}"
            f"{' --storage postgres' if args.storage == 'postgres' else ''} --seconds {args.seconds:g} "
            f"--rounds {args.rounds}` ({time.strftime('%Y-%m-%d')}; 2 shared cores, other work running)\n\n"
            f"Full pipeline, `tools/call echo` against {'bench/fast_upstream.py' if args.fast else 'server-everything'}, the two gateways alternated in each of "
            f"{args.rounds} rounds{', each with its ledger in PostgreSQL' if args.storage == 'postgres' else ''}.\n\n"
            "| | base | this tree | this / base |\n|---|---|---|---|\n"
            f"| c=1 p50 | {med('base', 1, 'p50_ms'):.2f} ms | {med('this', 1, 'p50_ms'):.2f} ms | "
            f"{med('this', 1, 'p50_ms') / med('base', 1, 'p50_ms'):.2f}x |\n"
            f"| c=8 throughput | {med('base', 8, 'rps'):.0f}/s | {med('this', 8, 'rps'):.0f}/s | "
            f"**{statistics.median(ratio):.2f}x** (rounds {min(ratio):.2f}x–{max(ratio):.2f}x) |\n"
            f"| gateway CPU per call, c=8 | {med('base', 8, 'cpu_us'):.0f} µs | {med('this', 8, 'cpu_us'):.0f} µs | "
            f"**{statistics.median(cpu_ratio):.2f}x** (rounds {min(cpu_ratio):.2f}x–{max(cpu_ratio):.2f}x) |\n"
        )
    finally:
        for proc in procs:
            proc.stop()
        schemas.close()
        provider.stop()
        everything.stop()
        for tree in {base_tree, this_tree} - {ROOT}:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def title(args: argparse.Namespace) -> str:
    return (f"Data path: {args.this or 'this tree'} against {args.base}{' (fast upstream)' if args.fast else ''}"
            f"{' (PostgreSQL ledger)' if args.storage == 'postgres' else ''}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="3f92b8f", help="the commit to compare against")
    parser.add_argument("--this", help="a commit to measure instead of this checkout")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fast", action="store_true",
                        help="in front of bench/fast_upstream.py instead of server-everything: the gateway's own cost")
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite",
                        help="where both gateways keep their ledger (postgres: a throwaway schema each at 127.0.0.1:5432)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    print(report)
    if args.write:
        write_section(args.write, title(args), report)


if __name__ == "__main__":
    main()
