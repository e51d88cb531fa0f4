"""Every benchmark, one after another, each writing its own section of docs/benchmarks.md.

    .venv/bin/python bench/run_all.py [--quick] [--only gateway,sessions,...] [--list]

The benchmarks are not tests (`.ci/run` runs none of them): they need quiet cores to mean anything,
and each prints ratios against a baseline measured in the same run. A benchmark whose prerequisite
is missing (ContextForge's own virtualenv, PostgreSQL) is reported as not run, with how to get it,
and the others still run. `--quick` runs shorter versions (for checking the harness, not for figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def _contextforge_ready() -> str | None:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_contextforge import DEFAULT_VENV  # noqa: PLC0415 - only when asked

    if not (DEFAULT_VENV / "bin" / "python").exists():
        return "ContextForge's virtualenv is missing: .venv/bin/python bench/bench_contextforge.py --install"
    return None


def _postgres_ready() -> str | None:
    done = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False)
    return None if done.returncode == 0 else "PostgreSQL is not running at 127.0.0.1:5432"


@dataclass
class Bench:
    name: str
    script: str
    full: list[str]
    quick: list[str]
    #: None when it can run, else why not and how to fix it
    ready: Callable[[], str | None] = field(default=lambda: None)


BENCHES = [
    # the data path: the full gateway against direct (c=1/8/64, 1,000 sessions, p99, fast upstream, profile)
    # 6 s rounds: twice the calls behind a round's p99 at c=8 that 3 s gave (a few stalls swung those)
    Bench("gateway", "bench_gateway.py", ["--seconds", "6", "--rounds", "5", "--profile"],
          ["--seconds", "1", "--rounds", "1"]),
    Bench("gateway-pg", "bench_gateway.py", ["--seconds", "3", "--rounds", "3", "--storage", "postgres"],
          ["--seconds", "1", "--rounds", "1", "--storage", "postgres"], _postgres_ready),
    Bench("datapath", "bench_datapath.py", ["--seconds", "3", "--rounds", "7"], ["--seconds", "1", "--rounds", "1"]),
    Bench("contextforge", "bench_contextforge.py", ["--seconds", "3", "--rounds", "7"],
          ["--seconds", "1", "--rounds", "1"], _contextforge_ready),
    # one caller's large message beside another's small calls (their longest wait), without and with CEL on args
    Bench("large-message", "bench_large_message.py", ["--rounds", "3"], ["--rounds", "1", "--objects", "20000"]),
    Bench("large-message-cel", "bench_large_message.py", ["--rounds", "3", "--cel"],
          ["--rounds", "1", "--objects", "20000", "--cel"]),
    Bench("sessions", "bench_sessions.py", ["--sessions", "10000"], ["--sessions", "500", "--sample", "20"]),
    # the ledger at scale: open, tiles, verify; then durable appends with 64 writers
    Bench("ledger-scale", "bench_ledger_scale.py", ["--size", "10000000"], ["--size", "100000", "--engines", "sqlite"],
          _postgres_ready),
    Bench("ledger-appends", "bench_ledger_appends.py", ["--size", "1000000"],
          ["--size", "50000", "--appends", "5000", "--rounds", "1", "--engines", "sqlite"], _postgres_ready),
    Bench("masking", "bench_masking.py", ["--no-presidio"], ["--quick", "--no-presidio"]),
    Bench("policy", "bench_policy.py", [], ["--n", "2000"]),
    Bench("identity", "bench_identity.py", [], ["--n", "2000"]),
    Bench("approvals", "bench_approvals_gateway.py", ["--rounds", "20", "--held", "1000"],
          ["--rounds", "3", "--held", "100"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs: checks the harness, not for figures")
    parser.add_argument("--only", help="comma-separated names (see --list)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--write", type=Path, help="where the sections go (default docs/benchmarks.md; with "
                        "--quick a scratch copy, so that short runs never replace real figures)")
    args = parser.parse_args()
    if args.list:
        for bench in BENCHES:
            print(f"{bench.name:15} bench/{bench.script} {' '.join(bench.full)}")
        return 0
    chosen = BENCHES
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {b.name for b in BENCHES}
        if unknown:
            parser.error(f"unknown benchmark(s) {sorted(unknown)}; see --list")
        chosen = [b for b in BENCHES if b.name in wanted]
    if args.write is None:
        args.write = DOC
        if args.quick:
            args.write = Path(tempfile.mkdtemp(prefix="lg-bench-")) / "benchmarks.md"
            shutil.copy(DOC, args.write)
    outcomes: list[tuple[str, str]] = []
    for bench in chosen:
        problem = bench.ready()
        if problem is not None:
            outcomes.append((bench.name, f"not run: {problem}"))
            continue
        argv = [sys.executable, str(ROOT / "bench" / bench.script), *(bench.quick if args.quick else bench.full),
                "--write", str(args.write)]
        print(f"\n== {bench.name}: {' '.join(argv[1:])} (load average {os.getloadavg()[0]:.1f})", flush=True)
        started = time.monotonic()
        done = subprocess.run(argv, cwd=ROOT, check=False)
        took = time.monotonic() - started
        outcomes.append((bench.name, f"{'ok' if done.returncode == 0 else f'failed (exit {done.returncode})'}"
                                     f" in {took:.0f} s"))
    print("\n" + "\n".join(f"{name:15} {outcome}" for name, outcome in outcomes))
    print(f"sections written to {args.write}")
    return 0 if all(o.startswith(("ok", "not run")) for _, o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
