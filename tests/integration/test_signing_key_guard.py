"""One log, one signing key. A ledger whose checkpoints were signed by one key does not open with another
(a mistyped `audit.signing_key` would otherwise create a fresh key and go on signing the same log, and
the log could never be verified whole again); the key made for the mistake is not left behind; a key
file that cannot be used is named in the error. Real SQLite and PostgreSQL stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ledger_store import store_url  # noqa: F401 - shared fixture: SQLite and PostgreSQL

from ledgergate.audit.checkpoint import Checkpoint, NoteError
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.errors import LedgerUnavailable


def settings(key: str) -> AuditSettings:
    return AuditSettings(signing_key=key, replica="gw", checkpoint_interval=0)


async def test_a_log_does_not_open_with_another_signing_key(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings("./keys/ledger.key"), store_url, tmp_path)
    await ledger.append("rpc.request", {"n": 1})
    await ledger.checkpoint()
    await ledger.close()

    with pytest.raises(LedgerUnavailable) as refused:
        await Ledger.open(settings("./keys/ledger.kye"), store_url, tmp_path)  # the typo
    message = refused.value.message
    assert "ledger.kye" in message and "audit.signing_key" in message and "log gw" in message
    assert not (tmp_path / "keys" / "ledger.kye").exists()  # the key made for the typo is gone again
    assert not (tmp_path / "keys" / "ledger.kye.pub").exists() and not (tmp_path / "keys" / "ledger.kye.hmac").exists()

    again = await Ledger.open(settings("./keys/ledger.key"), store_url, tmp_path)  # the right key still opens it
    assert again.size == 1
    await again.append("rpc.request", {"n": 2})
    await again.close()


@pytest.mark.parametrize("content", [b"not a key\n", b"\xff\xfe\x00garbage", b"PRIVATE+KEY+x+00000000+AAAA\n"])
async def test_an_unusable_key_file_is_named(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ledger.key").write_bytes(content)
    with pytest.raises(LedgerUnavailable) as refused:
        await Ledger.open(settings("./keys/ledger.key"), f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    assert str(tmp_path / "keys" / "ledger.key") in refused.value.message
    assert "audit.signing_key" in refused.value.message


@pytest.mark.parametrize("size", ["١٢", "１２", "²"])
def test_a_checkpoint_size_is_ascii_digits(size: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(f"example.com/log\n{size}\n{'A' * 43}=\n")


@pytest.mark.parametrize(("content", "words"), [
    ("", "64 hexadecimal characters"),  # an empty key: every HMAC in the ledger computable by anyone
    ("00ff\n", "64 hexadecimal characters"),  # two bytes: the same, nearly
    ("not hex at all, and not a secret to print\n", "64 hexadecimal characters"),
])
async def test_an_hmac_key_that_cannot_serve_is_named_and_never_used(store_url: str, tmp_path: Path, content: str,
                                                                     words: str) -> None:
    """An empty `audit.hmac_key` file was taken as the key (an HMAC under an empty key proves nothing: anyone can
    compute it, and guess raw arguments back from their recorded digests); one that was not hex failed start-up
    with "non-hexadecimal number found in fromhex()"; a file where its folder should be with "File exists"."""
    hmac_file = tmp_path / "keys" / "args.hmac"
    hmac_file.parent.mkdir(parents=True)
    hmac_file.write_text(content)
    with pytest.raises(LedgerUnavailable) as refused:
        await Ledger.open(AuditSettings(signing_key="./keys/ledger.key", hmac_key="./keys/args.hmac", replica="gw",
                                        checkpoint_interval=0), store_url, tmp_path)
    message = refused.value.message
    assert "audit.hmac_key" in message and words in message and "not a secret" not in message, message


async def test_a_file_where_the_hmac_keys_folder_should_be_is_named(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("a file, not a folder\n")
    with pytest.raises(LedgerUnavailable) as refused:
        await Ledger.open(AuditSettings(signing_key="./ledger.key", hmac_key="./keys/args.hmac", replica="gw",
                                        checkpoint_interval=0), store_url, tmp_path)
    assert "audit.hmac_key" in refused.value.message and "is not a directory" in refused.value.message


async def test_a_file_where_the_signing_keys_folder_should_be_is_named(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("a file, not a folder\n")
    with pytest.raises(LedgerUnavailable) as refused:
        await Ledger.open(settings("./keys/ledger.key"), store_url, tmp_path)
    assert "audit.signing_key" in refused.value.message and "is not a directory" in refused.value.message, \
        refused.value.message
