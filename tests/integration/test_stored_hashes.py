"""Stored interior hashes on real stores (SQLite file and PostgreSQL): written with the leaves,
equal to a from-leaves recomputation, read instead of replaying at open, backfilled once for a
log written before they existed, and any tampering with them caught by `audit verify`."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest

from ledgergate.audit import merkle
from ledgergate.audit.ledger import Ledger
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.ledger_store import LedgerStore, open_ledger_store
from test_audit_cli import cli
from test_ledger_store import run_sql, settings, store_url  # noqa: F401 - shared fixture

pytestmark = pytest.mark.timeout(180)


async def fill(ledger: Ledger, n: int) -> None:
    """n records from 16 concurrent writers, so group commit makes batches of uneven sizes."""
    async def writer(k: int) -> None:
        for i in range(k, n, 16):
            await ledger.append("rpc.request", {"session": f"s{k}", "n": i})

    await asyncio.gather(*(writer(k) for k in range(16)))


def leaf_hashes(url: str) -> list[bytes]:
    store = open_ledger_store(url)
    try:
        return [h for chunk in store.iter_leaf_hashes("replica-a") for h in chunk]
    finally:
        store.close()


def stored(url: str) -> dict[tuple[int, int], bytes]:
    store = open_ledger_store(url)
    try:
        rows = store._run("SELECT level, idx, hash FROM ledger_hashes WHERE log_id = 'replica-a'").fetchall()  # noqa: SLF001
        return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}
    finally:
        store.close()


def assert_stored_hashes_match_leaves(url: str, n: int) -> None:
    leaves = leaf_hashes(url)
    assert len(leaves) == n
    got = stored(url)
    want = {}
    for level in range(merkle.STRIDE, n.bit_length() + 1, merkle.STRIDE):
        for i in range(n >> level):
            want[(level, i)] = merkle.root_of(leaves[i << level:(i + 1) << level])
    assert got == want


async def test_stored_hashes_equal_a_recomputation_from_the_leaves(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    await fill(ledger, 700)
    await ledger.checkpoint()
    assert_stored_hashes_match_leaves(store_url, 700)
    root = ledger.root()
    assert root == merkle.root_of(leaf_hashes(store_url))
    await fill(ledger, 333)  # 1033: crosses 1024, a new level-8 and level-4 boundary mid-batch
    await ledger.close()
    assert_stored_hashes_match_leaves(store_url, 1033)


async def test_open_reads_stored_hashes_and_does_not_replay(store_url: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    await fill(ledger, 600)
    root = ledger.root()
    await ledger.close()

    def no_replay(*a: object, **k: object) -> None:
        raise AssertionError("open replayed the leaf hashes")

    monkeypatch.setattr(LedgerStore, "iter_leaf_hashes", no_replay)
    again = await Ledger.open(settings(), store_url, tmp_path)
    assert again.size == 600 and again.root() == root
    # proofs after reopening, for random leaves and sizes, verify against recomputed roots
    monkeypatch.undo()
    leaves = leaf_hashes(store_url)
    rng = random.Random(7)
    for _ in range(40):
        size = rng.randrange(1, 601)
        index = rng.randrange(size)
        proof = await again.inclusion_proof(index, size)
        assert merkle.verify_inclusion(index, size, leaves[index], proof, merkle.root_of(leaves[:size]))
        old = rng.randrange(1, size + 1)
        proof = await again.consistency_proof(old, size)
        assert merkle.verify_consistency(old, size, merkle.root_of(leaves[:old]), merkle.root_of(leaves[:size]), proof)
    assert await again.append("session.closed", {"session": "s1"}) == 600
    await again.close()
    assert_stored_hashes_match_leaves(store_url, 601)


async def test_a_log_without_stored_hashes_is_backfilled_once(store_url: str, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    await fill(ledger, 300)
    root = ledger.root()
    await ledger.close()
    run_sql(store_url, "DELETE FROM ledger_hashes")  # as a log written before stored hashes existed
    assert stored(store_url) == {}

    with caplog.at_level(logging.WARNING, logger="ledgergate.audit.stored"):
        again = await Ledger.open(settings(), store_url, tmp_path)
    assert again.size == 300 and again.root() == root
    assert any("backfilling" in r.getMessage() and "300 records" in r.getMessage() for r in caplog.records)
    assert_stored_hashes_match_leaves(store_url, 300)
    await fill(again, 50)
    await again.close()
    assert_stored_hashes_match_leaves(store_url, 350)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ledgergate.audit.stored"):
        third = await Ledger.open(settings(), store_url, tmp_path)
    assert not [r for r in caplog.records if "backfill" in r.getMessage()]  # once only
    await third.close()


async def test_a_log_with_only_part_of_its_stored_hashes_is_completed(store_url: str, tmp_path: Path) -> None:
    """An older replica appended to it after a newer one had stored hashes for its start."""
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    await fill(ledger, 400)
    root = ledger.root()
    await ledger.close()
    run_sql(store_url, "DELETE FROM ledger_hashes WHERE (level = 4 AND idx >= 10) OR (level = 8 AND idx >= 1)")
    again = await Ledger.open(settings(), store_url, tmp_path)
    assert again.root() == root
    await again.close()
    assert_stored_hashes_match_leaves(store_url, 400)


async def test_stored_hashes_beyond_the_records_refuse_to_open(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    await fill(ledger, 100)
    await ledger.close()
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq >= 40")
    with pytest.raises(LedgerUnavailable, match="stored hashes at level 4 reach index 5"):
        await Ledger.open(settings(), store_url, tmp_path)


async def config_with_log(tmp_path: Path, url: str, n: int = 100) -> Path:
    from test_audit_cli import build

    return await build(tmp_path, url, n=n, every=25)


async def test_altered_stored_hash_is_caught_by_audit_verify(store_url: str, tmp_path: Path) -> None:
    config = await config_with_log(tmp_path, store_url)
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 0, out
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE log_id = 'replica-a' AND level = 4 AND idx = 2",
            (b"\x07" * 32,))
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "stored hash at level 4 index 2" in out and "records 32..47" in out, out
    assert "altered" in out


async def test_deleted_stored_hash_is_caught_by_audit_verify(store_url: str, tmp_path: Path) -> None:
    config = await config_with_log(tmp_path, store_url)
    run_sql(store_url, "DELETE FROM ledger_hashes WHERE log_id = 'replica-a' AND level = 4 AND idx = 5")
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "stored hash at level 4 index 5 is missing" in out, out


async def test_altered_stored_hash_breaks_served_proofs(store_url: str, tmp_path: Path) -> None:
    """The REST proofs are read from stored hashes (not recomputed from leaves), so an altered
    one shows in them: they stop verifying against the signed root."""
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    await fill(ledger, 100)
    root = ledger.root()
    leaves = leaf_hashes(store_url)
    proof = await ledger.inclusion_proof(70, 100)
    assert merkle.verify_inclusion(70, 100, leaves[70], proof, root)
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 4 AND idx = 0", (b"\x07" * 32,))
    proof = await ledger.inclusion_proof(70, 100)
    assert not merkle.verify_inclusion(70, 100, leaves[70], proof, root)
    await ledger.close()


async def test_bundles_from_stored_hashes_and_from_a_log_without_them(store_url: str, tmp_path: Path) -> None:
    from ledgergate.audit.bundle import (
        ExportRefused,
        Filter,
        export_bundle,
        verify_bundle,
    )
    from ledgergate.audit.checkpoint import load_verifier

    ledger = await Ledger.open(settings(), store_url, tmp_path)
    for _ in range(3):
        await fill(ledger, 90)
        await ledger.checkpoint()
    await ledger.close()
    verifier = load_verifier(tmp_path / "data" / "ledger.key.pub")

    def export(flt: Filter | None) -> list[str]:
        store = open_ledger_store(store_url)
        try:
            return verify_bundle(export_bundle(store, verifier, flt), verifier)
        finally:
            store.close()

    assert export(None) == [] and export(Filter(session="s3")) == []
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 4 AND idx = 1", (b"\x07" * 32,))
    # consistency proofs come from the stored hashes, and are checked before a bundle is made
    with pytest.raises(ExportRefused, match=r"stored hash at level 4 index 1 \(records 16\.\.31\) does not match"):
        export(None)
    run_sql(store_url, "DELETE FROM ledger_hashes")  # never opened since: replayed from the leaf hashes
    assert export(None) == [] and export(Filter(session="s3")) == []
