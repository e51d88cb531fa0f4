"""Ledger benchmarks (issue 5): durable appends with 64 writers, verify speed, proof latency.

    .venv/bin/python bench/bench_ledger.py [--appends 50000] [--writers 64] [--size 1000000]

Prints figures; not a test. Targets: >= 20,000 durable records/s with 64
concurrent writers on SQLite; verify >= 200,000 records/s; an inclusion proof
at 1,000,000 records <= 5 ms. Everything runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from ledgergate.audit import canonical, merkle
from ledgergate.audit.checkpoint import Checkpoint, load_or_create_signer, load_verifier
from ledgergate.audit.ledger import Ledger, origin_for, rfc3339_now
from ledgergate.audit.settings import AuditSettings
from ledgergate.audit.verify import verify_log
from ledgergate.store.ledger_store import CheckpointRow, LeafRow, open_ledger_store


def fields(i: int, k: int) -> dict:
    return {"session": f"sess-{k}", "principal": {"iss": "http://localhost:9400", "sub": f"user{k}", "kind": "human"},
            "server": "everything", "method": "tools/call", "tool": "echo", "args": {"message": f"hello {i}"},
            "args_hmac": "ab" * 32, "decision": "allow", "rule": "staff-read", "request_id": f"req-{i}",
            "latency_ms": 1.25}


async def bench_appends(base: Path, total: int, writers: int) -> None:
    settings = AuditSettings(replica="bench", checkpoint_interval=5.0, max_batch=512)
    ledger = await Ledger.open(settings, "sqlite:///./appends.db", base)
    per = total // writers

    async def writer(k: int) -> None:
        for i in range(per):
            await ledger.append("rpc.request", fields(i, k))

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    dt = time.perf_counter() - t0
    n = per * writers
    print(f"appends: {n} durable records, {writers} concurrent writers, SQLite WAL synchronous=FULL: "
          f"{n / dt:,.0f} records/s ({dt:.2f}s)")
    await ledger.close()


def build_log(base: Path, size: int) -> str:
    """Fill a log quickly through the store (same bytes, leaf and stored interior hashes the writer makes)."""
    url = f"sqlite:///{base / 'big.db'}"
    settings = AuditSettings(replica="big", checkpoint_interval=0)
    asyncio.run(_open_close(settings, url, base))  # keys, schema, log row
    store = open_ledger_store(url)
    t0 = time.perf_counter()
    nodes = merkle.StoredNodes()
    cr = merkle.CompactRange(on_node=nodes)
    batch: list[LeafRow] = []
    for seq in range(size):
        now = rfc3339_now()
        rec = canonical.dumps({**fields(seq, seq % 50), "v": 1, "log": "big", "seq": seq, "time": now,
                               "event": "rpc.request"})
        h = merkle.leaf_hash(rec)
        cr.append(h)
        batch.append(LeafRow(seq, now, "rpc.request", f"sess-{seq % 50}", h, rec))
        if len(batch) == 20000:
            store.append_batch("big", batch, nodes.nodes)
            batch, nodes.nodes = [], []
    if batch:
        store.append_batch("big", batch, nodes.nodes)
    # signed as a gateway's final checkpoint would: the log opens as a cleanly stopped gateway leaves it (an
    # unsigned tail would be checked record by record at start, and refused: the build writes no seals)
    signer = load_or_create_signer(base / settings.signing_key, settings.key_name)
    note = signer.sign(Checkpoint(origin_for("big"), cr.size, cr.root()).body())
    store.add_checkpoint(CheckpointRow("big", cr.size, cr.root(), note, b"".join(cr.edge), rfc3339_now()))
    store.close()
    print(f"built a {size:,}-record log in {time.perf_counter() - t0:.1f}s")
    return url


async def _open_close(settings: AuditSettings, url: str, base: Path) -> None:
    ledger = await Ledger.open(settings, url, base)
    await ledger.close()


async def bench_proofs(base: Path, url: str, size: int) -> None:
    settings = AuditSettings(replica="big", checkpoint_interval=0)
    t0 = time.perf_counter()
    ledger = await Ledger.open(settings, url, base)
    print(f"open (compact range from stored interior hashes at {size:,} records): {time.perf_counter() - t0:.2f}s")
    await ledger.checkpoint()
    rng = random.Random(5)
    lat = []
    root = ledger.root()
    for _ in range(300):
        i = rng.randrange(size)
        t = time.perf_counter()
        proof = await ledger.inclusion_proof(i, size)
        lat.append((time.perf_counter() - t) * 1000)
        leaf = (await ledger.leaf(i)).leaf_hash
        assert merkle.verify_inclusion(i, size, leaf, proof, root)
    lat.sort()
    print(f"inclusion proof at {size:,} records: median {statistics.median(lat):.3f} ms, "
          f"p99 {lat[int(len(lat) * 0.99)]:.3f} ms, max {lat[-1]:.3f} ms ({len(lat)} random leaves)")
    lat = []
    for _ in range(100):
        m = rng.randrange(1, size)
        t = time.perf_counter()
        await ledger.consistency_proof(m, size)
        lat.append((time.perf_counter() - t) * 1000)
    print(f"consistency proof to {size:,}: median {statistics.median(lat):.3f} ms, max {max(lat):.3f} ms")
    await ledger.close()


def bench_verify(base: Path, url: str) -> None:
    store = open_ledger_store(url)
    verifier = load_verifier(base / "data" / "ledger.key.pub")
    t0 = time.perf_counter()
    rep = verify_log(store, "big", "ledgergate/big", verifier)
    dt = time.perf_counter() - t0
    store.close()
    assert rep.ok, rep.problems
    print(f"verify: {rep.size:,} records (leaf hashes, record checks, tree, {rep.checkpoints} checkpoint) "
          f"in {dt:.2f}s = {rep.size / dt:,.0f} records/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--appends", type=int, default=50000)
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--size", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledgergate-bench-") as tmp:
        base = Path(tmp)
        asyncio.run(bench_appends(base, args.appends, args.writers))
        url = build_log(base, args.size)
        asyncio.run(bench_proofs(base, url, args.size))
        bench_verify(base, url)


if __name__ == "__main__":
    main()
