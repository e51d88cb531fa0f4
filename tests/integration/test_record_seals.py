"""Record seals: the gateway does not sign what it did not write.

An outside probe found that rows a database administrator inserted into `ledger_leaves` (or edited there)
while the gateway was stopped, after its latest signed checkpoint, were taken up at the next start and
signed into the next checkpoint by the gateway's key, even after a graceful stop; and that the start-up
check compared the store with the checkpoint row's unsigned `size`/`root` columns, so a DBA who rewrote
records, stored hashes and the `root` column passed it. Now every record carries a seal only a gateway can
make (audit/seals.py); a start checks the seal of every record after the checkpoint and takes the
checkpoint's size and root from its signed note, and refuses, naming the log, the first record and how
many. `ledgergate audit seal-tail` seals a tail the gateway's own older version left without seals.
Real SQLite and PostgreSQL stores, a real file witness, the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_ledger_store import run_sql, store_url  # noqa: F401 - shared fixture: SQLite and PostgreSQL
from typer.testing import CliRunner

from ledgergate.audit import canonical, merkle, stored
from ledgergate.audit.checkpoint import load_verifier, open_checkpoint, split_notes
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.audit.verify import verify_store
from ledgergate.cli import app
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.ledger_store import open_ledger_store

pytestmark = pytest.mark.timeout(120)
LOG = "gw"
runner = CliRunner()


def settings(replica: str = LOG, witness: bool = True) -> AuditSettings:
    return AuditSettings(signing_key="./data/ledger.key", replica=replica, checkpoint_interval=0,
                         witnesses=["file://./data/witness.log"] if witness else [])


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "ledgergate.yaml"
    path.write_text(f"storage: {json.dumps(url)}\naudit:\n  signing_key: ./data/ledger.key\n  checkpoint_interval: 1h\n"
                    f"  replica: {LOG}\n  witnesses: ['file://./data/witness.log']\n")
    return path


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


async def append(ledger: Ledger, start: int, n: int) -> None:
    for i in range(start, start + n):
        await ledger.append("rpc.request" if i % 2 == 0 else "rpc.response", {"session": f"s{i % 3}", "n": i})


async def written(url: str, tmp_path: Path, n: int, witness: bool = True) -> None:
    """n records, then a graceful stop: the final checkpoint covers every one of them."""
    ledger = await Ledger.open(settings(witness=witness), url, tmp_path)
    await append(ledger, 0, n)
    await ledger.close()


async def crashed(url: str, tmp_path: Path, signed: int, tail: int) -> None:
    """`signed` records under a checkpoint, then `tail` more, then a stop without the final checkpoint
    (as kill -9 leaves it: the records are durable, nothing signs them)."""
    ledger = await Ledger.open(settings(), url, tmp_path)
    await append(ledger, 0, signed)
    if signed:
        await ledger.checkpoint()
    await append(ledger, signed, tail)

    async def no_checkpoint() -> str:
        raise LedgerUnavailable("stopped before its final checkpoint")

    ledger.checkpoint = no_checkpoint  # type: ignore[method-assign]
    await ledger.close()


def query(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    store = open_ledger_store(url)
    try:
        return [tuple(r) for r in store.conn.execute(store._q(statement), params).fetchall()]
    finally:
        store.close()


def has_seal_column(url: str) -> bool:
    if url.startswith("sqlite"):
        return any(r[1] == "seal" for r in query(url, "PRAGMA table_info(ledger_leaves)"))
    return bool(query(url, "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('ledger_leaves') "
                           "AND attname = 'seal' AND NOT attisdropped"))


def seal_of(url: str, log_id: str, seq: int) -> bytes | None:
    """The stored seal of a row (None in a table without seals: the attack then carries none)."""
    if not has_seal_column(url):
        return None
    got = query(url, "SELECT seal FROM ledger_leaves WHERE log_id = ? AND seq = ?", (log_id, seq))[0][0]
    return None if got is None else bytes(got)


def checkpoint_sizes(url: str) -> list[int]:
    return [int(r[0]) for r in query(url, "SELECT size FROM ledger_checkpoints WHERE log_id = ? ORDER BY size", (LOG,))]


def witnessed(tmp_path: Path) -> list[str]:
    path = tmp_path / "data" / "witness.log"
    return split_notes(path.read_text()) if path.exists() else []


def forged(url: str, seq: int, **change: Any) -> tuple[bytes, dict[str, Any]]:
    """A record at `seq` made like the gateway's own (its bytes canonical, its index columns matching),
    from the one before it: what a DBA who read the code would write."""
    prev = query(url, "SELECT record FROM ledger_leaves WHERE log_id = ? AND seq = ?", (LOG, seq - 1))[0][0]
    doc = {**orjson.loads(bytes(prev)), "seq": seq, **change}
    return canonical.dumps(doc), doc


def insert(url: str, seq: int, record: bytes, doc: dict[str, Any], seal: bytes | None) -> None:
    """A row in `ledger_leaves` as the DBA writes it, with a seal when the table has the column."""
    cols, values = "log_id, seq, time, event, session, leaf_hash, record", [
        LOG, seq, doc["time"], doc["event"], doc.get("session"), merkle.leaf_hash(record), record]
    if seal is not None and has_seal_column(url):
        cols, values = cols + ", seal", [*values, seal]
    marks = ", ".join("?" * len(values))
    run_sql(url, f"INSERT INTO ledger_leaves ({cols}) VALUES ({marks})", tuple(values))


def store_interior(url: str, start: int, hashes: list[bytes]) -> None:
    """The stored interior hashes a run of leaf hashes from `start` completes, written the way the writer
    writes them: the thorough DBA, whose rows leave no stored hash missing or wrong."""
    store = open_ledger_store(url)
    try:
        cr = stored.tree(store, LOG).compact_range(start)
    finally:
        store.close()
    nodes = merkle.StoredNodes()
    cr.on_node = nodes
    for h in hashes:
        cr.append(h)
    for level, index, h in nodes.nodes:
        run_sql(url, "DELETE FROM ledger_hashes WHERE log_id = ? AND level = ? AND idx = ?", (LOG, level, index))
        run_sql(url, "INSERT INTO ledger_hashes (log_id, level, idx, hash) VALUES (?, ?, ?, ?)", (LOG, level, index, h))


async def refused(url: str, tmp_path: Path, witness: bool = True) -> str:
    with pytest.raises(LedgerUnavailable) as caught:
        ledger = await Ledger.open(settings(witness=witness), url, tmp_path)
        await ledger.close()  # (not reached when refused; closes, signing, when not)
    return caught.value.message


# --- rows inserted after a graceful stop --------------------------------------------------------------

SEAL_OF = {
    "no seal": lambda url: None,
    "a random seal": lambda url: os.urandom(32),
    "another record's seal": lambda url: seal_of(url, LOG, 39),
}


@pytest.mark.parametrize("how", ["no seal", "a random seal", "another record's seal"])
@pytest.mark.parametrize("count", [1, 3, 20])
async def test_rows_inserted_after_a_graceful_stop_are_refused_not_signed(store_url: str, tmp_path: Path, how: str,
                                                                         count: int) -> None:
    """Forged `approval.decided` rows at 40.. after a clean stop at 40, made like the gateway's own; with 20
    the DBA also writes the stored interior hash they complete. The probe's case: they were signed."""
    await written(store_url, tmp_path, 40)
    notes = witnessed(tmp_path)
    hashes = []
    for seq in range(40, 40 + count):
        record, doc = forged(store_url, seq, event="approval.decided", approver="mallory", decision="approved")
        insert(store_url, seq, record, doc, SEAL_OF[how](store_url))
        hashes.append(merkle.leaf_hash(record))
    if count >= 8:
        store_interior(store_url, 40, hashes)
    message = await refused(store_url, tmp_path)
    assert f"log {LOG}" in message and "seq 40" in message and f"{count} record(s)" in message, message
    assert "latest signed checkpoint (size 40)" in message, message
    if how == "no seal":
        assert "carry no seal" in message and f"audit seal-tail --log {LOG} --yes" in message, message
    else:
        assert "inserted or edited" in message and "audit.hmac_key" in message and "audit verify" in message, message
    assert checkpoint_sizes(store_url)[-1] == 40 and witnessed(tmp_path) == notes  # nothing signed, nothing pushed


