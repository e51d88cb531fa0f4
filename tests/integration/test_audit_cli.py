"""`ledgergate audit ...` against real stores: every kind of tampering is caught and named,
and evidence bundles verify offline until someone edits them."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from ledgergate.audit import merkle
from ledgergate.audit.checkpoint import Signer, split_notes
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.cli import app
from ledgergate.store.ledger_store import open_ledger_store
from test_ledger_store import run_sql, store_url  # noqa: F401 - shared fixture

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


async def build(tmp_path: Path, url: str, n: int = 30, every: int = 10) -> Path:
    """A config and a log of n records, checkpointed (and witnessed) every `every` records."""
    config = tmp_path / "ledgergate.yaml"
    config.write_text(
        f"storage: {json.dumps(url)}\n"
        "audit:\n"
        "  signing_key: ./data/ledger.key\n"
        "  checkpoint_interval: 1h\n"
        "  replica: replica-a\n"
        "  witnesses: ['file://./data/witness.log']\n"
    )
    settings = AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0, replica="replica-a",
                             witnesses=["file://./data/witness.log"])
    ledger = await Ledger.open(settings, url, tmp_path)
    for i in range(n):
        await ledger.append("rpc.request" if i % 2 == 0 else "rpc.response",
                            {"session": f"s{i % 3}", "tool": "echo", "n": i})
        if (i + 1) % every == 0:
            await ledger.checkpoint()
    await ledger.close()
    return config


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def record(url: str, seq: int) -> tuple[bytes, bytes]:
    store = open_ledger_store(url)
    try:
        row = store.rows("replica-a", seq, seq + 1)[0]
        return row.record, row.leaf_hash
    finally:
        store.close()


def edit(url: str, seq: int, record_bytes: bytes, rehash: bool = False) -> None:
    if rehash:
        run_sql(url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = 'replica-a' AND seq = ?",
                (record_bytes, merkle.leaf_hash(record_bytes), seq))
    else:
        run_sql(url, "UPDATE ledger_leaves SET record = ? WHERE log_id = 'replica-a' AND seq = ?", (record_bytes, seq))


async def test_clean_log_verifies(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 0, out
    assert "ok" in out and "30 records" in out and "3 witnessed" in out


async def test_changed_byte_is_named(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    rec, _ = record(store_url, 7)
    edit(store_url, 7, rec.replace(b'"n":7', b'"n":8'))
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "record 7" in out and "altered" in out, out


async def test_changed_and_rehashed_record_contradicts_checkpoint(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    rec, _ = record(store_url, 12)
    edit(store_url, 12, rec.replace(b'"tool":"echo"', b'"tool":"eche"'), rehash=True)
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "checkpoint at size 20" in out and "records 0..19" in out, out


async def test_deleted_record_is_named(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq = 5")
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "record 5: missing" in out, out


async def test_reordered_records_are_named(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    r3, h3 = record(store_url, 3)
    r4, h4 = record(store_url, 4)
    run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = 'replica-a' AND seq = 3", (r4, h4))
    run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = 'replica-a' AND seq = 4", (r3, h3))
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "record 3" in out and "seq 4" in out, out


async def test_inserted_record_is_named(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    run_sql(store_url, "UPDATE ledger_leaves SET seq = seq + 1000 WHERE log_id = 'replica-a' AND seq >= 5")
    run_sql(store_url, "UPDATE ledger_leaves SET seq = seq - 999 WHERE log_id = 'replica-a' AND seq >= 1000")
    forged = orjson.loads(record(store_url, 4)[0])
    forged.update(seq=5, tool="forged")
    data = orjson.dumps(forged, option=orjson.OPT_SORT_KEYS)
    run_sql(store_url, "INSERT INTO ledger_leaves (log_id, seq, time, event, session, leaf_hash, record) "
            "VALUES ('replica-a', 5, ?, ?, ?, ?, ?)",  # index columns forged to match, so only the seq chain tells
            (forged["time"], forged["event"], forged["session"], merkle.leaf_hash(data), data))
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "record 6" in out and "seq 5" in out, out


async def test_truncated_tail_contradicts_witness(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq >= 20")
    run_sql(store_url, "DELETE FROM ledger_checkpoints WHERE log_id = 'replica-a' AND size > 20")
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "witnessed checkpoint at size 30" in out and "only 20 records" in out, out


async def test_swapped_public_key_fails(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url)
    (tmp_path / "data" / "ledger.key.pub").write_text(str(Signer.generate("ledgergate").verifier) + "\n")
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "checkpoint at size 10" in out and "not signed by" in out, out


async def test_bundles_verify_offline_and_edits_fail(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, n=25)  # checkpoints at 10, 20 and (on close) 25
    pub = str(tmp_path / "data" / "ledger.key.pub")
    full, part = tmp_path / "full.json", tmp_path / "part.json"
    assert cli("audit", "export", "--config", str(config), "-o", str(full))[0] == 0
    assert cli("audit", "export", "--config", str(config), "--session", "s1", "-o", str(part))[0] == 0
    doc = orjson.loads(full.read_bytes())
    [log] = doc["logs"]
    assert log["origin"] == "ledgergate/replica-a" and log["start"] == 0 and len(log["records"]) == 25
    assert len(log["checkpoints"]) == 3 and len(log["consistency"]) == 2
    # the exact hashed strings: recomputing with any RFC 9162 code gives the signed root
    assert merkle.root_of([merkle.leaf_hash(r.encode()) for r in log["records"]]) == \
        __import__("ledgergate.audit.checkpoint", fromlist=["x"]).Checkpoint.parse(
            log["checkpoints"][-1].split("\n\n")[0] + "\n").root
    code, out = cli("audit", "verify-bundle", str(full), "--public-key", pub)
    assert code == 0, out
    pdoc = orjson.loads(part.read_bytes())
    assert pdoc["logs"][0]["indices"] == [i for i in range(25) if i % 3 == 1]
    code, out = cli("audit", "verify-bundle", str(part), "--public-key", pub)
    assert code == 0, out

    for name, d in (("full", doc), ("part", pdoc)):
        bad = json.loads(json.dumps(d))
        bad["logs"][0]["records"][1] = bad["logs"][0]["records"][1].replace('"echo"', '"ech0"')
        path = tmp_path / f"bad-{name}.json"
        path.write_text(json.dumps(bad))
        code, out = cli("audit", "verify-bundle", str(path), "--public-key", pub)
        assert code == 1 and "record" in out, (name, out)

    dropped = json.loads(json.dumps(doc))
    del dropped["logs"][0]["records"][3]
    (tmp_path / "dropped.json").write_text(json.dumps(dropped))
    assert cli("audit", "verify-bundle", str(tmp_path / "dropped.json"), "--public-key", pub)[0] == 1
    other = tmp_path / "other.pub"
    other.write_text(str(Signer.generate("ledgergate").verifier) + "\n")
    code, out = cli("audit", "verify-bundle", str(full), "--public-key", str(other))
    assert code == 1 and ("not signed by" in out or "verifier key" in out), out


async def test_tail_prints_newest_records(tmp_path: Path) -> None:
    config = await build(tmp_path, f"sqlite:///{tmp_path / 'data' / 'l.db'}", n=5)
    code, out = cli("audit", "tail", "--config", str(config), "-n", "2")
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [x["seq"] for x in lines] == [3, 4]



async def test_tail_writes_hidden_characters_out_and_stays_the_same_json(tmp_path: Path) -> None:
    """`audit tail` printed what a caller chose as it was: a bidi override (U+202E) reorders what a person reads,
    a zero-width space or a tag character hides, and Rich turned `:smile:` into an emoji. Now those characters are
    written as their JSON escapes: the line parses to the record's value all the same."""
    url = f"sqlite:///{tmp_path / 'data' / 'l.db'}"
    config = await build(tmp_path, url, n=1)
    settings = AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0, replica="replica-a",
                             witnesses=["file://./data/witness.log"])
    chosen = "pay\u202e0001-A\u202c to\u200b A-2002 \U000e0041 :smile: \u2028 ok"
    ledger = await Ledger.open(settings, url, tmp_path)
    await ledger.append("rpc.request", {"session": "s9", "args": {"memo": chosen}})
    await ledger.close()
    code, out = cli("audit", "tail", "--config", str(config), "-n", "1")
    assert code == 0, out
    assert not any(ch in out for ch in "\u202e\u202c\u200b\U000e0041\u2028") and "\U0001f604" not in out, repr(out)
    line = next(x for x in out.splitlines() if x.startswith("{"))
    assert json.loads(line)["args"]["memo"] == chosen

