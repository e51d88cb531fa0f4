"""`sessions show` and `sessions replay` check what they show against the signed checkpoints (real SQLite and
PostgreSQL stores, a real ledger, the CLI as an auditor runs it).

An outside test rewrote a record of a session (`"amount":20000` to `"amount":200`) together with its stored leaf
hash: both verbs showed the rewritten record as fact and exited 0, because a record was checked only against its
own leaf hash. Only `audit verify` noticed. Now each record shown is proven in its log's latest signed checkpoint
(as the console's replay does), a record that fails is marked and the verb exits 1."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from test_audit_cli import build, cli
from test_ledger_store import run_sql, store_url  # noqa: F401 - shared fixture: SQLite and PostgreSQL

from ledgergate.store.ledger_store import open_ledger_store

pytestmark = pytest.mark.timeout(180)


def rewrite(url: str, seq: int) -> None:
    """Change record `seq` of replica-a and its leaf hash with it, as a database administrator could."""
    store = open_ledger_store(url)
    try:
        record = bytes(store.rows("replica-a", seq, seq + 1)[0].record)
    finally:
        store.close()
    doc = json.loads(record)
    doc["tool"] = "transfer_funds"
    forged = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    run_sql(url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = 'replica-a' AND seq = ?",
            (forged, hashlib.sha256(b"\x00" + forged).digest(), seq))


async def test_show_and_replay_refuse_a_record_rewritten_with_its_leaf_hash(store_url: str,  # noqa: F811
                                                                           tmp_path: Path) -> None:
    config = await build(tmp_path, store_url, n=30, every=10)  # every record signed
    code, text = await asyncio.to_thread(cli, "sessions", "show", "--config", str(config), "--", "s1")
    assert code == 0 and "10 records in their logs' signed checkpoints" in " ".join(text.split()), text
    rewrite(store_url, 4)  # session s1's (4 % 3 == 1)
    for verb in ("show", "replay"):
        code, text = await asyncio.to_thread(cli, "sessions", verb, "--config", str(config), "--", "s1")
        flat = " ".join(text.split())
        assert code == 1 and "do not match their signed checkpoint" in flat and "record 4 of log replica-a" in flat, \
            (verb, text)
    code, text = await asyncio.to_thread(cli, "sessions", "replay", "--config", str(config), "--", "s1")
    assert "transfer_funds [FAILS its signed checkpoint]" in " ".join(text.split()) or "FAILS its signed" in text
    # the log's stored leaf hashes no longer make its signed root: none of its records can be proven now
    code, text = await asyncio.to_thread(cli, "sessions", "show", "--config", str(config), "--", "s2")
    assert code == 1 and "do not match its signed checkpoint" in " ".join(text.split()), text
