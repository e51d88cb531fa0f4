"""`ledgergate audit siem` against real stores (SQLite and PostgreSQL): verified records only,
resumable, and a tampered record stops the export with nothing after it emitted."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from ledgergate.audit import merkle
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.cli import app
from ledgergate.store.ledger_store import open_ledger_store
from test_ledger_store import run_sql, store_url  # noqa: F401 - shared fixture

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
LOG = "replica-a"


def _settings(replica: str = LOG) -> AuditSettings:
    return AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0, replica=replica,
                         witnesses=["file://./data/witness.log"])


async def grow(tmp_path: Path, url: str, n: int, every: int = 10, replica: str = LOG) -> None:
    """Append n records to the log, with a signed checkpoint after every `every`-th record of the log."""
    ledger = await Ledger.open(_settings(replica), url, tmp_path)
    for _ in range(n):
        seq = await ledger.append("rpc.request", {"session": "s1", "tool": "echo", "args": {"text": "hi"}})
        if (seq + 1) % every == 0:
            await ledger.checkpoint()
    size = seq + 1
    await ledger.close()
    if size % every:  # closing signs the tail too; keep it unsigned, as between two checkpoint ticks
        run_sql(url, "DELETE FROM ledger_checkpoints WHERE log_id = ? AND size = ?", (replica, size))


async def build(tmp_path: Path, url: str, n: int = 35) -> Path:
    config = tmp_path / "ledgergate.yaml"
    config.write_text(f"storage: {json.dumps(url)}\naudit:\n  signing_key: ./data/ledger.key\n"
                      f"  checkpoint_interval: 1h\n  replica: {LOG}\n")
    await grow(tmp_path, url, n)
    return config


def siem(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", "siem", "--config", str(config), *args])
    return result.exit_code, result.output


def stored(url: str) -> list[tuple[bytes, bytes]]:
    store = open_ledger_store(url)
    try:
        return [(r.record, r.leaf_hash) for r in store.rows(LOG, 0, store.size(LOG))]
    finally:
        store.close()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def seqs(path: Path) -> list[int]:
    return [orjson.loads(line)["seq"] for line in lines(path)]


def edit(url: str, seq: int, old: bytes, new: bytes, rehash: bool) -> None:
    record = next(r for r, _ in stored(url) if orjson.loads(r)["seq"] == seq)
    changed = record.replace(old, new)
    assert changed != record
    if rehash:
        run_sql(url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = ? AND seq = ?",
                (changed, merkle.leaf_hash(changed), LOG, seq))
    else:
        run_sql(url, "UPDATE ledger_leaves SET record = ? WHERE log_id = ? AND seq = ?", (changed, LOG, seq))


async def test_emits_exactly_the_signed_records(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, 35)  # checkpoints at 10, 20, 30; 5 records not yet signed
    out = tmp_path / "siem.jsonl"
    code, text = siem(config, "--output", str(out))
    assert code == 0, text
    got = lines(out)
    truth = stored(store_url)
    assert len(got) == 30 and "5 newer record(s) wait for the next checkpoint" in text, text
    for line, (record, leaf) in zip(got, truth, strict=False):
        assert line == record  # the very bytes that were hashed
        assert merkle.leaf_hash(line) == leaf


async def test_resumes_where_it_stopped(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, 35)
    out, state = tmp_path / "siem.jsonl", tmp_path / "siem.state"
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 0, text
    assert seqs(out) == list(range(30))
    assert json.loads(state.read_text())["logs"][LOG]["next"] == 30

    await grow(tmp_path, store_url, 15)  # records 35..49, checkpoints at 40 and 50
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 0, text
    assert seqs(out) == list(range(50)), "the second run goes on at 30: nothing repeated, nothing skipped"
    assert [line for line in lines(out)] == [r for r, _ in stored(store_url)]

    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 0 and "0 record(s) emitted" in text, text
    assert len(lines(out)) == 50


@pytest.mark.parametrize("rehash", [False, True], ids=["edited", "edited-and-rehashed"])
async def test_tampered_record_stops_the_export(store_url: str, tmp_path: Path, rehash: bool) -> None:
    config = await build(tmp_path, store_url, 35)
    edit(store_url, 12, b'"tool":"echo"', b'"tool":"eche"', rehash)
    out, state = tmp_path / "siem.jsonl", tmp_path / "siem.state"
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 1, text
    if rehash:
        assert "records 10..19 do not hash to the signed checkpoint at size 20" in text, text
    else:
        assert "record 12" in text and "altered" in text, text
    assert "nothing from there on was emitted" in text
    # nothing of the stretch the bad record is in, nor after it; the position stays before it
    assert seqs(out) == list(range(10))
    assert b"eche" not in out.read_bytes()
    assert json.loads(state.read_text())["logs"][LOG]["next"] == 10
    code, text = siem(config, "--output", str(out), "--state", str(state))  # a retry stops at the same place
    assert code == 1 and seqs(out) == list(range(10)), text


async def test_from_a_position(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, 35)
    out = tmp_path / "a.jsonl"
    code, text = siem(config, "--from", "15", "--output", str(out))
    assert code == 0, text
    assert seqs(out) == list(range(15, 30))
    out2 = tmp_path / "b.jsonl"
    code, text = siem(config, "--from", f"{LOG}=20", "--output", str(out2))
    assert code == 0 and seqs(out2) == list(range(20, 30)), text


async def test_from_a_position_still_proves_what_lies_before_it(store_url: str, tmp_path: Path) -> None:
    """Records before the position are not emitted, but they are in the tree the checkpoint signs:
    a rehashed edit there makes the next checkpoint fail, and nothing is emitted."""
    config = await build(tmp_path, store_url, 35)
    edit(store_url, 12, b'"tool":"echo"', b'"tool":"eche"', rehash=True)
    out = tmp_path / "a.jsonl"
    code, text = siem(config, "--from", "15", "--output", str(out))
    assert code == 1 and "signed checkpoint at size 20" in text, text
    assert seqs(out) == []


async def test_forged_checkpoint_stops_the_export(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, 35)
    store = open_ledger_store(store_url)
    try:
        note = store.checkpoints(LOG)[1].note
    finally:
        store.close()
    body, _, sigs = note.partition("\n\n")
    lines_ = body.split("\n")
    lines_[2] = "A" * 43 + "="  # another root, signature unchanged
    run_sql(store_url, "UPDATE ledger_checkpoints SET note = ? WHERE log_id = ? AND size = 20",
            ("\n".join(lines_) + "\n\n" + sigs, LOG))
    out = tmp_path / "a.jsonl"
    code, text = siem(config, "--output", str(out))
    assert code == 1 and "checkpoint at size 20" in text and "does not verify" in text, text
    assert seqs(out) == []


async def test_edited_state_file_is_refused(store_url: str, tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, 35)
    out, state = tmp_path / "siem.jsonl", tmp_path / "siem.state"
    assert siem(config, "--output", str(out), "--state", str(state))[0] == 0
    doc = json.loads(state.read_text())
    doc["logs"][LOG]["edge"][0] = "00" * 32
    state.write_text(json.dumps(doc))
    await grow(tmp_path, store_url, 5)
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 1 and "differs from the one this export already emitted up to" in text, text
    assert len(lines(out)) == 30
    state.write_text("{not json")
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 2 and "state file" in text and "not JSON" in text, text


async def test_from_and_state_exclude_each_other(tmp_path: Path) -> None:
    config = await build(tmp_path, f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}", 10)
    code, text = siem(config, "--from", "3", "--state", str(tmp_path / "s"))
    assert code == 2 and "exclude each other" in text
    code, text = siem(config, "--from", "x=y")
    assert code == 2 and "LOG=N" in text


async def test_stdout_is_the_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    config = await build(tmp_path, url, 20)
    proc = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "siem", "--config", str(config)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [r for r, _ in stored(url)]
    assert b"20 record(s) emitted" in proc.stderr


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_syslog(tmp_path: Path, transport: str) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    config = await build(tmp_path, url, 20)
    received: list[bytes] = []
    if transport == "udp":
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)

        def serve() -> None:
            while len(received) < 20:
                received.append(server.recv(70000))
    else:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(10)

        def serve() -> None:
            conn, _ = server.accept()
            buf = b""
            with conn:
                while chunk := conn.recv(65536):
                    buf += chunk
            while buf:  # RFC 6587 octet counting: "LEN SP MSG"
                size, _, rest = buf.partition(b" ")
                received.append(rest[:int(size)])
                buf = rest[int(size):]

    port = server.getsockname()[1]
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        code, text = siem(config, "--syslog", f"{transport}://127.0.0.1:{port}")
        thread.join(15)
    finally:
        server.close()
    assert code == 0, text
    truth = stored(url)
    assert len(received) == 20
    for message, (record, _) in zip(received, truth, strict=True):
        head, _, msg = message.partition(b" - ")
        pri_version, timestamp, _host, app_name, _pid, msgid = head.split(b" ")
        assert (pri_version, app_name, msgid) == (b"<134>1", b"ledgergate", b"rpc.request")
        assert timestamp.decode() == orjson.loads(record)["time"]
        assert msg == record


async def test_every_replica_log(store_url: str, tmp_path: Path) -> None:
    """Several replicas write their own logs into one store; each is exported and resumed on its own."""
    config = await build(tmp_path, store_url, 20)
    await grow(tmp_path, store_url, 30, replica="replica-b")
    out, state = tmp_path / "siem.jsonl", tmp_path / "siem.state"
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 0, text
    got = [(d["log"], d["seq"]) for d in map(orjson.loads, lines(out))]
    assert got == [(LOG, i) for i in range(20)] + [("replica-b", i) for i in range(30)]
    await grow(tmp_path, store_url, 10, replica="replica-b")
    code, text = siem(config, "--output", str(out), "--state", str(state))
    assert code == 0, text
    assert [(d["log"], d["seq"]) for d in map(orjson.loads, lines(out))][50:] == [("replica-b", i) for i in range(30, 40)]
    code, text = siem(config, "--from", "replica-b=35", "--output", str(tmp_path / "b.jsonl"))
    assert code == 0, text
    assert [(d["log"], d["seq"]) for d in map(orjson.loads, lines(tmp_path / "b.jsonl"))] == \
        [(LOG, i) for i in range(20)] + [("replica-b", i) for i in range(35, 40)]


async def test_follow_emits_each_new_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    config = await build(tmp_path, url, 10)
    out, state = tmp_path / "siem.jsonl", tmp_path / "siem.state"
    proc = subprocess.Popen([sys.executable, "-m", "ledgergate.cli", "audit", "siem", "--config", str(config),
                             "--output", str(out), "--state", str(state), "--follow", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        async def until(n: int) -> None:
            for _ in range(150):
                if len(lines(out)) >= n or proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
        await until(10)
        assert seqs(out) == list(range(10))
        await grow(tmp_path, url, 20)
        await until(30)
        assert seqs(out) == list(range(30))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err, err
    assert json.loads(state.read_text())["logs"][LOG]["next"] == 30