def flat(code: int, out: str) -> tuple[int, str]:
    """CLI output with line wrapping undone (rich wraps at 80 columns when not on a terminal)."""
    return code, " ".join(out.split())


# --- index columns (issue 20 item 4): every column a command reads is checked against the hashed record ---
@pytest.mark.parametrize(("seq", "assignment", "column"), [
    (7, "time = '2020-01-01T00:00:00.000000Z'", "time"),
    (6, "event = 'rpc.response'", "event"),
    (7, "session = 's2'", "session"),
    (7, "session = NULL", "session"),
    (7, "session = 'new-session'", "session"),
])
async def test_edited_index_column_is_named(store_url: str, tmp_path: Path, seq: int, assignment: str,
                                            column: str) -> None:
    config = await build(tmp_path, store_url)
    assert cli("audit", "verify", "--config", str(config))[0] == 0
    run_sql(store_url, f"UPDATE ledger_leaves SET {assignment} WHERE log_id = 'replica-a' AND seq = ?", (seq,))
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and f"record {seq}" in out and f"{column} column" in out, out


async def test_session_column_set_on_a_record_without_session(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ledgergate.yaml"
    config.write_text(f"storage: {json.dumps(store_url)}\naudit:\n  signing_key: ./data/ledger.key\n"
                      "  checkpoint_interval: 1h\n  replica: replica-a\n")
    ledger = await Ledger.open(AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0,
                                             replica="replica-a"), store_url, tmp_path)
    await ledger.append("auth.denied", {"reason": "no token"})
    await ledger.close()
    assert cli("audit", "verify", "--config", str(config))[0] == 0
    run_sql(store_url, "UPDATE ledger_leaves SET session = 'victim' WHERE log_id = 'replica-a' AND seq = 0")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "record 0" in out and "session column" in out, out


