"""Durable ledger appends with many concurrent writers (issue 21), SQLite and PostgreSQL:

    .venv/bin/python bench/bench_ledger_appends.py [--engines sqlite,postgres] [--size 1000000]
        [--appends 20000] [--writers 64] [--rounds 5] [--write docs/benchmarks.md]

For each engine a log of `--size` realistic `rpc.request` records is built once (through the store's
batch writer, as bench_ledger_scale.py does), then rounds alternate between appending onto that log
and appending onto a fresh log (a new database file, or a new PostgreSQL schema), each round
`--appends` records from `--writers` asyncio tasks calling `Ledger.append` in one event loop (as the
gateway does). Every append returns only after its batch's commit (SQLite WAL `synchronous=FULL`,
PostgreSQL `synchronous_commit` on). Reported per case: records/s (median, min–max over the rounds),
CPU µs per append (this process, every thread, from `time.process_time`), the mean batch size (records
per commit) and the load average beside each round. Target: >= 20,000 records/s with 64 writers on
both engines onto a 1,000,000-record log. Not a test: `.ci/run` does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_ledger_scale import LOG, build_log, fields, settings  # noqa: E402
from bench.report import write_section  # noqa: E402
from ledgergate.audit.ledger import Ledger  # noqa: E402
from ledgergate.store.ledger_store import LedgerStore  # noqa: E402


def _count_commits(ledger: Ledger) -> list[int]:
    """Count the ledger's batch commits (wraps its store's batch write; the bench's own view)."""
    seen = [0]
    store: LedgerStore = ledger._store  # noqa: SLF001 - a bench may look inside
    name = "append_columns" if hasattr(store, "append_columns") else "append_batch"  # older trees: append_batch
    inner = getattr(store, name)

    def counted(*args: Any, **kw: Any) -> None:
        seen[0] += 1
        inner(*args, **kw)

    setattr(store, name, counted)
    return seen


def _server_cpu(ledger: Ledger) -> float | None:
    """CPU seconds used so far by the PostgreSQL server process serving the ledger's writer
    connection (from /proc: the server runs on this machine), or None for SQLite."""
    conn = ledger._store.conn  # noqa: SLF001 - a bench may look inside
    pid = getattr(getattr(conn, "info", None), "backend_pid", None)
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def appends_round(url: str, base: Path, total: int, writers: int) -> dict[str, float]:
    ledger = await Ledger.open(settings(), url, base)
    commits = _count_commits(ledger)
    per = total // writers
    start = ledger.size
    records = [[fields(i, k) for i in range(per)] for k in range(writers)]  # built before the clock starts

    async def writer(k: int) -> None:
        for f in records[k]:
            await ledger.append("rpc.request", f)

    load = os.getloadavg()[0]
    s0 = _server_cpu(ledger)
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    s1 = _server_cpu(ledger)
    n = per * writers
    assert ledger.size == start + n
    await ledger.close()
    server_us = (s1 - s0) / n * 1e6 if s0 is not None and s1 is not None else float("nan")
    return {"rate": n / dt, "cpu_us": cpu / n * 1e6, "server_us": server_us, "batch": n / max(commits[0], 1),
            "load": load, "start": start}


def commit_ceiling(url: str, base: Path, batch: int, commits: int = 60) -> float:
    """Records/s the store takes when every commit carries `batch` rows of ~440 bytes and nothing
    else is done: a bare loop of one-transaction inserts into a scratch table, same engine, same
    disk, same durability settings, measured just before a round. With `batch` = the writer count
    this is the most group commit can reach here now; the ledger's rate is read against it."""
    from ledgergate.store.db import StoreURL, connect

    scratch = StoreURL.parse(url, base)
    conn = connect(scratch)
    pg = scratch.kind == "postgres"
    row = os.urandom(440)
    try:
        if pg:
            conn.autocommit = True
        conn.execute("DROP TABLE IF EXISTS bench_ceiling")
        conn.execute(f"CREATE TABLE bench_ceiling (k TEXT NOT NULL, n BIGINT NOT NULL, v {'BYTEA' if pg else 'BLOB'} "
                     "NOT NULL, PRIMARY KEY (k, n))")
        if not pg:
            conn.commit()
        n = 0
        t0 = time.perf_counter()
        for _ in range(commits):
            if pg:  # one statement, its own transaction: one round trip and one durable commit
                conn.execute("INSERT INTO bench_ceiling SELECT 'c', g, %s "
                             "FROM generate_series(%s::bigint, %s::bigint) g",
                             (row, n, n + batch - 1))
            else:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO bench_ceiling VALUES ('c', ?, ?)",
                                 [(n + i, row) for i in range(batch)])
                conn.execute("COMMIT")
            n += batch
        rate = n / (time.perf_counter() - t0)
        conn.execute("DROP TABLE bench_ceiling")
        if not pg:
            conn.commit()
        return rate
    finally:
        conn.close()