# --- tail rows edited after a crash ---------------------------------------------------------------------


def rewrite(url: str, seq: int, **change: Any) -> None:
    """Record `seq` with `change` made to it, canonical again, and its leaf hash to match."""
    rows = query(url, "SELECT record FROM ledger_leaves WHERE log_id = ? AND seq = ?", (LOG, seq))
    record = canonical.dumps({**orjson.loads(bytes(rows[0][0])), **change})
    run_sql(url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = ? AND seq = ?",
            (record, merkle.leaf_hash(record), LOG, seq))


def edit_one(url: str) -> int:
    rewrite(url, 25, n=4111)
    return 25


def edit_event(url: str) -> int:
    rewrite(url, 31, event="approval.decided", approver="mallory")
    run_sql(url, "UPDATE ledger_leaves SET event = 'approval.decided' WHERE log_id = ? AND seq = 31", (LOG,))
    return 31


def swap_rows(url: str) -> int:
    """Two tail rows exchanged whole, seals and all: each seal is bound to its seq."""
    a, b = (query(url, "SELECT record, leaf_hash, event FROM ledger_leaves WHERE log_id = ? AND seq = ?",
                  (LOG, s))[0] for s in (22, 23))
    seal_a, seal_b = seal_of(url, LOG, 22), seal_of(url, LOG, 23)
    for seq, row, seal in ((22, b, seal_b), (23, a, seal_a)):
        run_sql(url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ?, event = ? WHERE log_id = ? AND seq = ?",
                (bytes(row[0]), bytes(row[1]), row[2], LOG, seq))
        if seal is not None:
            run_sql(url, "UPDATE ledger_leaves SET seal = ? WHERE log_id = ? AND seq = ?", (seal, LOG, seq))
    return 22