# --- a whole log gone (issue 20 item 10): verify accounts for every log anyone has seen ---
async def two_logs(tmp_path: Path, url: str) -> Path:
    config = await build(tmp_path, url, n=10, every=5)
    settings = AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0, replica="replica-b",
                             witnesses=["file://./data/witness.log"])
    other = await Ledger.open(settings, url, tmp_path)
    for i in range(4):
        await other.append("rpc.request", {"n": i})
    await other.close()
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 0 and "log replica-a" in out and "log replica-b" in out, out
    return config


async def test_deleted_ledger_logs_row_is_missing(store_url: str, tmp_path: Path) -> None:
    config = await two_logs(tmp_path, store_url)
    run_sql(store_url, "DELETE FROM ledger_logs WHERE log_id = 'replica-a'")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "FAIL log replica-a" in out and "missing from the store" in out, out
    assert "ok log replica-b" in out, out


async def test_log_deleted_from_every_table_is_missing(store_url: str, tmp_path: Path) -> None:
    config = await two_logs(tmp_path, store_url)
    for table in ("ledger_logs", "ledger_leaves", "ledger_checkpoints"):
        run_sql(store_url, f"DELETE FROM {table} WHERE log_id = 'replica-b'")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "FAIL log replica-b" in out and "missing from the store" in out, out
    assert "witnessed checkpoint at size 4" in out and "only 0 records" in out, out
    assert "ok log replica-a" in out, out


async def test_every_log_deleted_is_not_no_logs(store_url: str, tmp_path: Path) -> None:
    config = await two_logs(tmp_path, store_url)
    for table in ("ledger_logs", "ledger_leaves", "ledger_checkpoints"):
        run_sql(store_url, f"DELETE FROM {table}")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "FAIL log replica-a" in out and "FAIL log replica-b" in out, out


async def test_ledger_logs_row_deleted_but_checkpoints_remain(store_url: str, tmp_path: Path) -> None:
    """No witness to read back: the leaf and checkpoint tables still name the log."""
    config = await two_logs(tmp_path, store_url)
    (tmp_path / "data" / "witness.log").unlink()
    run_sql(store_url, "DELETE FROM ledger_logs WHERE log_id = 'replica-b'")
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-b'")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "FAIL log replica-b" in out and "missing from the store" in out, out


