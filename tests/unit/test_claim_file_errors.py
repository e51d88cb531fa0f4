"""The claim file beside a SQLite store (`<db>.<log id>.lock`, store/claims.py) could not be made when a
file stood where a folder of the store's path should be, or a directory where the lock file should be, and
the refusal carried only the system's words for it: "cannot open the claim file …: File exists" (or "Is a
directory"), naming neither the file in the way nor the setting. Each now names the culprit and `storage`,
in one line, and so does the ledger that failed to open on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.claims import LogClaim
from ledgergate.store.db import StoreURL
from ledgergate.store.ledger_store import StoreError


def _refusal(db: Path) -> str:
    with pytest.raises(StoreError) as caught:
        LogClaim(StoreURL("sqlite", str(db)), "replica-a")
    return str(caught.value)


@pytest.mark.parametrize("below", ["", "deeper/"])
def test_a_file_where_the_stores_folder_should_be_is_named(tmp_path: Path, below: str) -> None:
    (tmp_path / "plain-file").write_text("x")
    message = _refusal(tmp_path / "plain-file" / f"{below}ledgergate.db")
    assert f"{tmp_path / 'plain-file'} is not a directory" in message, message
    assert "storage" in message and "\n" not in message, message
    assert "File exists" not in message and "Not a directory" not in message and "Errno" not in message, message
    assert not (tmp_path / "plain-file").is_dir()


def test_a_directory_where_the_claim_file_should_be_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "ledgergate.db.replica-a.lock"
    lock.mkdir()
    message = _refusal(tmp_path / "ledgergate.db")
    assert f"{lock} is a directory, not a lock file" in message and "storage" in message, message
    assert "Is a directory" not in message and "Errno" not in message, message


async def test_the_ledger_that_cannot_claim_its_log_says_why_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    settings = AuditSettings(signing_key=str(tmp_path / "keys" / "ledger.key"), checkpoint_interval=0,
                             replica="replica-a")
    with pytest.raises(LedgerUnavailable) as caught:
        await Ledger.open(settings, f"sqlite:///{tmp_path / 'plain-file' / 'ledgergate.db'}", tmp_path)
    message = str(caught.value)
    assert f"{tmp_path / 'plain-file'} is not a directory" in message and "storage" in message, message
    assert "File exists" not in message and "\n" not in message, message