def _pg_url(name: str) -> str:
    from tests.support.pg import url_for

    return url_for(name)


def _pg_schema(name: str, drop_only: bool = False) -> str:
    import psycopg

    from tests.support.pg import PG, url_for

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        if not drop_only:
            conn.execute(f"CREATE SCHEMA {name}")
    return url_for(name)


def _pg_has_log(schema: str) -> bool:
    import psycopg

    from tests.support.pg import PG

    with psycopg.connect(PG, autocommit=True) as conn:
        got = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                           "AND table_name = 'ledger_leaves'", (schema,)).fetchone()
    return got is not None


def run_engine(engine: str, size: int, total: int, writers: int, rounds: int,
               cases: list[str], keep: Path | None, warmup: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="ledgergate-appends-") as tmp:
        base = keep if keep is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        tag = "".join(c for c in base.name.lower() if c.isalnum())[:20] if keep is not None else str(pid)
        big_schema = f"lg_bench_appends_{tag}_{size}"
        ceiling_schema = f"lg_bench_appends_ceiling_{pid}"
        ceiling_url = f"sqlite:///{base / 'ceiling.db'}" if engine == "sqlite" else _pg_schema(ceiling_schema)
        try:
            url = ""
            if "big" in cases:
                if engine == "sqlite":
                    url = f"sqlite:///{base / f'big{size}.db'}"
                    built = (base / f"big{size}.db").exists()
                else:
                    built = keep is not None and _pg_has_log(big_schema)
                    url = _pg_schema(big_schema) if not built else _pg_url(big_schema)
                if not built:
                    print(f"[{engine}] building {size:,} records", flush=True)
                    build_log(url, base, size, [])
                    if engine == "postgres":
                        import psycopg

                        from tests.support.pg import PG
                        with psycopg.connect(PG, autocommit=True) as conn:
                            conn.execute(f"VACUUM ANALYZE {big_schema}.ledger_leaves")
                            conn.execute(f"VACUUM ANALYZE {big_schema}.ledger_hashes")
            for r in range(-warmup, rounds):  # rounds below 0 warm up (imports, caches, the disk) and are not kept
                for case in cases:
                    ceiling = commit_ceiling(ceiling_url, base, writers)
                    if case == "big":
                        res = asyncio.run(appends_round(url, base, total, writers))
                    else:
                        fresh_schema = f"lg_bench_appends_fresh_{pid}_{r + warmup}"
                        furl = (f"sqlite:///{base / f'fresh{r}.db'}" if engine == "sqlite"
                                else _pg_schema(fresh_schema))
                        try:
                            res = asyncio.run(appends_round(furl, base, total, writers))
                        finally:
                            if engine == "sqlite":
                                for suffix in ("", "-wal", "-shm"):
                                    Path(f"{base / f'fresh{r}.db'}{suffix}").unlink(missing_ok=True)
                            else:
                                _pg_schema(fresh_schema, drop_only=True)
                    # the ceiling before and after the round, averaged
                    res["ceiling"] = ceiling = (ceiling + commit_ceiling(ceiling_url, base, writers)) / 2
                    res["share"] = res["rate"] / ceiling
                    if r >= 0:
                        out[case].append(res)
                    print(f"[{engine}] round {r + 1 if r >= 0 else 'warm-up'} {case} (log at {res['start']:,.0f}): "
                          f"{res['rate']:,.0f} records/s, "
                          f"{res['cpu_us']:.1f} CPU µs/append"
                          + (f" (+ {res['server_us']:.1f} server)" if engine == "postgres" else "")
                          + f", {res['batch']:.1f} records/commit, "
                          f"bare commits of {writers} rows {ceiling:,.0f} rows/s, "
                          f"load {res['load']:.1f}", flush=True)
        finally:
            if engine == "postgres":
                _pg_schema(ceiling_schema, drop_only=True)
                if "big" in cases and keep is None:
                    _pg_schema(big_schema, drop_only=True)
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{base / 'ceiling.db'}{suffix}").unlink(missing_ok=True)
    return out