async def test_altered_origin_is_named(store_url: str, tmp_path: Path) -> None:
    config = await two_logs(tmp_path, store_url)
    run_sql(store_url, "UPDATE ledger_logs SET origin = 'ledgergate/elsewhere' WHERE log_id = 'replica-b'")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "FAIL log replica-b" in out and "origin" in out, out


# --- a configured witness that holds nothing cannot vouch for the tail: verify says so and fails ---
def _cut_tail(url: str) -> None:
    """Records 20.. deleted, and the database's checkpoints above 20 with them: only a witness can tell."""
    run_sql(url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq >= 20")
    run_sql(url, "DELETE FROM ledger_checkpoints WHERE log_id = 'replica-a' AND size > 20")


@pytest.mark.parametrize(("spoil", "said"), [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_text("these are not\n\nsigned notes\n— at all\n"), "holds no signed checkpoint notes"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00\x81 binary"), "is not UTF-8 text"),
    (lambda p: (p.unlink(), p.mkdir()), "is a directory"),
])
async def test_a_witness_with_nothing_to_compare_fails_verify(store_url: str, tmp_path: Path, spoil, said: str) -> None:
    config = await build(tmp_path, store_url)
    _cut_tail(store_url)
    spoil(tmp_path / "data" / "witness.log")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "FAIL witness file://./data/witness.log" in out and said in out, out
    assert "bug" not in out and "Traceback" not in out, out


async def test_a_witness_missing_before_any_checkpoint_is_only_noted(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, n=3, every=10)  # no checkpoint yet but the one close() signs
    run_sql(store_url, "DELETE FROM ledger_checkpoints")
    (tmp_path / "data" / "witness.log").unlink()
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert "note: witness file://./data/witness.log" in out and "does not exist" in out, out
    # the witness is only noted; the log itself fails: records nothing signed vouches for
    assert code == 1 and "3 records and no signed checkpoint" in out, out


async def test_a_log_none_of_whose_checkpoints_is_at_the_witness_is_named(store_url: str, tmp_path: Path) -> None:
    """With several replicas each may push to a witness only its own config names, so a log with no
    witnessed checkpoint is not a failure, but the output says its tail was checked without a witness."""
    config = await two_logs(tmp_path, store_url)
    witness = tmp_path / "data" / "witness.log"
    kept = [n for n in split_notes(witness.read_text()) if not n.startswith("ledgergate/replica-a\n")]
    witness.write_text("".join(kept))
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 0 and "note: log replica-a: none of its" in out and "checked against the database" in out, out


async def test_with_an_https_witness_a_rewrite_is_caught_only_with_the_witness_notes(store_url: str,
                                                                                   tmp_path: Path) -> None:
    """With the witness the docs recommend (https, outside the cluster) `audit verify` could not read it back,
    and a DBA who deleted every checkpoint and rewrote the records got "ok". Now a log with records and no
    signed checkpoint fails, the output says what was not compared, and `--witness-notes` (the checkpoints
    the auditor got from the witness) catches the rewrite and a wiped store."""
    config = await build(tmp_path, store_url, n=30, every=10)
    saved = tmp_path / "from-the-witness.notes"
    saved.write_bytes((tmp_path / "data" / "witness.log").read_bytes())
    config.write_text(config.read_text().replace("file://./data/witness.log", "https://witness.example/add"))

    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 0 and "warning" in out and "--witness-notes" in out, out  # consistent, and says with what
    code, out = flat(*cli("audit", "verify", "--config", str(config), "--witness-notes", str(saved)))
    assert code == 0 and "3 witnessed" in out and "warning" not in out, out

    run_sql(store_url, "DELETE FROM ledger_checkpoints")
    code, out = flat(*cli("audit", "verify", "--config", str(config)))
    assert code == 1 and "30 records and no signed checkpoint" in out, out
    code, out = flat(*cli("audit", "verify", "--config", str(config), "--witness-notes", str(saved)))
    assert code == 1 and "FAIL log replica-a" in out, out

    run_sql(store_url, "DELETE FROM ledger_leaves")
    run_sql(store_url, "DELETE FROM ledger_hashes")
    run_sql(store_url, "DELETE FROM ledger_logs")
    code, out = flat(*cli("audit", "verify", "--config", str(config), "--witness-notes", str(saved)))
    assert code == 1 and "missing from the store" in out, out


@pytest.mark.parametrize("content", [None, b"", b"\xff\xfe binary", b"not a note\n"])
async def test_witness_notes_that_hold_nothing_are_a_usage_error(store_url: str, tmp_path: Path,
                                                                 content: bytes | None) -> None:
    config = await build(tmp_path, store_url, n=3, every=3)
    notes = tmp_path / "notes"
    if content is not None:
        notes.write_bytes(content)
    code, out = flat(*cli("audit", "verify", "--config", str(config), "--witness-notes", str(notes)))
    assert code == 2 and f"--witness-notes {notes}" in out and "Traceback" not in out, out


async def test_a_hostile_bundle_cannot_write_to_the_terminal_or_bury_the_verdict(tmp_path: Path) -> None:
    """A bundle comes from outside. Its log name, origin, verifier key and record indices were quoted raw (an
    escape sequence reached the terminal, Rich markup in a name printed a green "ok") and unbounded (a 1 MB
    name was printed whole)."""
    config = await build(tmp_path, f"sqlite:///{tmp_path / 'data' / 'l.db'}", n=5)
    pub = str(tmp_path / "data" / "ledger.key.pub")
    full = tmp_path / "full.json"
    assert cli("audit", "export", "--config", str(config), "-o", str(full))[0] == 0
    doc = orjson.loads(full.read_bytes())
    hostile = "\x1b[2J\x1b[H[green]ok[/green] all verified\u200b" + "A" * 1_000_000
    cases = {
        "log": lambda d: d["logs"][0].update(log=hostile),
        "origin": lambda d: d["logs"][0].update(origin=hostile),
        "verifier_key": lambda d: d.update(verifier_key=hostile),
        "malformed": lambda d: d["logs"][0].update(log=hostile, tree_size=hostile),
        "checkpoint": lambda d: d["logs"][0]["checkpoints"].__setitem__(0, hostile),
    }
    for name, tamper in cases.items():
        bad = json.loads(json.dumps(doc))
        tamper(bad)
        path = tmp_path / f"hostile-{name}.json"
        path.write_text(json.dumps(bad))
        code, out = cli("audit", "verify-bundle", str(path), "--public-key", pub)
        assert code == 1 and "FAIL" in out, (name, out[:300])
        assert "\x1b" not in out and "\u200b" not in out, (name, out[:300])
        assert len(out) < 4000, (name, len(out))
        assert not any(line.lstrip().startswith("ok") for line in out.splitlines()), (name, out[:300])
        if name != "checkpoint":  # a note with control characters is refused without quoting it
            assert "[green]ok[/green]" in out and "\\x1b" in out, (name, out[:300])  # quoted, as text


async def test_what_the_database_wrote_is_never_markup_or_terminal_control_in_verify(tmp_path: Path) -> None:
    """`audit verify` checks whoever holds the database. A log id (and the problems quoting it) went to the
    terminal as Rich markup and raw text: a log renamed `[/red][green]ok[/green]…` printed a green "ok" on the
    failing line, and an escape sequence could clear the screen."""
    url = f"sqlite:///{tmp_path / 'data' / 'l.db'}"
    config = await build(tmp_path, url, n=5)
    hostile = "[/red][green]ok[/green] all good \x1b[2J" + "A" * 5000
    for table in ("ledger_logs", "ledger_leaves", "ledger_checkpoints", "ledger_hashes", "ledger_probes"):
        run_sql(url, f"UPDATE {table} SET log_id = ? WHERE log_id = 'replica-a'", (hostile,))
    code, out = cli("audit", "verify", "--config", str(config))
    assert code == 1 and "FAIL" in out, out[:500]
    assert "\x1b" not in out and len(out) < 4000, out[:500]
    assert "[green]ok[/green]" in out  # shown as the text it is
    assert not any(line.lstrip().startswith("ok") for line in out.splitlines()), out[:500]