def edit_with_stored_hashes(url: str) -> int:
    """The thorough DBA: the record, its leaf hash and the stored interior hash above it, all consistent."""
    seq = edit_one(url)
    leaves = [bytes(r[0]) for r in query(url, "SELECT leaf_hash FROM ledger_leaves WHERE log_id = ? AND seq >= 20 "
                                              "ORDER BY seq", (LOG,))]
    store_interior(url, 20, leaves)
    return seq


@pytest.mark.parametrize("edit", [edit_one, edit_event, swap_rows, edit_with_stored_hashes])
async def test_tail_rows_edited_after_a_crash_are_refused(store_url: str, tmp_path: Path, edit: Any) -> None:
    """A crash leaves records 20..39 unsigned (their seals are the gateway's); a DBA then rewrites one,
    consistently (the record's bytes and its leaf hash, the index column, even the stored hash above it)."""
    await crashed(store_url, tmp_path, 20, 20)
    first = edit(store_url)
    message = await refused(store_url, tmp_path)
    assert f"log {LOG}" in message and f"the first at seq {first}" in message and "inserted or edited" in message, message
    assert checkpoint_sizes(store_url) == [20]


async def test_a_seal_made_for_another_log_does_not_pass(store_url: str, tmp_path: Path) -> None:
    """Two replicas share the HMAC key. A row copied from log `other`, seal and all, into `gw` at the
    same seq (its record rewritten to say `gw`, hashed again) does not carry `gw`'s seal."""
    other = await Ledger.open(settings("other"), store_url, tmp_path)
    await append(other, 0, 12)
    await other.close()
    await crashed(store_url, tmp_path, 10, 0)  # gw: 10 records, signed
    row = query(store_url, "SELECT record FROM ledger_leaves WHERE log_id = 'other' AND seq = 10")[0]
    doc = {**orjson.loads(bytes(row[0])), "log": LOG}
    record = canonical.dumps(doc)
    insert(store_url, 10, record, doc, seal_of(store_url, "other", 10))
    message = await refused(store_url, tmp_path)
    assert "the first at seq 10" in message and "inserted or edited" in message, message


# --- the checkpoint row's unsigned columns --------------------------------------------------------------


async def test_an_edited_checkpoint_root_column_with_its_note_intact_is_refused(store_url: str, tmp_path: Path) -> None:
    """Record 5 rewritten with its leaf hash, the stored hashes above it, and the checkpoint row's `root`
    column set to the root they now make: the note (signed) still says the old root. No file witness (an
    http(s) one cannot be read back at start): the start-up check is all that stands in the way."""
    await written(store_url, tmp_path, 40, witness=False)
    rewrite(store_url, 5, n=4111)
    leaves = [bytes(r[0]) for r in query(store_url, "SELECT leaf_hash FROM ledger_leaves WHERE log_id = ? ORDER BY seq",
                                         (LOG,))]
    store_interior(store_url, 0, leaves)
    run_sql(store_url, "UPDATE ledger_checkpoints SET root = ? WHERE log_id = ? AND size = 40",
            (merkle.root_of(leaves), LOG))
    message = await refused(store_url, tmp_path, witness=False)
    assert f"log {LOG}" in message and "checkpoint row was edited" in message and "audit verify" in message, message


