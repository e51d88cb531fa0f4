"""One ledger store's `append_columns` (the writer thread's commit of a batch) in this tree against an
earlier commit, alternated in one run: the CPU of the calling thread per call, and its wall time.

    .venv/bin/python bench/bench_store_append.py [--base 0ff4963] [--storage postgres] [--rows 1,16]
        [--calls 1500] [--rounds 3] [--write docs/benchmarks.md]

The base commit is checked out with `git worktree`; each measurement is a child process of the same
interpreter with `PYTHONPATH` at that tree's `src/`, so only the store's code differs. A child appends
`--calls` batches of `--rows` request-sized records (durable: a real commit each) to a fresh log, a
throwaway PostgreSQL schema (127.0.0.1:5432, database test) or a SQLite file, and reports the medians
over all but the first tenth of its calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RECORD = (b'{"args":{"message":"hello 1273"},"args_hmac":"958e6a9ea6665ba53276592f373c00afbaf125cd8f27f9c261fc2481a'
          b'604f910","args_masked":{},"decision":"allow","event":"rpc.request","log":"bench","method":"tools/call",'
          b'"principal":{"groups":["staff"],"issuer":"http://127.0.0.1:44169","kind":"human","subject":"bench"},'
          b'"request_id":"req_9da91ab1661","rule":"bench","seq":0,"server":"everything","session":"2cy4GQ3uNmnk7Bj'
          b'jB1t8MMul_5Og-4mhkGGHCy9vnHg","target":"echo","time":"2026-11-26T10:55:54.465778Z","v":1}')


def child(url: str, rows: int, calls: int) -> None:
    """Runs in the measured tree: append, time each call, print the medians as JSON."""
    from ledgergate.store.ledger_store import LeafColumns, open_ledger_store

    store = open_ledger_store(url, Path(tempfile.gettempdir()))
    store.init_schema()
    cpu, wall, seq = [], [], 0
    try:
        for _ in range(calls):
            cols = LeafColumns(list(range(seq, seq + rows)), ["2026-11-26T10:55:54.465778Z"] * rows,
                               ["rpc.request"] * rows, ["2cy4GQ3uNmnk7BjjB1t8MMul_5Og-4mhkGGHCy9vnHg"] * rows,
                               [os.urandom(32) for _ in range(rows)], [RECORD] * rows)
            if hasattr(cols, "seals"):  # a tree with record seals writes one per row (audit/seals.py)
                cols.seals = [os.urandom(32) for _ in range(rows)]
            seq += rows
            c, w = time.thread_time_ns(), time.perf_counter_ns()
            store.append_columns("bench", cols)
            cpu.append(time.thread_time_ns() - c)
            wall.append(time.perf_counter_ns() - w)
    finally:
        store.close()
    skip = calls // 10
    print(json.dumps({"cpu_us": statistics.median(cpu[skip:]) / 1000, "wall_us": statistics.median(wall[skip:]) / 1000}))


def measure(tree: Path, storage: str, rows: int, calls: int, tmp: Path) -> dict[str, float]:
    import contextlib

    with contextlib.ExitStack() as stack:
        if storage == "postgres":
            from tests.support.pg import throwaway_schema, url_for

            url = url_for(stack.enter_context(throwaway_schema("lg_bench_append")))
        else:
            folder = Path(tempfile.mkdtemp(dir=tmp))
            url = f"sqlite:///{folder / 'ledger.db'}"
        out = subprocess.run([sys.executable, __file__, "--child", url, "--rows", str(rows), "--calls", str(calls)],
                             env={**os.environ, "PYTHONPATH": str(tree / "src")}, capture_output=True, text=True,
                             check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main_measure(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="lg-store-append-"))
    base_tree = tmp / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), args.base], check=True)
    sizes = [int(r) for r in args.rows.split(",")]
    seen: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for rnd in range(args.rounds):
            order = (("base", base_tree), ("this", ROOT)) if rnd % 2 == 0 else (("this", ROOT), ("base", base_tree))
            for rows in sizes:
                for name, tree in order:
                    seen.setdefault((name, rows), []).append(measure(tree, args.storage, rows, args.calls, tmp))
            print(f"round {rnd + 1}: " + "; ".join(
                f"{rows} rows: base {seen['base', rows][-1]['cpu_us']:.1f} µs, this {seen['this', rows][-1]['cpu_us']:.1f} µs"
                for rows in sizes), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)

    def med(name: str, rows: int, field: str) -> float:
        return statistics.median(r[field] for r in seen[name, rows])

    command = (f"Command: `.venv/bin/python bench/bench_store_append.py --base {args.base} --storage {args.storage} "
               f"--rows {args.rows} --calls {args.calls} --rounds {args.rounds}` ({time.strftime('%Y-%m-%d')}; 2 "
               "shared cores)")
    what = (f"`append_columns` of {'a PostgreSQL' if args.storage == 'postgres' else 'a SQLite'} ledger store, each "
            "call a durable batch of request-sized records; the calling thread's CPU and wall time per call "
            f"(medians of {args.calls} calls, then over {args.rounds} rounds with the trees alternated).")
    lines = [f"## {title(args)}", "", command, "", what, "",
             "| rows a batch | CPU base | CPU this tree | this / base | wall base | wall this tree |",
             "|---|---|---|---|---|---|"]
    for rows in sizes:
        ratio = [t["cpu_us"] / b["cpu_us"] for t, b in zip(seen["this", rows], seen["base", rows], strict=True)]
        lines.append(f"| {rows} | {med('base', rows, 'cpu_us'):.1f} µs | {med('this', rows, 'cpu_us'):.1f} µs | "
                     f"**{statistics.median(ratio):.2f}x** ({min(ratio):.2f}–{max(ratio):.2f}) | "
                     f"{med('base', rows, 'wall_us'):.0f} µs | {med('this', rows, 'wall_us'):.0f} µs |")
    return "\n".join(lines) + "\n"


def title(args: argparse.Namespace) -> str:
    return f"Ledger store appends: this tree against {args.base} ({'PostgreSQL' if args.storage == 'postgres' else 'SQLite'})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="0ff4963", help="the commit to compare against")
    parser.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rows", default="1,16", help="batch sizes, comma-separated")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, int(args.rows), args.calls)
        return
    from report import write_section

    report = main_measure(args)
    print(report)
    if args.write:
        write_section(args.write, title(args), report)


if __name__ == "__main__":
    main()
