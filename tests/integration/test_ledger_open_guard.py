"""The gateway does not sign on from a store that is not the one it signed before. Tampering done while
it was stopped — a stored hash altered, records deleted below the latest checkpoint, the store rolled
back to an older consistent state (a restored backup) — made it log one line and go on: it signed the
altered state into new checkpoints and pushed them to its witness, forking the log there. Now it refuses
to open, naming the cause. Real SQLite and PostgreSQL stores, a real file witness."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_ledger_store import run_sql, store_url  # noqa: F401 - shared fixture: SQLite and PostgreSQL

from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.errors import LedgerUnavailable

WITNESS = "file://./data/witness.log"


def settings() -> AuditSettings:
    return AuditSettings(signing_key="./keys/ledger.key", replica="gw", checkpoint_interval=0, witnesses=[WITNESS])


async def written(store_url: str, tmp_path: Path, n: int, start: int = 0) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    for i in range(start, start + n):
        await ledger.append("rpc.request", {"n": i})
    await ledger.checkpoint()
    await ledger.close()


async def test_an_altered_stored_hash_stops_the_ledger_from_opening(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 40)
    # level 4 index 0 holds records 0..15, a stored hash the open reads the tree from
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE log_id = 'gw' AND level = 4 AND idx = 0",
            (b"\x00" * 32,))
    with pytest.raises(LedgerUnavailable, match="does not reproduce its signed checkpoint at size 40"):
        await Ledger.open(settings(), store_url, tmp_path)


async def test_records_deleted_below_the_latest_checkpoint_stop_it(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 40)
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'gw' AND seq >= 30")
    run_sql(store_url, "DELETE FROM ledger_hashes WHERE log_id = 'gw'")
    with pytest.raises(LedgerUnavailable) as refused:
        await Ledger.open(settings(), store_url, tmp_path)
    assert "audit verify" in refused.value.message


@pytest.mark.parametrize("db", ["sqlite"])
async def test_a_store_rolled_back_behind_its_witness_does_not_open(db: str, tmp_path: Path) -> None:
    """A backup restored: consistent in itself (its own checkpoints verify), but behind what the witness holds."""
    url = f"sqlite:///{tmp_path / 'data' / 'ledger.db'}"
    await written(url, tmp_path, 20)
    backup = tmp_path / "backup.db"
    shutil.copy(tmp_path / "data" / "ledger.db", backup)
    await written(url, tmp_path, 20, start=20)  # the witness now holds size 40
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "data" / f"ledger.db{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, tmp_path / "data" / "ledger.db")
    with pytest.raises(LedgerUnavailable, match="holds 20 records but a witness holds its signed checkpoint at size 40"):
        await Ledger.open(settings(), url, tmp_path)


async def test_an_untouched_store_opens_and_goes_on(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 20)
    await written(store_url, tmp_path, 20, start=20)
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    try:
        assert ledger.size == 40
    finally:
        await ledger.close()