async def test_an_edited_checkpoint_size_column_over_inserted_rows_is_refused(store_url: str, tmp_path: Path) -> None:
    """Five rows inserted at 40.. and the latest checkpoint row's `size` and `root` columns moved over them,
    so the rows look signed: its note still says size 40. No file witness, as above."""
    await written(store_url, tmp_path, 40, witness=False)
    for seq in range(40, 45):
        record, doc = forged(store_url, seq)
        insert(store_url, seq, record, doc, os.urandom(32))
    leaves = [bytes(r[0]) for r in query(store_url, "SELECT leaf_hash FROM ledger_leaves WHERE log_id = ? ORDER BY seq",
                                         (LOG,))]
    run_sql(store_url, "UPDATE ledger_checkpoints SET size = 45, root = ? WHERE log_id = ? AND size = 40",
            (merkle.root_of(leaves), LOG))
    message = await refused(store_url, tmp_path, witness=False)
    assert "checkpoint row was edited" in message and "size 45" in message, message


async def test_an_edited_checkpoint_note_is_named_as_an_edit_not_as_another_key(store_url: str,
                                                                                tmp_path: Path) -> None:
    """The note's size line changed under the key's own signature line: the row was edited (it was named
    a mistyped `audit.signing_key`, which sent the operator after the wrong problem)."""
    await written(store_url, tmp_path, 40)
    note = query(store_url, "SELECT note FROM ledger_checkpoints WHERE log_id = ? AND size = 40", (LOG,))[0][0]
    run_sql(store_url, "UPDATE ledger_checkpoints SET note = ? WHERE log_id = ? AND size = 40",
            (note.replace("\n40\n", "\n45\n", 1), LOG))
    message = await refused(store_url, tmp_path)
    assert "checkpoint row was edited" in message and "audit.signing_key" not in message, message


# --- what still opens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("signed", "tail"), [(20, 37), (0, 21), (16, 16)])
async def test_a_crash_tail_the_gateway_wrote_opens_and_is_signed(store_url: str, tmp_path: Path, signed: int,
                                                                  tail: int) -> None:
    await crashed(store_url, tmp_path, signed, tail)
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    try:
        assert ledger.size == signed + tail
        await ledger.append("rpc.request", {"n": -1})
        note = await ledger.checkpoint()
    finally:
        await ledger.close()
    verifier = load_verifier(tmp_path / "data" / "ledger.key.pub")
    assert open_checkpoint(note, verifier).size == signed + tail + 1
    store = open_ledger_store(store_url)
    try:
        [report] = [r for r in verify_store(store, verifier, []) if r.log_id == LOG]
    finally:
        store.close()
    assert report.ok and report.covered == signed + tail + 1, report.problems


async def test_a_seal_is_not_part_of_the_record_or_the_evidence(store_url: str, tmp_path: Path) -> None:
    """Auditors have no key: records, leaf hashes and bundles are what they were."""
    await written(store_url, tmp_path, 10)
    rows = query(store_url, "SELECT record, leaf_hash, seal FROM ledger_leaves WHERE log_id = ? ORDER BY seq", (LOG,))
    for record, leaf_hash, seal in rows:
        assert merkle.leaf_hash(bytes(record)) == bytes(leaf_hash) and len(bytes(seal)) == 32
        assert "seal" not in orjson.loads(bytes(record)) and bytes(seal) not in bytes(record)
    bundle = tmp_path / "bundle.json"
    code, out = cli("audit", "export", "--config", str(config(tmp_path, store_url)), "-o", str(bundle))
    assert code == 0, out
    assert b"seal" not in bundle.read_bytes()
    code, out = cli("audit", "verify-bundle", str(bundle), "--public-key", str(tmp_path / "data" / "ledger.key.pub"))
    assert code == 0, out


# --- a database from before seals ---------------------------------------------------------------------


def drop_seals(url: str) -> None:
    """The table as a version before seals made it (SQLite >= 3.35 drops a column)."""
    if has_seal_column(url):
        run_sql(url, "ALTER TABLE ledger_leaves DROP COLUMN seal")


async def test_a_database_from_before_seals_is_migrated_on_open_and_works(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 30)
    drop_seals(store_url)
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    try:
        await append(ledger, 30, 5)
    finally:
        await ledger.close()
    assert has_seal_column(store_url)
    seals = [r[0] for r in query(store_url, "SELECT seal FROM ledger_leaves WHERE log_id = ? ORDER BY seq", (LOG,))]
    assert seals[:30] == [None] * 30 and all(s is not None for s in seals[30:])  # the old ones lie under checkpoints
    again = await Ledger.open(settings(), store_url, tmp_path)
    try:
        assert again.size == 35
    finally:
        await again.close()


