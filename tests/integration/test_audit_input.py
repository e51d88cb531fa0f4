"""Hostile store contents and wrong input to `audit`, `sessions` and `audit siem`, on real stores.

A row a DBA wrote with an absurd, negative or non-integer `seq` fails verification precisely and
quickly (the work is bounded by the rows stored, never by MAX(seq)); wrong input (files, folders,
times, numbers, log ids) exits 2 naming the option, never a traceback, "(this is a bug)" or the
exit 1 that means "verification failed"; a session export whose file cannot be written records
nothing; and the messages name the cause that was found.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from test_audit_cli import build, cli
from test_ledger_store import run_sql, store_url  # noqa: F401 - shared fixture

from ledgergate.audit.checkpoint import load_verifier
from ledgergate.audit.siem import SiemError, signed_checkpoints
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.ledger_store import open_ledger_store

pytestmark = pytest.mark.timeout(120)
BUG = "this is a bug"


def insert_copy(url: str, seq: object, of: int = 29) -> None:
    """A DBA's row: record `of`'s columns again, at `seq`."""
    run_sql(url, "INSERT INTO ledger_leaves (log_id, seq, time, event, session, leaf_hash, record) "
            "SELECT log_id, ?, time, event, session, leaf_hash, record FROM ledger_leaves "
            "WHERE log_id = 'replica-a' AND seq = ?", (seq, of))


def verify(config: Path) -> tuple[int, str]:
    return cli("audit", "verify", "--config", str(config))


def cli_rows(url: str) -> list[bytes]:
    store = open_ledger_store(url)
    try:
        return [r.record for r in store.rows("replica-a-cli", 0, 1 << 20)]
    finally:
        store.close()


# --- rows with a seq no record can have ------------------------------------------------------------

async def test_far_seq_names_the_gap_and_what_follows(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    insert_copy(store_url, 10**11)
    code, out = verify(config)
    assert code == 1, out
    assert ("record 30: missing (the next stored record is 100000000000); the log holds 31 rows but its seq runs to "
            "100000000000: records missing or a forged seq") in out, out


async def test_negative_seq_fails(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    insert_copy(store_url, -5)
    code, out = verify(config)
    assert code == 1 and "a row with a negative seq (-5)" in out, out


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("seq", ["abc", 5.5, b"\x01"])
async def test_non_integer_seq_fails(store_url: str, tmp_path: Path, seq: object) -> None:
    """SQLite keeps whatever was written in a BIGINT column; PostgreSQL refuses it."""
    config = await build(tmp_path, store_url)
    insert_copy(store_url, seq)
    code, out = verify(config)
    assert code == 1 and f"a row with a non-integer seq ({seq!r})" in out and BUG not in out, out
    code, out = cli("audit", "tail", "--config", str(config), "-n", "2")  # reads MAX(seq) too
    assert code == 0 and BUG not in out, out


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_seq_2_62_fails_in_bounded_memory(store_url: str, tmp_path: Path) -> None:
    """One row at seq 2^62: a scan cut by MAX(seq) would list 2^46 segments (about 16 GB) first."""
    config = asyncio.run(build(tmp_path, store_url))
    insert_copy(store_url, 1 << 62)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, preexec_fn=limit, check=False,
                         env={**os.environ, "COLUMNS": "400"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert (f"record 30: missing (the next stored record is {1 << 62}); the log holds 31 rows but its seq runs to "
            f"{1 << 62}") in run.stdout, run.stdout + run.stderr
    # the SIEM export says how many rows wait, not what the forged seq claims
    code, out = cli("audit", "siem", "--config", str(config), "-o", str(tmp_path / "s.jsonl"))
    assert code == 0 and str((1 << 62) - 30) not in out, out


async def test_altered_leaf_hash_column_is_named(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    run_sql(store_url, "UPDATE ledger_leaves SET leaf_hash = ? WHERE log_id = 'replica-a' AND seq = 5", (bytes(32),))
    code, out = verify(config)
    assert code == 1 and "record 5: the stored leaf hash does not match the record's bytes" in out, out
    assert "(record altered)" not in out, out


async def test_siem_names_the_origin_of_a_checkpoint_put_in_another_logs_place(store_url: str, tmp_path: Path) -> None:
    await build(tmp_path, store_url)
    store = open_ledger_store(store_url)
    try:
        rows = store.checkpoints("replica-a")
    finally:
        store.close()
    verifier = load_verifier(tmp_path / "data" / "ledger.key.pub")
    with pytest.raises(SiemError) as caught:  # replica-a's checkpoints read as log replica-b's
        signed_checkpoints(rows, "replica-b", "ledgergate/replica-b", verifier)
    assert "origin 'ledgergate/replica-a' at size 10, not 'ledgergate/replica-b' at size 10" in str(caught.value)


# --- wrong input ------------------------------------------------------------------------------------

@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"


def usage(code: int, out: str, *words: str) -> None:
    assert code == 2 and BUG not in out and "Traceback" not in out, out
    flat = " ".join(out.replace("│", " ").split())  # click's error panel wraps long messages
    for w in words:
        assert w in flat, (w, out)


async def test_key_that_is_not_text_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, sqlite_url)
    key = tmp_path / "binary.pub"
    key.write_bytes(b"\xd0\xff\xfe not utf-8\n")
    usage(*cli("audit", "verify", "--config", str(config), "--public-key", str(key)), "verifier key")
    usage(*cli("audit", "export", "--config", str(config), "--public-key", str(key), "-o", str(tmp_path / "b.json")),
          "verifier key")
    usage(*cli("audit", "siem", "--config", str(config), "--public-key", str(key), "-o", str(tmp_path / "s.jsonl")),
          "verifier key")


async def test_output_in_a_missing_folder_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, sqlite_url)
    missing = tmp_path / "no" / "such"
    usage(*cli("audit", "export", "--config", str(config), "-o", str(missing / "b.json")), "-o/--output", "does not exist")
    usage(*cli("audit", "prove", "replica-a", "3", "--config", str(config), "-o", str(missing / "p")), "-o/--output")
    usage(*cli("audit", "export", "--config", str(config), "-o", str(tmp_path)), "-o/--output", "is a folder")
    usage(*cli("audit", "siem", "--config", str(config), "--state", str(missing / "state"),
               "-o", str(tmp_path / "s.jsonl")), "--state")
    assert not (tmp_path / "s.jsonl").exists()  # refused before a record left


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00", "yesterday"])
async def test_time_out_of_range_is_a_usage_error(sqlite_url: str, tmp_path: Path, when: str) -> None:
    config = await build(tmp_path, sqlite_url)
    usage(*cli("audit", "export", "--config", str(config), "--since", when, "-o", str(tmp_path / "b.json")), "--since")
    usage(*cli("audit", "export", "--config", str(config), "--until", when, "-o", str(tmp_path / "b.json")), "--until")
    usage(*cli("sessions", "list", "--config", str(config), "--since", when), "--since")


@pytest.mark.parametrize(("value", "words"), [
    ("99999999999999999999999", ("--from", "at most")),
    ("replica-a=9223372036854775808", ("--from", "at most")),
    ("\u00b2", ("--from",)),  # str.isdigit() says yes, int() says no
    ("nolog=3", ("--from", "no log 'nolog'")),
])
async def test_siem_from_is_checked(sqlite_url: str, tmp_path: Path, value: str, words: tuple[str, ...]) -> None:
    config = await build(tmp_path, sqlite_url)
    out_file = tmp_path / "s.jsonl"
    code, out = cli("audit", "siem", "--config", str(config), "--from", value, "-o", str(out_file))
    usage(code, out, *words)
    assert "OverflowError" not in out and not (out_file.exists() and out_file.read_bytes()), out


async def test_poll_intervals_and_counts_are_checked(sqlite_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, sqlite_url)
    usage(*cli("audit", "tail", "--config", str(config), "-n", "-5"), "--lines")
    usage(*cli("audit", "tail", "--config", str(config), "--follow", "--interval", "-1"), "--interval")
    usage(*cli("audit", "siem", "--config", str(config), "--follow", "--interval", "nan", "-o",
               str(tmp_path / "s.jsonl")), "--interval")


async def test_prove_names_what_does_not_exist(sqlite_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, sqlite_url, n=30, every=10)
    proof = str(tmp_path / "p")
    code, out = cli("audit", "prove", "replica-a", "9223372036854775807", "--config", str(config), "-o", proof)
    usage(code, out, "does not exist", "beyond the log's size", "0..29")
    assert "next one" not in out
    usage(*cli("audit", "prove", "nolog", "0", "--config", str(config), "-o", proof), "no log 'nolog'")
    usage(*cli("audit", "prove", "replica-a", "99999999999999999999999", "--config", str(config), "-o", proof),
          "INDEX")
    # the tail beyond the last checkpoint deleted: a record that is not there is not "in the next one"
    run_sql(sqlite_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq >= 25")
    run_sql(sqlite_url, "DELETE FROM ledger_checkpoints WHERE log_id = 'replica-a' AND size > 20")
    code, out = cli("audit", "prove", "replica-a", "27", "--config", str(config), "-o", proof)
    usage(code, out, "record 27 does not exist in log replica-a")
    assert "next one" not in out
    # a gap below the log's end: the store lost it (exit 1, as for any record that fails)
    run_sql(sqlite_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq = 22")
    code, out = cli("audit", "prove", "replica-a", "22", "--config", str(config), "-o", proof)
    assert code == 1 and "does not exist in the store" in out and "next one" not in out, out
    code, out = cli("audit", "prove", "replica-a", "3", "--config", str(config), "-o", proof)
    assert code == 0 and Path(proof).is_file(), out


# --- a session export records only what it wrote --------------------------------------------------

def test_session_export_that_cannot_write_records_nothing(sqlite_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = asyncio.run(build(tmp_path, sqlite_url))  # not an async test: the command runs its own loop
    before = cli_rows(sqlite_url)
    usage(*cli("sessions", "export", "s1", "--config", str(config), "-o", str(tmp_path / "no" / "x.json")),
          "-o/--output")
    usage(*cli("sessions", "export", "s1", "--config", str(config), "-o", str(tmp_path)), "-o/--output")
    assert cli_rows(sqlite_url) == before

    import ledgergate.commands.sessions as sessions_cmd

    def full_disk(*args: object, **kw: object) -> object:
        raise OSError(28, "No space left on device")

    target = tmp_path / "out"
    target.mkdir()
    with monkeypatch.context() as m:  # the write itself fails (a full disk): nothing recorded, nothing left
        m.setattr(sessions_cmd.os, "fsync", full_disk)
        usage(*cli("sessions", "export", "s1", "--config", str(config), "-o", str(target / "x.json")),
              "-o/--output", "No space left on device")
    assert cli_rows(sqlite_url) == before and list(target.iterdir()) == []

    async def unavailable(*args: object, **kw: object) -> int:
        raise LedgerUnavailable("the audit ledger is unavailable")

    with monkeypatch.context() as m:  # the record cannot be made: no bundle, no temporary file
        m.setattr(sessions_cmd, "record_cli", unavailable)
        code, out = cli("sessions", "export", "s1", "--config", str(config), "-o", str(target / "x.json"))
        assert code == 3 and "nothing was shown" in out, out
    assert list(target.iterdir()) == []

    code, out = cli("sessions", "export", "s1", "--config", str(config), "-o", str(target / "x.json"))
    assert code == 0, out
    assert [p.name for p in target.iterdir()] == ["x.json"]
    after = cli_rows(sqlite_url)
    assert len(after) == len(before) + 1 and b'"session.exported"' in after[-1]
    code, out = cli("audit", "verify-bundle", str(target / "x.json"), "--public-key",
                    str(tmp_path / "data" / "ledger.key.pub"))
    assert code == 0, out
