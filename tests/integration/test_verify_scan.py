"""`audit verify`'s recompute in segments (audit/scan.py), in-process and in worker processes, on
SQLite and PostgreSQL: the same roots at every checkpointed size as a from-leaves recomputation,
every stored hash compared, and the same first problem named whichever way the log is cut."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledgergate.audit import merkle, scan
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.verify import _check_record
from ledgergate.store.ledger_store import open_ledger_store
from test_ledger_store import run_sql, settings, store_url  # noqa: F401 - shared fixture
from test_stored_hashes import fill, leaf_hashes, stored

pytestmark = pytest.mark.timeout(300)
CLAIMS = [0, 1, 15, 16, 17, 100, 256, 299, 300]
# (segment level, workers): segments of 16 records (stored level 4 is a segment root), of 32
# (level 4 inside, 8 above), of 256 (4 and 8 inside), in order and in two worker processes
CUTS = [(4, 1), (5, 1), (8, 1), (4, 2), (5, 2)]


def altered(seq: int) -> str:
    return (f"record {seq}: the stored leaf hash does not match the record's bytes "
            "(the record or its leaf_hash column altered)")


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
        assert res.size == 150 and res.problem == altered(150)
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


# The checks run over whole chunks of rows (list operations, audit/scan._check_rows); each tamper
# below must still be caught and named at exactly its record. Besides every cut above (default
# chunks, so a segment is one chunk), the in-process cuts run with chunks of 7 rows, so tampered
# records sit mid-chunk, at a chunk's last row and at its first (with segments of 2^8, 83 ends a
# chunk and 84 starts one; with 2^5, 70 and 84 end one).


def every_way(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, scan.ScanResult]]:
    for level, workers in CUTS:
        yield f"segments 2^{level}, {workers} worker(s)", run(url, level, workers)
    with monkeypatch.context() as m:
        m.setattr(scan, "CHUNK", 7)
        for level in (4, 5, 8):
            yield f"segments 2^{level}, chunks of 7", run(url, level, 1)


def record_at(url: str, seq: int) -> tuple[bytes, str, str, str | None]:
    store = open_ledger_store(url)
    try:
        r = store.rows("replica-a", seq, seq + 1)[0]
        return r.record, r.time, r.event, r.session
    finally:
        store.close()


async def test_one_byte_of_a_record_is_named(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await build(store_url, tmp_path)
    record = bytearray(record_at(store_url, 77)[0])
    record[record.index(b'"n":77') + 5] = ord("8")  # still JSON, still canonical: one digit changed
    run_sql(store_url, "UPDATE ledger_leaves SET record = ? WHERE seq = 77", (bytes(record),))
    for how, res in every_way(store_url, monkeypatch):
        assert res.size == 77, how
        assert res.problem == altered(77), how


async def test_each_index_column_is_named(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await build(store_url, tmp_path)
    cases = [(70, "time", "2020-01-01T00:00:00Z", "record 70: the stored time column ('2020-01-01T00:00:00Z') is not "
                                                   "the record's time "),
             (84, "event", "rpc.response", "record 84: the stored event column ('rpc.response') is not the record's "
                                           "event 'rpc.request' (index column altered)"),
             (83, "session", None, "record 83: the stored session column does not match the record's session "
                                   "(index column altered)")]
    for seq, column, value, named in cases:
        _, time, event, session = record_at(store_url, seq)
        was = {"time": time, "event": event, "session": session}[column]
        run_sql(store_url, f"UPDATE ledger_leaves SET {column} = ? WHERE seq = ?", (value, seq))
        for how, res in every_way(store_url, monkeypatch):
            assert res.size == seq and res.problem is not None and res.problem.startswith(named), (column, how)
        run_sql(store_url, f"UPDATE ledger_leaves SET {column} = ? WHERE seq = ?", (was, seq))
    assert run(store_url, 4, 1).problem is None  # every column put back: nothing else was found


async def test_one_byte_of_a_stored_hash_is_named(store_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    await build(store_url, tmp_path)
    good = stored(store_url)[(4, 5)]
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 4 AND idx = 5",
            (good[:9] + bytes([good[9] ^ 1]) + good[10:],))
    for how, res in every_way(store_url, monkeypatch):
        assert res.problem is None and res.size == 300, how
        assert res.stored_problems == [
            "stored hash at level 4 index 5 (records 80..95) does not match the records (stored hash altered)"], how
        assert res.stored_checked == (300 >> 4) + (300 >> 8), how


async def test_a_moved_record_is_named(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await build(store_url, tmp_path)
    other = record_at(store_url, 91)[0]  # record 91's bytes and hash put at 90: the leaf hash matches
    run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE seq = 90", (other, merkle.leaf_hash(other)))
    for how, res in every_way(store_url, monkeypatch):
        assert res.size == 90 and res.problem == "record 90: says log 'replica-a' seq 91 (moved, reordered or inserted)", how


async def test_a_session_that_is_not_a_string_matches_a_null_column(store_url: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched comparison calls this a difference; the per-record rule (no string session: the
    column is NULL) accepts it, and the scan goes on past it."""
    await build(store_url, tmp_path)
    record = record_at(store_url, 50)[0].replace(b'"session":"s2"', b'"session":5')
    assert record != record_at(store_url, 50)[0]
    run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ?, session = NULL WHERE seq = 50",
            (record, merkle.leaf_hash(record)))
    for how, res in every_way(store_url, monkeypatch):
        assert res.problem is None and res.size == 300, how


async def test_a_record_that_is_not_a_blob_is_reported_not_raised(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite keeps whatever type was written into a column."""
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    await build(url, tmp_path)
    run_sql(url, "UPDATE ledger_leaves SET record = CAST(record AS TEXT) WHERE seq = 60")  # the same bytes
    run_sql(url, "UPDATE ledger_leaves SET record = 12345 WHERE seq = 61")
    for how, res in every_way(url, monkeypatch):
        assert res.size == 61, how
        assert res.problem == altered(61), how
