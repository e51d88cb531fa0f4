"""The ledger at scale (issue 21), on SQLite and on PostgreSQL:

    .venv/bin/python bench/bench_ledger_scale.py [--size 10000000] [--engines sqlite,postgres]
        [--appends 100000] [--writers 64] [--write docs/benchmarks.md]
    .venv/bin/python bench/bench_ledger_scale.py --only-verify [--size 1000000] [--rounds 3]
        [--compare-with REV] [--write docs/benchmarks.md]

For each engine: build a log of `--size` realistic `rpc.request` records (fast path: batches of
20,000 through the store's own batch writer, `LedgerStore.append_batch`, with the interior hashes
the ledger writer would store — the same bytes, leaf hashes and stored hashes `Ledger.append`
makes, without a round trip per record), then measure

- `Ledger.open` on it (reads the compact range from stored hashes; no replay);
- inclusion and consistency proofs at that size (read from stored hashes);
- `verify_log` over it: every record read, leaf-hashed, parsed and checked against its index
  columns, the tree recomputed, every stored interior hash compared, the checkpoint checked;
- durable appends through `Ledger.append` from `--writers` concurrent writers onto that log
  (group commit: one transaction and one commit per batch).

`--only-verify` builds the log and measures `verify` alone, each run in a fresh process, in one
process and with worker processes, alternated for `--rounds` rounds (and against `--compare-with
REV`'s src/, alternated too); it reports records/s and CPU µs per record (the verifying process and
its workers; PostgreSQL's backend separately), and writes its own section.

Targets: open < 1 s at 10,000,000 records; verify >= 500,000 records/s; appends >= 20,000
records/s with 64 writers. PostgreSQL is the server at 127.0.0.1:5432 (database `test`), in a
throwaway schema. Not a test: `.ci/run` does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "--src" in sys.argv:  # verify with another checkout's package (see --compare-with)
    sys.path.insert(0, sys.argv[sys.argv.index("--src") + 1])

from bench.report import write_section  # noqa: E402
from ledgergate.audit import canonical, merkle  # noqa: E402
from ledgergate.audit.checkpoint import Checkpoint, load_or_create_signer, load_verifier  # noqa: E402
from ledgergate.audit.ledger import Ledger, origin_for, rfc3339_now  # noqa: E402
from ledgergate.audit.settings import AuditSettings  # noqa: E402
from ledgergate.audit.verify import verify_log  # noqa: E402
from ledgergate.store.ledger_store import CheckpointRow, LeafRow, LedgerStore, open_ledger_store  # noqa: E402

LOG = "big"


def fields(i: int, k: int) -> dict[str, Any]:
    return {"session": f"sess-{k}", "principal": {"iss": "http://localhost:9400", "sub": f"user{k}", "kind": "human"},
            "server": "everything", "method": "tools/call", "tool": "echo", "args": {"message": f"hello {i}"},
            "args_hmac": "ab" * 32, "decision": "allow", "rule": "staff-read", "request_id": f"req-{i}",
            "latency_ms": 1.25}


def settings() -> AuditSettings:
    return AuditSettings(replica=LOG, checkpoint_interval=0, max_batch=512)


def sign_built(store: LedgerStore, base: Path, audit: AuditSettings, log_id: str, cr: merkle.CompactRange) -> None:
    """Sign the built log's size and root with the ledger's key, as a gateway's final checkpoint would: the
    log then opens as a cleanly stopped gateway leaves it. Without it every record would be the unsigned
    tail the gateway checks record by record at start (and refuses: the build writes no seals)."""
    signer = load_or_create_signer(base / audit.signing_key, audit.key_name)
    note = signer.sign(Checkpoint(origin_for(log_id), cr.size, cr.root()).body())
    store.add_checkpoint(CheckpointRow(log_id, cr.size, cr.root(), note, b"".join(cr.edge), rfc3339_now()))


async def _open_close(url: str, base: Path) -> None:
    ledger = await Ledger.open(settings(), url, base)
    await ledger.close()


def build_log(url: str, base: Path, size: int, out: list[str], minimal: bool = False) -> float:
    """Fill the log through the store's batch writer: same record bytes, leaf and stored hashes."""
    asyncio.run(_open_close(url, base))  # keys, schema, log row
    store = open_ledger_store(url)
    t0 = time.perf_counter()
    nodes = merkle.StoredNodes()
    cr = merkle.CompactRange(on_node=nodes)
    batch: list[LeafRow] = []
    for seq in range(size):
        if seq % 1000 == 0:
            now = rfc3339_now()
        doc = {"session": f"sess-{seq % 50}", "v": 1, "log": LOG, "seq": seq, "time": now, "event": "rpc.request"}
        if not minimal:
            doc.update(fields(seq, seq % 50))
        rec = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)  # canonical for these values; checked below
        if seq % 100_000 == 0:
            assert rec == canonical.dumps(doc)
        h = merkle.leaf_hash(rec)
        cr.append(h)
        batch.append(LeafRow(seq, now, "rpc.request", f"sess-{seq % 50}", h, rec))
        if len(batch) == 20000:
            store.append_batch(LOG, batch, nodes.nodes)
            batch, nodes.nodes = [], []
            if seq % 1_000_000 == 999_999:
                print(f"  built {seq + 1:,} records ({time.perf_counter() - t0:.0f}s)", flush=True)
    if batch:
        store.append_batch(LOG, batch, nodes.nodes)
    sign_built(store, base, settings(), LOG, cr)
    store.close()
    dt = time.perf_counter() - t0
    out.append(f"built {size:,} records in {dt:.0f}s")
    print(out[-1], flush=True)
    return dt


