"""The ledger writer's CPU per record, without the store: what sealing each record (audit/seals.py) adds
to the hot path. Run it once per tree and compare:

    .venv/bin/python bench/bench_record_seal.py                                 # this tree
    PYTHONPATH=/path/to/other/src .venv/bin/python bench/bench_record_seal.py   # another tree

`Ledger._write` (number, canonical JSON, leaf hash, compact range, seal, columns) is timed on batches
of `--batch` realistic `rpc.request` records handed to a store that keeps nothing, so no I/O is
measured; reported (CPU time of this process, so a busy machine skews it less): the minimum and median
over `--rounds` rounds of nanoseconds per record, and, where the tree has seals, the same step with the
seal stubbed out (rounds alternated in one process) and the cost of one `Sealer.seal` alone.
Not a test: `.ci/run` does not run it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from ledgergate.audit.checkpoint import Signer
from ledgergate.audit.ledger import Ledger, _Append
from ledgergate.audit.settings import AuditSettings


class _NoStore:
    """Takes a batch and keeps nothing: the writer's own CPU is what is measured."""

    def append_columns(self, *args: Any, **kw: Any) -> None:
        pass


def fields(i: int) -> dict[str, Any]:
    return {"session": "2cy4GQ3uNmnk7BjjB1t8MMul_5Og-4mhkGGHCy9vnHg",
            "principal": {"issuer": "http://127.0.0.1:44169", "subject": "bench", "kind": "human", "groups": ["staff"]},
            "server": "everything", "method": "tools/call", "target": "echo", "args_masked": {},
            "args": {"message": f"hello {i}"}, "args_hmac": "ab" * 32, "decision": "allow", "rule": "bench",
            "request_id": f"req_{i:011d}"}


class _NoSeal:
    """Stands in for the ledger's Sealer: the same writer step with the seal taken out."""

    def seal(self, seq: int, leaf_hash: bytes) -> bytes:
        return leaf_hash


def _round(ledger: Ledger, batch: int, batches: int) -> float:
    items = [[_Append("rpc.request", fields(i), None) for i in range(batch)] for _ in range(batches)]
    t0 = time.process_time_ns()
    for one in items:
        ledger._write(one)  # the writer's step itself is what is measured
    return (time.process_time_ns() - t0) / (batch * batches)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--batches", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    store: Any = _NoStore()
    ledger = Ledger(AuditSettings(replica="bench", checkpoint_interval=0), store, store, Signer.generate("bench"),
                    bytes(range(32)), "bench", [])
    sealer = getattr(ledger, "_sealer", None)  # None: a tree from before seals
    runs: dict[str, list[float]] = {"write": [], "write_without_seal": []}
    for _ in range(args.rounds):  # alternated, so both variants see the same machine
        runs["write"].append(_round(ledger, args.batch, args.batches))
        if sealer is not None:
            ledger._sealer = _NoSeal()  # type: ignore[assignment]
            runs["write_without_seal"].append(_round(ledger, args.batch, args.batches))
            ledger._sealer = sealer
    out: dict[str, Any] = {"batch": args.batch}
    for name, values in runs.items():
        if values:
            out[f"{name}_ns_per_record"] = {"min": round(min(values)), "median": round(statistics.median(values))}
    if sealer is not None:
        leaf, n, seal_ns = bytes(32), 200_000, []
        for _ in range(args.rounds):
            t0 = time.process_time_ns()
            for seq in range(n):
                sealer.seal(seq, leaf)
            seal_ns.append((time.process_time_ns() - t0) / n)
        out["seal_ns"] = {"min": round(min(seal_ns)), "median": round(statistics.median(seal_ns))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
