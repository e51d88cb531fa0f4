"""Nothing handed out as evidence is built from hashes that were not checked against what it claims
(docs/security.md §4): with a stored interior hash altered, a record row deleted or the tail
truncated, and every signed checkpoint genuine, `audit export` and `sessions export` write no
bundle and name the cause; the proof API and the tile server refuse with 503 and name it, on
SQLite and PostgreSQL. Intact stores are served as before."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from test_audit_cli import build, cli
from test_ledger_store import run_sql, settings, store_url  # noqa: F401 - shared fixture

from ledgergate.api.audit import audit_routes
from ledgergate.api.tiles import Endpoint, tile_routes
from ledgergate.audit import merkle
from ledgergate.audit.bundle import ExportRefused, Filter, export_bundle, verify_bundle
from ledgergate.audit.checkpoint import load_verifier, open_checkpoint
from ledgergate.audit.ledger import Ledger
from ledgergate.store.ledger_store import open_ledger_store

pytestmark = pytest.mark.timeout(180)
VERIFY = "run `ledgergate audit verify`"


def export(url: str, key: Path, flt: Filter | None = None) -> list[str]:
    store = open_ledger_store(url)
    try:
        return verify_bundle(export_bundle(store, load_verifier(key), flt), load_verifier(key))
    finally:
        store.close()


def refused(config: Path, out: Path, *verb: str) -> str:
    code, text = cli(*verb, "--config", str(config), "-o", str(out))
    assert code != 0 and not out.exists(), text
    assert "this is a bug" not in text and "LookupError" not in text and VERIFY in " ".join(text.split()), text
    return " ".join(text.split())


# ── bundles ─────────────────────────────────────────────────────────────────


async def test_export_of_an_altered_stored_hash_is_refused_naming_it(store_url: str, tmp_path: Path,  # noqa: F811
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    config = await build(tmp_path, store_url, n=100, every=25)
    key = tmp_path / "data" / "ledger.key.pub"
    assert export(store_url, key) == [] and export(store_url, key, Filter(session="s1")) == []
    # records 0..15 intact, their level-4 hash altered: the consistency proofs 25 -> 50 -> ... read it
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE log_id = 'replica-a' AND level = 4 AND idx = 0",
            (bytes(32),))
    want = "stored hash at level 4 index 0 (records 0..15) does not match the records"
    with caplog.at_level(logging.ERROR, logger="ledgergate.audit.bundle"), \
            pytest.raises(ExportRefused, match=r"level 4 index 0 \(records 0\.\.15\)"):
        export(store_url, key)
    assert any(want in r.getMessage() for r in caplog.records)
    text = refused(config, tmp_path / "all.json", "audit", "export")
    assert "log replica-a: no bundle written: the store's " + want in text, text
    # a session's records whose inclusion proofs pass through it
    text = refused(config, tmp_path / "s.json", "audit", "export", "--session", "s1")
    assert want in text, text


async def test_session_export_of_an_altered_stored_hash_is_refused(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = await build(tmp_path, store_url, n=100, every=25)
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE log_id = 'replica-a' AND level = 4 AND idx = 2",
            (bytes(32),))
    code, text = cli("sessions", "export", "s1", "--config", str(config), "-o", str(tmp_path / "s1.json"))
    text = " ".join(text.split())
    assert code != 0 and not (tmp_path / "s1.json").exists(), text
    assert "stored hash at level 4 index 2 (records 32..47) does not match the records" in text, text
    assert VERIFY in text and "this is a bug" not in text, text


async def test_export_of_a_store_with_a_record_deleted_names_the_record(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = await build(tmp_path, store_url, n=100, every=25)
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq = 34")
    text = refused(config, tmp_path / "all.json", "audit", "export")
    assert "record 34: missing" in text, text
    text = refused(config, tmp_path / "s.json", "audit", "export", "--session", "s2")
    assert "record 34: missing" in text, text
    code, text = cli("sessions", "export", "s0", "--config", str(config), "-o", str(tmp_path / "s0.json"))
    assert code != 0 and "record 34: missing" in " ".join(text.split()), text
    assert not (tmp_path / "s0.json").exists()


async def test_export_of_a_truncated_store_is_refused(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = await build(tmp_path, store_url, n=100, every=25)
    run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq >= 90")
    text = refused(config, tmp_path / "all.json", "audit", "export")
    assert "the log has only 90 records (tail truncated or records deleted)" in text, text


# ── proofs over HTTP ────────────────────────────────────────────────────────


async def open_log(store_url: str, tmp_path: Path, n: int = 341, beyond: int = 0) -> Ledger:  # noqa: F811
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    for i in range(n):
        await ledger.append("rpc.request", {"session": f"s{i % 4}", "n": i})
    await ledger.checkpoint()
    for i in range(beyond):
        await ledger.append("rpc.request", {"session": "late", "n": i})
    return ledger


async def test_proof_api_refuses_a_proof_from_an_altered_stored_hash(store_url: str, tmp_path: Path,  # noqa: F811
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    ledger = await open_log(store_url, tmp_path, beyond=20)
    verifier = load_verifier(tmp_path / "data" / "ledger.key.pub")
    app = Starlette(routes=audit_routes(ledger))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        cp = open_checkpoint((await client.get("/api/v1/audit/checkpoint")).text, verifier)
        assert cp.size == 341
        ok = await client.get("/api/v1/audit/proof/inclusion", params={"index": 300, "size": 341})
        body = ok.json()
        assert merkle.verify_inclusion(300, 341, merkle.leaf_hash(body["record"].encode()),
                                       [base64.b64decode(p) for p in body["proof"]], cp.root)
        # beyond the signed checkpoint the proof is tied to the writer's root, which the next checkpoint signs
        assert (await client.get("/api/v1/audit/proof/inclusion", params={"index": 350})).status_code == 200
        assert (await client.get("/api/v1/audit/proof/consistency", params={"from": 19, "to": 341})).status_code == 200

        run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 8 AND idx = 0", (bytes(32),))
        want = ("log replica-a: the store's stored hashes do not match its records at level 8 index 0 "
                "(records 0..255); run `ledgergate audit verify`")
        with caplog.at_level(logging.ERROR, logger="ledgergate.api.audit"):
            for params in ({"index": 300, "size": 341}, {"index": 300}, {"index": 355, "size": 361}):
                r = await client.get("/api/v1/audit/proof/inclusion", params=params)
                assert r.status_code == 503 and r.json() == {"error": want}, (params, r.text)
            r = await client.get("/api/v1/audit/proof/consistency", params={"from": 300, "to": 341})
            assert r.status_code == 503 and r.json() == {"error": want}, r.text
        assert any(want in rec.getMessage() for rec in caplog.records)
        # proofs that do not read the altered hash are still served, and verify
        ok = await client.get("/api/v1/audit/proof/inclusion", params={"index": 40, "size": 200})
        assert ok.status_code == 200, ok.text

        run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 4 AND idx = 2", (bytes(32),))
        r = await client.get("/api/v1/audit/proof/inclusion", params={"index": 7, "size": 64})
        assert r.status_code == 503 and "at level 4 index 2 (records 32..47)" in r.json()["error"], r.text

        run_sql(store_url, "DELETE FROM ledger_leaves WHERE log_id = 'replica-a' AND seq = 330")
        for params in ({"index": 330, "size": 341}, {"index": 331, "size": 341}):
            r = await client.get("/api/v1/audit/proof/inclusion", params=params)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == f"log replica-a: record 330 is missing from the store (deleted); {VERIFY}"
    await ledger.close()


# ── tiles ───────────────────────────────────────────────────────────────────


def open_guard(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        return await endpoint(request)

    return guarded


async def test_tiles_that_do_not_lead_to_the_signed_root_are_refused(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    ledger = await open_log(store_url, tmp_path)  # 341: tile/0/000, tile/0/001.p/85, tile/1/000.p/1
    app = Starlette(routes=tile_routes(ledger, open_guard))
    prefix = "/api/v1/audit/tiles/replica-a"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t" + prefix) as client:
        good = {p: (await client.get(p)).content for p in ("/tile/1/000.p/1", "/tile/0/000", "/tile/entries/000")}
        run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 8 AND idx = 0", (bytes(32),))
        r = await client.get("/tile/1/000.p/1")
        assert r.status_code == 503 and r.headers["cache-control"] == "no-store", r.text
        assert r.json()["error"] == ("log replica-a: the store's stored hashes do not match its records at level 8 "
                                     f"index 0 (records 0..255); {VERIFY}")
        # the level-0 tiles do not hold that hash, but their check reads it (the left edge of tile/0/001)
        assert (await client.get("/tile/0/000")).content == good["/tile/0/000"]
        assert (await client.get("/tile/0/001.p/85")).status_code == 503
        run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 8 AND idx = 0",
                (good["/tile/1/000.p/1"],))
        assert (await client.get("/tile/1/000.p/1")).content == good["/tile/1/000.p/1"]

        run_sql(store_url, "UPDATE ledger_leaves SET leaf_hash = ? WHERE log_id = 'replica-a' AND seq = 5",
                (bytes(32),))
        r = await client.get("/tile/0/000")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == ("log replica-a: record 5's bytes do not match its stored leaf hash (record or "
                                     f"leaf hash altered); {VERIFY}")
        # the entry bundle is made of the records, which are intact
        assert (await client.get("/tile/entries/000")).content == good["/tile/entries/000"]

        run_sql(store_url, "UPDATE ledger_leaves SET leaf_hash = ? WHERE log_id = 'replica-a' AND seq = 5",
                (merkle.leaf_hash((await ledger.leaf(5)).record),))  # type: ignore[union-attr]
        record = (await ledger.leaf(9)).record  # type: ignore[union-attr]
        forged = record.replace(b'"n":9', b'"n":8')
        run_sql(store_url, "UPDATE ledger_leaves SET record = ?, leaf_hash = ? WHERE log_id = 'replica-a' AND seq = 9",
                (forged, merkle.leaf_hash(forged)))
        r = await client.get("/tile/entries/000")
        assert r.status_code == 503, r.text
        assert r.json()["error"] == ("log replica-a: the store's stored hashes do not match its records at level 4 "
                                     f"index 0 (records 0..15); {VERIFY}")
    await ledger.close()


async def test_another_logs_tiles_stop_at_its_signed_checkpoint(store_url: str, tmp_path: Path) -> None:  # noqa: F811
    other = await open_log(store_url, tmp_path, n=300, beyond=30)
    await other.close()
    run_sql(store_url, "DELETE FROM ledger_checkpoints WHERE size > 300")  # replica-a: signed at 300, holds 330
    ledger = await Ledger.open(settings(replica="replica-b"), store_url, tmp_path)
    app = Starlette(routes=tile_routes(ledger, open_guard))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t/api/v1/audit/tiles/replica-a") as client:
        assert (await client.get("/tile/0/001.p/44")).status_code == 200
        r = await client.get("/tile/0/001.p/45")
        assert r.status_code == 404 and "beyond the log's 300 records covered by a signed checkpoint" in r.text
    await ledger.close()


@pytest.mark.parametrize("level, index", [(4, 1), (4, 7), (4, -1), (3, 0), (8, 0)])
async def test_a_stored_hash_no_record_accounts_for_fails_verify_naming_it(store_url: str, tmp_path: Path,  # noqa: F811
                                                                          level: int, index: int) -> None:
    """One stray `ledger_hashes` row (beyond what the records make, at a negative index, at a level the ledger
    does not store) passed `audit verify`, while the gateway refused to open the log over it and told its operator
    to run `audit verify`. Now verify fails and names the level."""
    config = await build(tmp_path, store_url, n=30, every=10)  # 30 records: level 4 holds index 0 only
    assert cli("audit", "verify", "--config", str(config))[0] == 0
    run_sql(store_url, "INSERT INTO ledger_hashes (log_id, level, idx, hash) VALUES ('replica-a', ?, ?, ?)",
            (level, index, bytes(32)))
    code, text = cli("audit", "verify", "--config", str(config))
    text = " ".join(text.split())
    assert code != 0 and f"stored hashes at level {level}" in text and "this is a bug" not in text, text


@pytest.mark.parametrize("edit", [
    "UPDATE ledger_checkpoints SET size = 'abc' WHERE size = 10",
    "UPDATE ledger_checkpoints SET size = 10.5 WHERE size = 10",  # was read as 10, and verified
    "UPDATE ledger_checkpoints SET size = 30.5 WHERE size = 30",  # the latest, which start-up reads too
    "UPDATE ledger_checkpoints SET note = CAST(note AS BLOB) WHERE size = 10",
    "UPDATE ledger_checkpoints SET root = hex(root) WHERE size = 10",
    "UPDATE ledger_leaves SET log_id = CAST(log_id AS BLOB) WHERE seq = 3",
    "UPDATE ledger_hashes SET level = 'x' WHERE level = 4 AND idx = 0",
])
async def test_a_column_of_the_wrong_type_is_named_not_a_bug(tmp_path: Path, edit: str) -> None:
    """SQLite keeps whatever type a DBA writes into a column; `audit verify` stopped with "unexpected … (this is a
    bug)" and reported no log. Now it fails, saying a row holds a value of the wrong type."""
    url = f"sqlite:///{tmp_path / 'data' / 'l.db'}"
    config = await build(tmp_path, url, n=30, every=10)
    run_sql(url, edit)
    code, text = cli("audit", "verify", "--config", str(config))
    text = " ".join(text.split())
    assert code == 1 and "this is a bug" not in text and ("wrong type" in text or "not text" in text), text