async def bench_open_proofs(url: str, base: Path, size: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ledger = await Ledger.open(settings(), url, base)
    open_s = time.perf_counter() - t0
    assert ledger.size == size
    await ledger.checkpoint()
    root = ledger.root()
    rng = random.Random(5)
    lat = []
    for _ in range(200):
        i = rng.randrange(size)
        t = time.perf_counter()
        proof = await ledger.inclusion_proof(i, size)
        lat.append((time.perf_counter() - t) * 1000)
        leaf = await ledger.leaf(i)
        assert leaf is not None and merkle.verify_inclusion(i, size, leaf.leaf_hash, proof, root)
    lat.sort()
    clat = []
    for _ in range(100):
        m = rng.randrange(1, size)
        t = time.perf_counter()
        await ledger.consistency_proof(m, size)
        clat.append((time.perf_counter() - t) * 1000)
    await ledger.close()
    return {"open_s": open_s, "incl_med": statistics.median(lat), "incl_p99": lat[int(len(lat) * 0.99)],
            "cons_med": statistics.median(clat)}


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (verify's worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _server_cpu(store: Any) -> float | None:
    """CPU seconds of this connection's PostgreSQL backend (a local server: /proc), else None."""
    if store.url.kind != "postgres":
        return None
    try:
        pid = store.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def bench_verify(url: str, base: Path, workers: int | None) -> dict[str, Any]:
    """One `verify_log` over the whole log: records, wall seconds, CPU seconds of this process and its
    worker processes, and (PostgreSQL, in-process) CPU seconds of the server backend that fed it."""
    store = open_ledger_store(url)
    verifier = load_verifier(base / "data" / "ledger.key.pub")
    s0 = _server_cpu(store)
    c0 = _cpu()
    t0 = time.perf_counter()
    rep = verify_log(store, LOG, "ledgergate/" + LOG, verifier, workers=workers)
    dt = time.perf_counter() - t0
    cpu = _cpu() - c0
    s1 = _server_cpu(store)
    store.close()
    assert rep.ok, rep.problems
    assert rep.stored_hashes > 0 and rep.checkpoints >= 1 and rep.covered == rep.size
    server = s1 - s0 if s0 is not None and s1 is not None and workers == 1 else None
    return {"n": rep.size, "wall": dt, "cpu": cpu, "server": server, "load": os.getloadavg()[0]}


def verify_rounds(url: str, base: Path, rounds: int, sources: dict[str, str | None]) -> dict[str, list[dict[str, Any]]]:
    """`verify` in one process and with worker processes (as `audit verify` runs it), each side of
    `sources` (label -> checkout's src, None: this one), alternated in fresh processes, `rounds` times."""
    import json
    import subprocess

    out: dict[str, list[dict[str, Any]]] = {}
    for r in range(rounds):
        for label, src in sources.items():
            for workers in ("1", "auto"):
                cmd = [sys.executable, __file__, "--verify-json", url, str(base), workers]
                if src is not None:
                    cmd += ["--src", src]
                got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                out.setdefault(f"{label}|{workers}", []).append(got)
                print(f"  round {r + 1}/{rounds} {label} workers={workers}: {got['n'] / got['wall']:,.0f} records/s, "
                      f"{got['cpu'] / got['n'] * 1e6:.2f} µs CPU/record (load {got['load']:.1f})", flush=True)
    return out


async def bench_appends(url: str, base: Path, total: int, writers: int) -> tuple[float, float]:
    ledger = await Ledger.open(settings(), url, base)
    per = total // writers
    start = ledger.size

    async def writer(k: int) -> None:
        for i in range(per):
            await ledger.append("rpc.request", fields(i, k))

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert ledger.size == start + per * writers
    await ledger.close()
    return per * writers / dt, per * writers / cpu


@contextmanager
def engine_log(engine: str, size: int, log: list[str], minimal: bool) -> Iterator[tuple[str, Path, float]]:
    """A log of `size` records on `engine` in a throwaway place: (url, base dir, build seconds)."""
    with tempfile.TemporaryDirectory(prefix="ledgergate-scale-") as tmp:
        base = Path(tmp)
        schema = None
        if engine == "sqlite":
            url = f"sqlite:///{base / 'scale.db'}"
        else:
            import psycopg

            from tests.support.pg import PG, url_for

            schema = f"lg_scale_{os.getpid()}"
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.execute(f"CREATE SCHEMA {schema}")
            url = url_for(schema)
        try:
            print(f"[{engine}] building {size:,} records", flush=True)
            build_s = build_log(url, base, size, log, minimal)
            if engine == "postgres":
                import psycopg

                from tests.support.pg import PG
                with psycopg.connect(PG, autocommit=True) as conn:
                    conn.execute(f"VACUUM ANALYZE {schema}.ledger_leaves")
                    conn.execute(f"VACUUM ANALYZE {schema}.ledger_hashes")
            yield url, base, build_s
        finally:
            if schema is not None:
                import psycopg

                from tests.support.pg import PG
                with psycopg.connect(PG, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_engine(engine: str, size: int, appends: int, writers: int, log: list[str],
               verify_modes: list[str], minimal: bool) -> dict[str, Any]:
    with engine_log(engine, size, log, minimal) as (url, base, build_s):
        res = asyncio.run(bench_open_proofs(url, base, size))
        print(f"[{engine}] open {res['open_s']:.3f}s; inclusion median {res['incl_med']:.2f} ms", flush=True)
        for mode in verify_modes:
            if mode in ("1", "auto"):
                v = bench_verify(url, base, 1 if mode == "1" else None)
                res["verify" + mode] = v
                print(f"[{engine}] verify ({mode}) {v['n']:,} records in {v['wall']:.1f}s = "
                      f"{v['n'] / v['wall']:,.0f}/s, {v['cpu'] / v['n'] * 1e6:.2f} µs CPU/record", flush=True)
        res["appends"], res["appends_cpu"] = asyncio.run(bench_appends(url, base, appends, writers))
        print(f"[{engine}] appends {res['appends']:,.0f}/s with {writers} writers", flush=True)
        res["build_s"] = build_s
        return res


async def _checkpoint(url: str, base: Path) -> None:
    ledger = await Ledger.open(settings(), url, base)
    await ledger.checkpoint()
    await ledger.close()


def _old_src(rev: str, into: Path) -> str:
    """`rev`'s src/ unpacked under `into`."""
    import subprocess
    import tarfile

    repo = Path(__file__).resolve().parent.parent
    archive = into / "old.tar"
    subprocess.run(["git", "-C", str(repo), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return str(into / "src")


def _median_range(xs: list[float], fmt: str) -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def verify_section(args: argparse.Namespace) -> tuple[str, str]:
    """`--only-verify`: build the log, then `verify` alone, in rounds, optionally against `--compare-with`."""
    load0 = os.getloadavg()
    log: list[str] = []
    table: list[str] = []
    cores = os.cpu_count() or 1
    for engine in args.engines.split(","):
        with engine_log(engine, args.size, log, args.minimal_records) as (url, base, _), \
                tempfile.TemporaryDirectory(prefix="ledgergate-old-") as old:
            asyncio.run(_checkpoint(url, base))
            sources: dict[str, str | None] = {}
            if args.compare_with:
                sources[f"`{args.compare_with}`"] = _old_src(args.compare_with, Path(old))
            sources["this tree"] = None
            runs = verify_rounds(url, base, args.rounds, sources)
        for label in sources:
            server_us = [v["server"] / v["n"] * 1e6 for v in runs[f"{label}|1"] if v["server"] is not None]
            for workers in ("1", "auto"):
                vs = runs[f"{label}|{workers}"]
                rates = [v["n"] / v["wall"] for v in vs]
                us = [v["cpu"] / v["n"] * 1e6 for v in vs]
                per = statistics.median(us) + (statistics.median(server_us) if server_us else 0.0)
                how = "one process" if workers == "1" else f"{cores} worker processes"
                implied = (f"{1e6 / per:,.0f} (1 core)" if workers == "1" else
                           f"{2e6 / per:,.0f} / {4e6 / per:,.0f}")
                table.append(f"| {engine} | {how} | {label} | {_median_range(rates, ',.0f')} | "
                             f"{_median_range(us, '.2f')} | "
                             f"{_median_range(server_us, '.2f') if server_us else '—'} | {implied} | "
                             f"{statistics.median(v['load'] for v in vs):.1f} |")
    cmd = (f"`.venv/bin/python bench/bench_ledger_scale.py --only-verify --size {args.size} --engines {args.engines} "
           f"--rounds {args.rounds}" + (f" --compare-with {args.compare_with}" if args.compare_with else "")
           + (" --minimal-records" if args.minimal_records else "") + " --write docs/benchmarks.md`")
    heading = f"Ledger at scale: `audit verify`, {args.size:,} records"
    section = (
        f"## {heading}\n\nCommand: {cmd}\n\n"
        f"Machine: {platform.machine()}, {cores} CPU(s) shared with other agents, Python {platform.python_version()}; "
        f"log of {args.size:,} " + ("minimal records (~110 bytes)" if args.minimal_records else
                                    "realistic `rpc.request` records (~440 bytes)") +
        f", one checkpoint at its size; measured {datetime.now(UTC):%Y-%m-%d}, load average (1 min) "
        f"{load0[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end. Each run is `verify_log` in a fresh "
        f"process (every record read, leaf-hashed and compared, its place and index columns checked, every stored "
        f"interior hash compared, the root at the checkpoint recomputed), in one process and with the worker "
        f"processes `audit verify` starts" + (", the sides alternated" if args.compare_with else "") + ", "
        + ("one round" if args.rounds == 1 else f"{args.rounds} rounds; median (min–max)") + ".\n\n"
        "CPU µs per record is the CPU of the verifying process and its workers (start-up included) per record; it "
        "is the steady figure on a shared machine, where wall-clock rates move with the other agents' load. "
        "PostgreSQL also spends server CPU per record (its backend, measured in the one-process runs from /proc). "
        "The implied rate is cores ÷ (CPU per record, plus the server's for PostgreSQL): what that many free cores "
        "would give if the work divides evenly, as the segments do.\n\n"
        "| engine | how | code | records/s (wall) | CPU µs/record | PostgreSQL server CPU µs/record | "
        "implied records/s on 2 / 4 free cores | load |\n|---|---|---|---:|---:|---:|---:|---:|\n"
        + "\n".join(table) + "\n")
    return heading, section


def _rate(v: dict[str, Any]) -> str:
    return f"{v['n'] / v['wall']:,.0f}"


def _us(v: dict[str, Any]) -> str:
    return f"{v['cpu'] / v['n'] * 1e6:.2f}"


def _has(result: dict[str, Any], fmt: Any) -> bool:
    try:
        fmt(result)
        return True
    except KeyError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000_000)
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--appends", type=int, default=100_000)
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--write", type=Path)
    ap.add_argument("--minimal-records", action="store_true",
                    help="records with only event, log, seq, session, time, v (~110 bytes): a big log built fast")
    ap.add_argument("--verify", default="1,auto",
                    help="verify runs: 1 (one process), auto (worker processes as `audit verify`), none")
    ap.add_argument("--only-verify", action="store_true",
                    help="build the log and measure `verify` alone, in rounds (its own section)")
    ap.add_argument("--rounds", type=int, default=3, help="--only-verify: rounds of each side and mode")
    ap.add_argument("--compare-with", metavar="REV", help="--only-verify: also verify with REV's src, alternated")
    ap.add_argument("--src", help=argparse.SUPPRESS)  # a child verifying with another checkout's package
    ap.add_argument("--verify-json", nargs=3, metavar=("URL", "BASE", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.verify_json:  # a child of verify_rounds: one run, its figures as JSON on stdout
        import json

        url, base, workers = args.verify_json
        print(json.dumps(bench_verify(url, Path(base), None if workers == "auto" else int(workers))))
        return
    if args.only_verify:
        heading, section = verify_section(args)
        print(section)
        if args.write:
            write_section(args.write, heading, section)
        return
    log: list[str] = []
    load0 = os.getloadavg()
    modes = args.verify.split(",")
    results = {e: run_engine(e, args.size, args.appends, args.writers, log, modes, args.minimal_records)
               for e in args.engines.split(",")}
    cmd = ("`.venv/bin/python bench/bench_ledger_scale.py --size " + str(args.size) + " --engines " + args.engines
           + f" --appends {args.appends} --writers {args.writers} --verify {args.verify}"
           + (" --minimal-records" if args.minimal_records else "") + " --write docs/benchmarks.md`")
    rows_all = [
        ("`Ledger.open` (compact range from stored hashes, no replay)", lambda r: f"{r['open_s'] * 1000:,.0f} ms",
         "< 1 s at 10,000,000"),
        ("`verify` in one process (every record read, hashed, parsed, index columns checked; tree, stored "
         "hashes, checkpoint): records/s (wall) / CPU µs per record",
         lambda r: f"{_rate(r['verify1'])} / {_us(r['verify1'])}", "≥ 500,000 records/s"),
        (f"`verify` as `audit verify` runs it ({os.cpu_count()} worker processes): records/s (wall) / CPU µs per "
         "record", lambda r: f"{_rate(r['verifyauto'])} / {_us(r['verifyauto'])}", "≥ 500,000 records/s"),
        (f"durable appends, {args.writers} concurrent writers, onto that log (group commit, one commit per batch): "
         "wall / per CPU-second",
         lambda r: f"{r['appends']:,.0f} / {r['appends_cpu']:,.0f} records/s", "≥ 20,000 records/s"),
        ("inclusion proof (200 random leaves), median / p99", lambda r: f"{r['incl_med']:.2f} / {r['incl_p99']:.2f} ms",
         "—"),
        ("consistency proof m → size (100 random m), median", lambda r: f"{r['cons_med']:.2f} ms", "—"),
        ("building the log through the store's batch writer (20,000 a batch)", lambda r: f"{r['build_s']:.0f} s", "—"),
    ]
    rows = [r for r in rows_all if all(_has(results[e], r[1]) for e in results)]
    engines = list(results)
    head = "| what | " + " | ".join(engines) + " | target |\n|---|" + "---:|" * len(engines) + "---:|\n"
    body = "".join(f"| {name} | " + " | ".join(fmt(results[e]) for e in engines) + f" | {target} |\n"
                   for name, fmt, target in rows)
    heading = f"Ledger at scale, {args.size:,} records"
    section = (
        f"## {heading}\n\nCommand: {cmd}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s) shared with other work, Python "
        f"{platform.python_version()}; SQLite WAL `synchronous=FULL`, PostgreSQL at 127.0.0.1 (defaults); "
        + (f"log of {args.size:,} minimal records (event, log, seq, session, time, v: ~110 bytes each), "
           "built fast; the appends measured onto it are realistic `rpc.request` records; measured "
           if args.minimal_records else
           f"log of {args.size:,} realistic `rpc.request` records (~440 bytes each); measured ") +
        f"{datetime.now(UTC):%Y-%m-%d}; load average (1 min) {load0[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores: other agents' work ran throughout, so "
        f"wall-clock rates are a fraction of what the code does on an idle machine, and CPU-second rates "
        f"(records per second of CPU this process and its workers used) are given beside them.\n\n"
        + head + body + "\n"
        "The log is built through `LedgerStore.append_batch` (the ledger writer's own batch write, with the same "
        "record bytes, leaf hashes and stored interior hashes), not through `append` one record at a time; "
        "open, proofs, verify and appends then run on it as the gateway runs them.\n")
    print(section)
    if args.write:
        write_section(args.write, heading, section)


if __name__ == "__main__":
    main()
