"""Approvals benchmarks (issue 17): decision-to-wake latency and the memory of held calls.

    .venv/bin/python bench/bench_approvals.py [--rounds 200] [--waiters 1000] [--pg postgresql://...] [--write]

Prints figures; not a test. Targets: a held call wakes under 100 ms after a
decision on the same replica (SQLite, one process) and under 500 ms across
replicas (two service instances, each with its own connections and ledger
log, on one PostgreSQL; woken by LISTEN/NOTIFY, the poll fallback set to 60 s
so it cannot help); holding 1,000 calls costs bounded memory. Each decision is
recorded in the real ledger (durable) before it takes effect, and that is in
the figure. `--write` replaces the "Approvals" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

from report import write_section  # bench/ is on sys.path when run as a script
from ledgergate.approvals.service import ApprovalService
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec
from ledgergate.store.approvals_store import ApprovalStore

ALICE = Principal("http://localhost:9400", "alice", groups=frozenset({"staff"}))
BOB = Principal("http://localhost:9400", "bob", groups=frozenset({"approvers"}))
SPEC = ApproverSpec(("approvers",), (), 1)


async def open_side(url: str, base: Path, replica: str, poll: float) -> tuple[ApprovalService, Ledger]:
    ledger = await Ledger.open(AuditSettings(replica=replica, checkpoint_interval=0), url, base)
    svc = ApprovalService(ApprovalStore.from_url(url), ledger.append, ApprovalsSettings(max_pending=100_000),
                          poll_interval=poll,
                          args_key=ledger.subkey("approval-arguments"))
    await svc.start(background=False)
    return svc, ledger


async def ask(svc: ApprovalService, i: int) -> Any:
    return await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer",
                             arguments={"amount": 5000 + i, "to": "DE89370400440532013000"},
                             masked_args={"amount": 5000 + i, "to": "DE89**************3000"}, rule="big",
                             policy_version="v1", approvers=SPEC, request_id=f"req-{i}")


async def rounds(holder: ApprovalService, decider: ApprovalService, n: int) -> tuple[list[float], list[float]]:
    """Per round: (decide() called -> waiter has the approved approval, decide() returned -> waiter has it)."""
    total, after = [], []
    for i in range(n):
        a = await ask(holder, i)
        woke: list[float] = []

        async def hold(approval_id: str = a.id) -> None:
            got = await holder.wait(approval_id, 30)
            woke.append(time.perf_counter())
            assert got.status == "approved", got.status

        task = asyncio.create_task(hold())
        await asyncio.sleep(0.002)
        t0 = time.perf_counter()
        await decider.decide(a.id, BOB, "approve", "bench")
        t1 = time.perf_counter()
        await asyncio.wait_for(task, 10)
        total.append((woke[0] - t0) * 1000)
        after.append(max(0.0, woke[0] - t1) * 1000)
    return total, after


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms"


async def bench_sqlite(base: Path, n: int) -> tuple[str, str]:
    url = f"sqlite:///{base / 'sqlite' / 'ledgergate.db'}"
    svc, ledger = await open_side(url, base / "sqlite", "a", 1.0)
    try:
        total, after = await rounds(svc, svc, n)
    finally:
        await svc.close()
        await ledger.close()
    return summary(total), summary(after)


async def bench_pg(base: Path, n: int, pg: str) -> tuple[str, str]:
    import secrets

    import psycopg

    schema = f"bench_apr_{secrets.token_hex(4)}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{pg}?options=-csearch_path%3D{schema}"
    try:
        a, la = await open_side(url, base / "pa", "a", 60.0)
        b, lb = await open_side(url, base / "pb", "b", 60.0)
        try:
            total, after = await rounds(a, b, n)
        finally:
            for svc in (a, b):
                await svc.close()
            for led in (la, lb):
                await led.close()
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return summary(total), summary(after)


async def bench_memory(base: Path, count: int) -> tuple[str, str]:
    url = f"sqlite:///{base / 'mem' / 'ledgergate.db'}"
    svc, ledger = await open_side(url, base / "mem", "m", 1.0)
    try:
        approvals = [await ask(svc, i) for i in range(count)]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        tasks = [asyncio.create_task(svc.wait(a.id, 600)) for a in approvals]
        while svc.waiting < count:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        gc.collect()
        held = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in held.compare_to(before, "filename"))
        polled: list[float] = []
        for _ in range(3):  # what one poll over all held calls costs the event loop's thread pool
            t0 = time.perf_counter()
            await asyncio.to_thread(svc.store.statuses, [a.id for a in approvals])
            polled.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for a in approvals:
            await svc.decide(a.id, BOB, "deny", "bench over")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        released = time.perf_counter() - t0
        assert svc.waiting == 0
    finally:
        await svc.close()
        await ledger.close()
    return (f"{grown / 1024:,.0f} KiB for {count:,} held calls ({grown / count / 1024:.1f} KiB each, "
            "with the asyncio task running each `wait()`; Python heap, tracemalloc)",
            f"one status poll over all {count:,}: {min(polled):.1f} ms; deciding all {count:,} one by one "
            f"(each recorded durably) and releasing them: {released:.1f} s")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        sq_total, sq_after = await bench_sqlite(base, args.rounds)
        print(f"SQLite, one process: decide() -> held call woken: {sq_total}; after decide() returned: {sq_after}")
        pg_total, pg_after = await bench_pg(base, args.rounds, args.pg)
        print(f"PostgreSQL, decide on replica b, held on replica a: {pg_total}; after decide() returned: {pg_after}")
        mem, poll = await bench_memory(base, args.waiters)
        print(f"memory: {mem}\n{poll}")
    if args.write:
        section = (
            "## Approvals\n\n"
            "Command: `.venv/bin/python bench/bench_approvals.py --write` (defaults: `--rounds 200 --waiters 1000`; "
            "PostgreSQL at 127.0.0.1:5432 database `test`, a throwaway schema; everything else in a temporary "
            "directory).\n\n"
            f"Machine: {platform.machine()}, 2 CPU(s) shared with other work, Python {platform.python_version()}; "
            f"measured {date.today().isoformat()}.\n\n"
            "| what | measured | target |\n|---|---:|---:|\n"
            f"| decision to held call woken, one replica (SQLite; `decide()` called → `wait()` returns approved) "
            f"| {sq_total} | < 100 ms |\n"
            f"| same, counted from `decide()` returning (store committed, waiter re-reads) | {sq_after} | — |\n"
            f"| decision on replica b to the call held on replica a (PostgreSQL LISTEN/NOTIFY; poll fallback 60 s) "
            f"| {pg_total} | < 500 ms |\n"
            f"| same, counted from `decide()` returning | {pg_after} | — |\n"
            f"| memory of {args.waiters:,} held calls | {mem} | bounded |\n"
            f"| poll and release of {args.waiters:,} held calls | {poll} | — |\n\n"
            "`decide()` makes its `approval.decided` and `approval.granted` records durable in the ledger before the "
            "store changes, so the decision-to-wake figures include two durable ledger commits. A held call is one future and one timer "
            "in a dict keyed by approval id; the poll (1 s on SQLite, 5 s on PostgreSQL by default) reads the "
            "status of every held id in chunks of 500.\n"
        )
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", "Approvals", section)


if __name__ == "__main__":
    asyncio.run(main())