async def test_replicas_migrating_one_database_at_once_all_open(store_url: str, tmp_path: Path) -> None:
    """Several replicas (each its own log) start together on a database from before seals."""
    for name in ("r0", "r1", "r2", "r3"):
        ledger = await Ledger.open(settings(name), store_url, tmp_path)
        await append(ledger, 0, 3)
        await ledger.close()
    drop_seals(store_url)
    ledgers = await asyncio.gather(*(Ledger.open(settings(n), store_url, tmp_path) for n in ("r0", "r1", "r2", "r3")))
    try:
        await asyncio.gather(*(append(ledger, 3, 2) for ledger in ledgers))
        assert [ledger.size for ledger in ledgers] == [5, 5, 5, 5]
    finally:
        for ledger in ledgers:
            await ledger.close()
    assert has_seal_column(store_url)


# --- `ledgergate audit seal-tail` -----------------------------------------------------------------------


async def old_version_tail(url: str, tmp_path: Path) -> None:
    """What a gateway from before seals leaves when it stops without its final checkpoint: 20 signed
    records and 17 after them, none sealed (the column added by the next version's migration)."""
    await crashed(url, tmp_path, 20, 17)
    if has_seal_column(url):
        run_sql(url, "UPDATE ledger_leaves SET seal = NULL WHERE log_id = ?", (LOG,))


async def test_seal_tail_lists_then_seals_an_unsealed_tail_and_the_gateway_signs_it(store_url: str,
                                                                                   tmp_path: Path) -> None:
    await old_version_tail(store_url, tmp_path)
    message = await refused(store_url, tmp_path)
    assert "17 record(s)" in message and "seq 20" in message and "carry no seal" in message, message
    cfg = config(tmp_path, store_url)

    code, out = cli("audit", "seal-tail", "--config", str(cfg), "--log", LOG)  # only lists
    assert code == 1, out
    assert "17 record(s) with no seal: seq 20..36" in out and "rpc.request ×9" in out and "--yes" in out, out
    assert '"n"' not in out and "s1" not in out  # counts and events, never what the records say
    assert all(r[0] is None for r in query(store_url, "SELECT seal FROM ledger_leaves WHERE seq >= 20"))

    code, out = cli("audit", "seal-tail", "--config", str(cfg), "--log", LOG, "--yes")
    assert code == 0 and "sealed 17 record(s)" in out, out
    code, out = cli("audit", "seal-tail", "--config", str(cfg), "--log", LOG)
    assert code == 0 and "ok" in out, out

    ledger = await Ledger.open(settings(), store_url, tmp_path)
    try:
        assert ledger.size == 37
        note = await ledger.checkpoint()
    finally:
        await ledger.close()
    assert open_checkpoint(note, load_verifier(tmp_path / "data" / "ledger.key.pub")).size == 37
    code, out = cli("audit", "verify", "--config", str(cfg))
    assert code == 0 and "37 records" in out, out


async def test_seal_tail_never_seals_over_a_wrong_seal(store_url: str, tmp_path: Path) -> None:
    """A tail with one forged row (a seal that does not verify) and rows with none: nothing is written."""
    await old_version_tail(store_url, tmp_path)
    record, doc = forged(store_url, 37, event="approval.decided")
    insert(store_url, 37, record, doc, os.urandom(32))
    code, out = cli("audit", "seal-tail", "--config", str(config(tmp_path, store_url)), "--log", LOG, "--yes")
    assert code == 1, out
    assert "1 record(s) with a seal that does not verify" in out and "seq 37" in out and "nothing sealed" in out, out
    assert all(r[0] is None for r in query(store_url, "SELECT seal FROM ledger_leaves WHERE seq BETWEEN 20 AND 36"))


async def test_seal_tail_refuses_while_a_gateway_holds_the_log(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 5)
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    try:
        code, out = cli("audit", "seal-tail", "--config", str(config(tmp_path, store_url)), "--log", LOG, "--yes")
    finally:
        await ledger.close()
    assert code == 1 and "refused" in out and "already claimed" in out and "stop that gateway" in out, out


async def test_seal_tail_names_a_log_the_store_does_not_hold(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 5)
    code, out = cli("audit", "seal-tail", "--config", str(config(tmp_path, store_url)), "--log", "[red]nope")
    assert code == 2 and "no log '[red]nope'" in out, out


async def test_seal_tail_names_an_hmac_key_it_cannot_use_and_never_prints_it(store_url: str, tmp_path: Path) -> None:
    await written(store_url, tmp_path, 5)
    (tmp_path / "data" / "ledger.key.hmac").write_text("Hunter2Secret, not hex\n")
    code, out = cli("audit", "seal-tail", "--config", str(config(tmp_path, store_url)), "--log", LOG)
    assert code == 2 and "audit.hmac_key" in out and "64 hexadecimal characters" in out, out
    assert "Hunter2Secret" not in out