def _spread(xs: list[float], fmt: str) -> str:
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--appends", type=int, default=20_000)
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    ap.add_argument("--cases", default="big,fresh", help="big (onto the --size log), fresh (a new log), or both")
    ap.add_argument("--keep", type=Path, help="build the big log here once and reuse it in later runs "
                    "(it grows by each run's appends; PostgreSQL keeps schema lg_bench_appends_DIRNAME_SIZE)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    cases = args.cases.split(",")
    results = {e: run_engine(e, args.size, args.appends, args.writers, args.rounds, cases, args.keep, args.warmup)
               for e in args.engines.split(",")}
    cmd = (f"`.venv/bin/python bench/bench_ledger_appends.py --engines {args.engines} --size {args.size} "
           f"--appends {args.appends} --writers {args.writers} --rounds {args.rounds} --cases {args.cases}"
           " --write docs/benchmarks.md`")
    rows = []
    for engine, by_case in results.items():
        for case, rs in by_case.items():
            what = f"onto a {args.size:,}-record log" if case == "big" else "onto a fresh log"
            rows.append(f"| {engine} | {what} | {_spread([r['rate'] for r in rs], ',.0f')} | "
                        f"{_spread([r['cpu_us'] for r in rs], '.1f')} | "
                        + (f"{_spread([r['server_us'] for r in rs], '.1f')} | " if engine == "postgres" else "— | ")
                        + f"{_spread([r['batch'] for r in rs], '.1f')} | "
                        f"{_spread([r['ceiling'] for r in rs], ',.0f')} | {_spread([r['share'] for r in rs], '.2f')} | "
                        f"{_spread([r['load'] for r in rs], '.1f')} |")
    heading = "Ledger appends, 64 writers"
    section = (
        f"## {heading}\n\nCommand: {cmd}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s) shared with other agents' work, Python "
        f"{platform.python_version()}; SQLite WAL `synchronous=FULL`, PostgreSQL at 127.0.0.1 (defaults, "
        f"`synchronous_commit` on); measured {datetime.now(UTC):%Y-%m-%d}. {args.writers} asyncio tasks in one "
        f"event loop each await `Ledger.append` of a realistic `rpc.request` record (~440 bytes), "
        f"{args.appends:,} records a round, {args.rounds} rounds alternating the two cases; every append returns "
        f"after its batch's commit. Median (min–max) over the rounds; CPU is this process's, all threads, per "
        f"append, and for PostgreSQL also the server process's that serves the ledger's writer connection "
        f"(from /proc; the server runs on the same two cores); load is the 1-minute load average at the start "
        f"of each round. *Bare commits* is what the "
        f"store takes in the same moment with nothing else done: transactions of {args.writers} rows of 440 bytes into "
        "a scratch table, same engine, disk and durability settings, timed just before and just after each round "
        "(mean of the two), so each round's rate can be read against what the disk allowed then; *share of "
        "bare* is the ledger's rate over it.\n\n"
        f"| engine | log | records/s | CPU µs/append | server CPU µs/append | records/commit "
        f"| bare commits of {args.writers} rows, rows/s "
        "| share of bare | load |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
        + "\n\nTarget: ≥ 20,000 records/s on both engines "
        f"onto a 1,000,000-record log.\n")
    print(section)
    if args.write:
        write_section(args.write, heading, section)


if __name__ == "__main__":
    main()
