"""`audit verify`'s recompute in segments (audit/scan.py), in-process and in worker processes, on
SQLite and PostgreSQL: the same roots at every checkpointed size as a from-leaves recomputation,
every stored hash compared, and the same first problem named whichever way the log is cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgergate.audit import merkle, scan
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.verify import _check_record
from ledgergate.store.ledger_store import open_ledger_store
from test_ledger_store import run_sql, settings, store_url  # noqa: F401 - shared fixture
from test_stored_hashes import fill, leaf_hashes

pytestmark = pytest.mark.timeout(300)
CLAIMS = [0, 1, 15, 16, 17, 100, 256, 299, 300]
# (segment level, workers): segments of 16 records (stored level 4 is a segment root), of 32
# (level 4 inside, 8 above), of 256 (4 and 8 inside), in order and in two worker processes
CUTS = [(4, 1), (5, 1), (8, 1), (4, 2), (5, 2)]


async def build(url: str, tmp_path: Path) -> list[bytes]:
    ledger = await Ledger.open(settings(), url, tmp_path)
    await fill(ledger, 300)
    await ledger.close()
    return leaf_hashes(url)


def run(url: str, level: int, workers: int) -> scan.ScanResult:
    store = open_ledger_store(url)
    try:
        return scan.scan_log(store, "replica-a", CLAIMS, _check_record, workers, segment_level=level, parallel_from=0)
    finally:
        store.close()


async def test_every_cut_recomputes_the_same_tree(store_url: str, tmp_path: Path) -> None:
    leaves = await build(store_url, tmp_path)
    for level, workers in CUTS:
        res = run(store_url, level, workers)
        assert res.problem is None and res.stored_problems == [], (level, workers)
        assert res.size == 300 and merkle.CompactRange(300, res.edge).root() == merkle.root_of(leaves)
        assert res.roots == {c: merkle.root_of(leaves[:c]) for c in CLAIMS}, (level, workers)
        assert res.stored_checked == (300 >> 4) + (300 >> 8), (level, workers)


async def test_every_cut_names_the_same_first_bad_record(store_url: str, tmp_path: Path) -> None:
    await build(store_url, tmp_path)
    run_sql(store_url, "UPDATE ledger_leaves SET record = ? WHERE seq = 150", (b'{"not": "the record"}',))
    run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE seq = 170",
            (b"[]", merkle.leaf_hash(b"[]")))
    for level, workers in CUTS:
        res = run(store_url, level, workers)
        assert res.size == 150 and res.problem == "record 150: bytes do not match the stored leaf hash (record altered)"
        assert 256 not in res.roots and res.roots[100]
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE seq IN (40, 150)")
    for level, workers in CUTS:
        res = run(store_url, level, workers)
        assert res.size == 40 and res.problem == "record 40: missing (the next stored record is 41)", (level, workers)


async def test_rehashed_record_that_is_not_an_object_is_named(store_url: str, tmp_path: Path) -> None:
    await build(store_url, tmp_path)
    run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE seq = 33", (b"[]", merkle.leaf_hash(b"[]")))
    for level, workers in CUTS:
        res = run(store_url, level, workers)
        assert res.size == 33 and res.problem is not None and res.problem.startswith("record 33: says log None")


async def test_every_cut_compares_every_stored_hash(store_url: str, tmp_path: Path) -> None:
    await build(store_url, tmp_path)
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 8 AND idx = 0", (b"\x01" * 32,))
    run_sql(store_url, "DELETE FROM ledger_hashes WHERE level = 4 AND idx = 17")
    for level, workers in CUTS:
        res = run(store_url, level, workers)
        assert res.problem is None and res.size == 300
        assert sorted(res.stored_problems) == [
            "stored hash at level 4 index 17 is missing (stored hash deleted)",
            "stored hash at level 8 index 0 (records 0..255) does not match the records (stored hash altered)",
        ], (level, workers)
    run_sql(store_url, "DELETE FROM ledger_hashes WHERE level = 8")  # a whole level gone is still missing
    res = run(store_url, 4, 1)
    assert "stored hash at level 8 index 0 is missing (stored hash deleted)" in res.stored_problems
