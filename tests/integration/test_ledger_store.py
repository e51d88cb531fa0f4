"""The ledger on real stores (SQLite file and PostgreSQL): durability, group commit,
restart, proofs, several logs, REST routes, and failing closed."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from ledgergate.api.audit import audit_routes
from ledgergate.audit import merkle
from ledgergate.audit.checkpoint import load_verifier, open_checkpoint
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.audit.verify import verify_store
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.ledger_store import LeafColumns, open_ledger_store
from tests.support.pg import PG, throwaway_schema, url_for

pytestmark = pytest.mark.timeout(120)

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
        return
    with throwaway_schema("lg_test") as schema:
        yield url_for(schema)


def run_sql(url: str, statement: str, params: tuple = ()) -> None:  # noqa: ANN001
    """Tamper with the store the way a database administrator could."""
    from ledgergate.store.ledger_store import open_ledger_store

    store = open_ledger_store(url)
    try:
        store._tx(lambda: store.conn.execute(store._q(statement), params))  # noqa: SLF001
    finally:
        store.close()


def leaf_columns(seqs: list[int], session: str | None = None) -> LeafColumns:
    """A batch of placeholder leaves at `seqs`, as the ledger's writer hands them to a store."""
    n = len(seqs)
    return LeafColumns(seqs, ["t"] * n, ["e"] * n, [session] * n, [bytes(32)] * n, [b"{}"] * n)


def settings(**kw: object) -> AuditSettings:
    base = {"replica": "replica-a", "witnesses": ["file://./data/witness.log"], "checkpoint_interval": 0}
    base.update(kw)
    return AuditSettings(**base)


async def test_append_restart_and_checkpoint(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    assert ledger.log_id == "replica-a" and ledger.size == 0
    digest = ledger.hmac({"ssn": "123-45-6789"})
    assert len(digest) == 64 and digest == ledger.hmac({"ssn": "123-45-6789"})
    idx = await ledger.append("rpc.request", {"session": "s1", "tool": "echo", "args": {"m": "x"}, "args_hmac": digest})
    assert idx == 0
    note = await ledger.checkpoint()
    verifier = load_verifier(tmp_path / "data" / "ledger.key.pub")
    cp = open_checkpoint(note, verifier)
    assert (cp.origin, cp.size) == ("ledgergate/replica-a", 1)
    await ledger.append("rpc.response", {"session": "s1", "latency_ms": 1.5})
    root2 = ledger.root()
    await ledger.close()  # final checkpoint at size 2

    again = await Ledger.open(settings(), store_url, tmp_path)
    assert again.size == 2 and again.root() == root2
    assert await again.append("session.closed", {"session": "s1"}) == 2
    row = await again.leaf(1)
    doc = orjson.loads(row.record)
    assert doc["v"] == 1 and doc["seq"] == 1 and doc["log"] == "replica-a" and doc["event"] == "rpc.response"
    assert doc["time"].endswith("Z") and len(doc["time"]) == len("2025-01-01T00:00:00.000000Z")
    await again.close()

    witness = (tmp_path / "data" / "witness.log").read_text()
    from ledgergate.audit.checkpoint import split_notes

    sizes = [open_checkpoint(n, verifier).size for n in split_notes(witness)]
    assert sizes == [1, 2, 3]
    store = open_ledger_store(store_url, tmp_path)
    try:
        [report] = verify_store(store, verifier, [])
    finally:
        store.close()
    assert report.ok and report.size == 3 and report.covered == 3


async def test_group_commit_many_writers(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(max_batch=64), store_url, tmp_path)
    got = await asyncio.gather(*(ledger.append("rpc.request", {"session": f"s{i % 7}", "n": i}) for i in range(500)))
    assert sorted(got) == list(range(500))
    leaves = [(await ledger.leaf(i)).leaf_hash for i in (0, 499)]
    assert leaves[0] == merkle.leaf_hash((await ledger.leaf(0)).record)
    # every proof the ledger hands out verifies against the root of that size
    for index, size in ((0, 1), (7, 13), (250, 500), (499, 500)):
        proof = await ledger.inclusion_proof(index, size)
        leaf = (await ledger.leaf(index)).leaf_hash
        assert merkle.verify_inclusion(index, size, leaf, proof, await ledger.root_at(size))
    proof = await ledger.consistency_proof(123, 500)
    assert merkle.verify_consistency(123, 500, await ledger.root_at(123), ledger.root(), proof)
    await ledger.close()


async def test_index_columns_keep_awkward_text(store_url: str, tmp_path: Path) -> None:
    """Sessions and events with quotes, backslashes, percent signs, semicolons and non-ASCII text
    come back byte for byte in the index columns (PostgreSQL writes a batch as one query of
    literals), in one batch with records without a session."""
    odd = ["o'brien", "back\\slash", "50% ; DROP TABLE ledger_leaves; --", '"dq"', "ünï 😀", "E'x'", "$1 %s"]
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    got = await asyncio.gather(*(ledger.append(f"ev.{s}", {"session": s, "n": i}) for i, s in enumerate(odd)),
                               ledger.append("rpc.request", {"n": -1}))
    await ledger.close()
    store = open_ledger_store(store_url, tmp_path)
    try:
        rows = {r.seq: r for r in store.rows("replica-a", 0, len(odd) + 1)}
        [report] = verify_store(store, load_verifier(tmp_path / "data" / "ledger.key.pub"), [])
    finally:
        store.close()
    for i, s in enumerate(odd):
        assert (rows[got[i]].session, rows[got[i]].event) == (s, f"ev.{s}")
        assert orjson.loads(rows[got[i]].record)["session"] == s
    assert rows[got[-1]].session is None
    assert report.ok and report.size == len(odd) + 1


def test_a_failing_batch_commits_none_of_its_rows(store_url: str, tmp_path: Path) -> None:
    """A batch is one transaction on both engines (PostgreSQL sends it as one query): when its
    interior hashes cannot be written, none of its leaves are either, and the next batch goes in."""
    from ledgergate.store.ledger_store import StoreError

    store = open_ledger_store(store_url, tmp_path)
    try:
        store.init_schema()
        h = bytes(32)

        def leaves(start: int) -> LeafColumns:
            return leaf_columns(list(range(start, start + 16)))

        store.append_columns("x", leaves(0), [(4, 0, h)])
        with pytest.raises(StoreError):
            store.append_columns("x", leaves(16), [(4, 0, h)])  # that hash is stored already
        assert store.size("x") == 16 and store.count("x") == 16
        store.append_columns("x", leaves(16), [(4, 1, h)])
        assert store.size("x") == 32 and store.count("x") == 32
    finally:
        store.close()


def test_a_batch_without_interior_hashes_is_all_or_nothing_and_durable_on_return(store_url: str, tmp_path: Path) -> None:
    """Most batches complete no stored interior hash; SQLite writes those as one autocommit statement.
    It must keep what the transaction gave: a row that cannot go in keeps the whole batch out, what
    returned is committed (another connection reads it, no transaction is left open), and a batch
    too large for one statement still goes in whole."""
    from ledgergate.store.ledger_store import StoreError

    def leaves(seqs: list[int]) -> LeafColumns:
        return leaf_columns(seqs, "s")

    store = open_ledger_store(store_url, tmp_path)
    other = open_ledger_store(store_url, tmp_path)
    try:
        store.init_schema()
        store.append_columns("x", leaves(list(range(5))))
        assert other.count("x") == 5 and not getattr(store.conn, "in_transaction", False)
        with pytest.raises(StoreError):
            store.append_columns("x", leaves([5, 6, 2, 7]))  # seq 2 is taken: 5, 6 and 7 stay out too
        assert other.count("x") == 5 and store.size("x") == 5
        store.append_columns("x", leaves(list(range(5, 2005))))  # more rows than one statement takes
        assert other.count("x") == 2005 and other.size("x") == 2005
        assert [r.seq for r in other.rows("x", 2000, 2010)] == list(range(2000, 2005))
    finally:
        store.close()
        other.close()


def test_store_errors_never_quote_the_failing_row(store_url: str, tmp_path: Path) -> None:
    """A failed write is logged ("ledger write failed, failing closed: ...") and shown by readiness, so
    its message may name the error, never the values of the batch. PostgreSQL's own error text goes
    on with a DETAIL line that quotes the whole failing row, record bytes included."""
    from ledgergate.store.ledger_store import StoreError

    store = open_ledger_store(store_url, tmp_path)
    try:
        store.init_schema()
        record = b'{"note":"needle-4111111111111111"}'
        bad = LeafColumns([0, 1], ["t", "t"], ["e", None], ["needle-session"] * 2, [bytes(32)] * 2, [record] * 2)
        for nodes in ([], [(4, 0, b"\x07" * 32)]):
            with pytest.raises(StoreError) as failed:
                store.append_columns("x", bad, nodes)  # type: ignore[arg-type]  # event NULL: NOT NULL fails
            text = str(failed.value)
            assert "null" in text.lower() and "event" in text
            for value in ("needle", record.hex(), "7b22", "Failing row"):
                assert value not in text
        assert store.count("x") == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_error_text_is_the_primary_message_only() -> None:
    """The text every store puts in its errors (`db.error_text`), from a real PostgreSQL error whose
    DETAIL quotes the row: the message and SQLSTATE stay, the row does not."""
    import psycopg

    from ledgergate.store.db import error_text

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE t (a text NOT NULL, b text)")
        with pytest.raises(psycopg.Error) as failed:
            conn.execute("INSERT INTO t VALUES (NULL, 'needle-secret')")
    assert "needle-secret" in str(failed.value)  # what psycopg itself says, DETAIL included
    text = error_text(failed.value)
    assert "needle-secret" not in text and "Failing row" not in text
    assert "not-null constraint" in text and "23502" in text


@pytest.mark.postgres
def test_postgres_batch_goes_in_once_after_the_server_forgot_its_statement(tmp_path: Path) -> None:
    """Batches are prepared statements, prepared once per connection. A server session that no longer
    has them (DEALLOCATE ALL, or a pooler handing the connection another session) gets them prepared
    again, and the batch goes in exactly once: a call naming an unknown statement did nothing."""
    with throwaway_schema("lg_test") as schema:
        store = open_ledger_store(url_for(schema), tmp_path)
        try:
            store.init_schema()
            h = bytes(32)
            store.append_columns("x", leaf_columns(list(range(3))))
            store.append_columns("x", leaf_columns(list(range(3, 16))), [(4, 0, h)])
            store.conn.execute("DEALLOCATE ALL")
            store.append_columns("x", leaf_columns(list(range(16, 20))))
            store.append_columns("x", leaf_columns(list(range(20, 32))), [(4, 1, h)])
            assert store.count("x") == 32 and store.size("x") == 32
            assert [r.seq for r in store.rows("x", 0, 100)] == list(range(32))
            prepared = {r[0] for r in store.conn.execute("SELECT name FROM pg_prepared_statements")}
            assert {"lg_append_leaves", "lg_append_leaves_nodes"} <= prepared
        finally:
            store.close()


def test_sqlite_commits_a_batch_without_interior_hashes_in_one_statement(tmp_path: Path) -> None:
    """The point of that path: one call into SQLite per batch (the writer thread lets go of the
    interpreter lock once, not per statement); a batch with an interior hash keeps its transaction."""
    store = open_ledger_store(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    try:
        store.init_schema()
        seen: list[str] = []
        store.conn.set_trace_callback(seen.append)
        h = bytes(32)
        store.append_columns("x", leaf_columns(list(range(3))))
        assert len(seen) == 1 and seen[0].startswith("INSERT INTO ledger_leaves")
        seen.clear()
        store.append_columns("x", leaf_columns(list(range(3, 16))), [(4, 0, h)])
        assert seen[0].startswith("BEGIN") and seen[-1] == "COMMIT"
        assert store.count("x") == 16
    finally:
        store.close()


def test_sqlite_batches_fit_a_library_that_binds_fewer_parameters(tmp_path: Path) -> None:
    """SQLite before 3.32 binds at most 999 parameters a statement (124 rows of 8). A batch must never
    be refused for that: one too large for a statement goes in through the transaction instead."""
    import sqlite3

    store = open_ledger_store(f"sqlite:///{tmp_path / 'l.db'}", tmp_path)
    try:
        store.init_schema()
        store.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        for start, n in ((0, 124), (124, 125), (249, 512)):
            store.append_columns("x", leaf_columns(list(range(start, start + n))))
        assert store.count("x") == 761 and store.size("x") == 761
    finally:
        store.close()


def test_sqlite_one_statement_batch_waits_for_another_writer_of_the_file(tmp_path: Path) -> None:
    """Other stores may share the ledger's SQLite file. A batch that finds the file's write lock taken
    waits for it (busy_timeout), as `BEGIN IMMEDIATE` did, instead of failing the records' callers;
    and writes by another connection between batches never make a batch fail."""
    import sqlite3
    import threading

    leaves = leaf_columns
    path = tmp_path / "l.db"
    store = open_ledger_store(f"sqlite:///{path}", tmp_path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        store.init_schema()
        store.append_columns("x", leaves([0]))
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO ledger_probes VALUES ('y', 'now')")
            locked.set()
            release.wait(10)
            other.execute("COMMIT")

        holder = threading.Thread(target=hold)
        holder.start()
        assert locked.wait(10)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        store.append_columns("x", leaves([1, 2]))
        assert time.monotonic() - started >= 0.25  # it waited for the lock, then went in
        holder.join(10)
        for i in range(50):
            other.execute("INSERT OR REPLACE INTO ledger_probes VALUES ('z', ?)", (str(i),))
            store.append_columns("x", leaves([3 + i]))
        assert store.count("x") == 53
    finally:
        other.close()
        store.close()


async def test_several_logs_in_one_store(store_url: str, tmp_path: Path) -> None:
    a = await Ledger.open(settings(replica="replica-a"), store_url, tmp_path)
    b = await Ledger.open(settings(replica="replica-b"), store_url, tmp_path)
    await asyncio.gather(*(x.append("rpc.request", {"n": i}) for i in range(20) for x in (a, b)))
    await a.close()
    await b.close()
    store = open_ledger_store(store_url, tmp_path)
    try:
        reports = verify_store(store, load_verifier(tmp_path / "data" / "ledger.key.pub"), [])
    finally:
        store.close()
    assert [(r.log_id, r.size, r.ok) for r in reports] == [("replica-a", 20, True), ("replica-b", 20, True)]


async def test_rest_routes(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    for i in range(11):
        await ledger.append("rpc.request", {"n": i})
    await ledger.checkpoint()
    app = Starlette(routes=audit_routes(ledger))
    verifier = load_verifier(tmp_path / "data" / "ledger.key.pub")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/api/v1/audit/checkpoint")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        cp = open_checkpoint(r.text, verifier)
        assert cp.size == 11
        r = await client.get("/api/v1/audit/proof/inclusion", params={"index": 4, "size": 11})
        body = r.json()
        proof = [base64.b64decode(p) for p in body["proof"]]
        leaf = merkle.leaf_hash(body["record"].encode())
        assert merkle.verify_inclusion(4, 11, leaf, proof, cp.root)
        r = await client.get("/api/v1/audit/proof/consistency", params={"from": 3, "to": 11})
        proof = [base64.b64decode(p) for p in r.json()["proof"]]
        assert merkle.verify_consistency(3, 11, await ledger.root_at(3), cp.root, proof)
        assert (await client.get("/api/v1/audit/proof/inclusion", params={"index": 11, "size": 11})).status_code == 400
        assert (await client.get("/api/v1/audit/proof/inclusion", params={"index": "x"})).status_code == 400
        assert (await client.get("/api/v1/audit/proof/consistency", params={"from": 3, "to": 99})).status_code == 400
    await ledger.close()


async def test_periodic_checkpoints_only_when_grown(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(checkpoint_interval=0.1), store_url, tmp_path)
    await ledger.append("config.reloaded", {"by": "test"})
    await asyncio.sleep(0.5)
    store = open_ledger_store(store_url, tmp_path)
    try:
        assert [c.size for c in store.checkpoints("replica-a")] == [1]
    finally:
        store.close()
    await ledger.close()


async def test_reserved_and_non_json_fields_fail_only_their_caller(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    with pytest.raises(ValueError):
        await ledger.append("rpc.request", {"seq": 5})
    results = await asyncio.gather(ledger.append("rpc.request", {"x": object()}),
                                   ledger.append("rpc.request", {"x": 1}), return_exceptions=True)
    assert isinstance(results[0], ValueError) and results[1] == 0
    await ledger.close()


async def test_refusing_postgres_fails_closed_promptly(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable):
        await Ledger.open(settings(), "postgresql://postgres@127.0.0.1:1/test", tmp_path)
    assert time.monotonic() - started < 10


async def test_sqlite_directory_removed_fails_closed(tmp_path: Path) -> None:
    data = tmp_path / "db"
    ledger = await Ledger.open(settings(), f"sqlite:///{data / 'l.db'}", tmp_path)
    await ledger.append("rpc.request", {"n": 1})
    shutil.rmtree(data)
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable):
        await ledger.append("rpc.request", {"n": 2})
    with pytest.raises(LedgerUnavailable):
        await ledger.append("rpc.request", {"n": 3})
    assert time.monotonic() - started < 5
    assert ledger.size == 1
    await ledger.close()


async def test_sqlite_read_only_file_fails_closed(tmp_path: Path) -> None:
    db = tmp_path / "ro" / "l.db"
    ledger = await Ledger.open(settings(), f"sqlite:///{db}", tmp_path)
    await ledger.append("rpc.request", {"n": 1})
    await ledger.close()
    os.chmod(db, 0o444)  # root ignores mode bits, so also replace the file under the open handle
    ledger = await Ledger.open(settings(), f"sqlite:///{db}", tmp_path)
    backup = db.with_suffix(".bak")
    shutil.copy(db, backup)
    os.replace(backup, db)  # same path, new file: the open handle no longer writes where anyone looks
    with pytest.raises(LedgerUnavailable):
        await ledger.append("rpc.request", {"n": 2})
    await ledger.close()


@pytest.mark.postgres
async def test_postgres_connection_lost_then_back(tmp_path: Path) -> None:

    import psycopg

    with throwaway_schema("lg_test") as schema:
        await _connection_lost_then_back(tmp_path, schema, psycopg)


async def _connection_lost_then_back(tmp_path: Path, schema: str, psycopg) -> None:  # noqa: ANN001
    app_name = f"lg_kill_{schema}"
    url = url_for(schema, application_name=app_name)
    ledger = await Ledger.open(settings(), url, tmp_path)
    try:
        await ledger.append("rpc.request", {"n": 1})
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                         (app_name,))
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable):
            await ledger.append("rpc.request", {"n": 2})
        assert time.monotonic() - started < 10
        assert await ledger.append("rpc.request", {"n": 3}) == 1  # reconnected, nothing skipped
    finally:
        await ledger.close()


class WriteLock:
    """Another session holding the lock the ledger's writer needs, as a long transaction or a DBA would:
    SQLite's write lock (BEGIN IMMEDIATE) or an EXCLUSIVE lock on PostgreSQL's leaf table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = None

    def __enter__(self) -> WriteLock:
        if self.url.startswith("sqlite:///"):
            import sqlite3

            self.conn = sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.conn = psycopg.connect(self.url, autocommit=True)
            self.conn.execute("BEGIN")
            self.conn.execute("LOCK TABLE ledger_leaves IN EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


async def records(url: str, tmp_path: Path) -> list[dict]:
    store = open_ledger_store(url, tmp_path)
    try:
        return [orjson.loads(r.record) for r in store.rows("replica-a", 0, 1 << 30)]
    finally:
        store.close()


async def test_timed_out_append_never_commits_or_is_followed_by_a_refusal(store_url: str, tmp_path: Path) -> None:
    """Issue 20 item 5: a caller told "the ledger could not record" must not find its record in the log as if
    it had been allowed. A record still queued when it times out is never written; one already in a stalled
    transaction that commits later is followed by an `append.abandoned` record naming it."""
    ledger = await Ledger.open(settings(append_timeout=0.6), store_url, tmp_path)
    try:
        assert await ledger.append("rpc.request", {"session": "warm", "n": 0}) == 0
        with WriteLock(store_url):
            in_flight = asyncio.create_task(ledger.append("rpc.request", {"session": "sA", "n": 1}))
            await asyncio.sleep(0.2)  # the writer has taken it and waits for the lock
            queued = asyncio.create_task(ledger.append("rpc.request", {"session": "sB", "n": 2}))
            cancelled = asyncio.create_task(ledger.append("session.opened", {"session": "sC", "n": 3}))
            await asyncio.sleep(0.1)
            cancelled.cancel()
            started = time.monotonic()
            for task in (in_flight, queued):
                with pytest.raises(LedgerUnavailable):
                    await task
            assert time.monotonic() - started < 2, "the caller is answered by its deadline, not the store's"
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            await asyncio.sleep(0.5)
        # the stalled transaction goes through now; later appends follow its follow-up
        assert await ledger.append("rpc.request", {"session": "sD", "n": 4}) == 3
        docs = await records(store_url, tmp_path)
        assert [(d["seq"], d["event"], d.get("n"), d.get("session")) for d in docs] == [
            (0, "rpc.request", 0, "warm"),
            (1, "rpc.request", 1, "sA"),
            (2, "append.abandoned", None, "sA"),
            (3, "rpc.request", 4, "sD"),
        ]
        assert (docs[2]["abandoned_seq"], docs[2]["abandoned_event"], docs[2]["reason"]) == (1, "rpc.request", "timeout")
    finally:
        await ledger.close()
    store = open_ledger_store(store_url, tmp_path)
    try:
        [report] = verify_store(store, load_verifier(tmp_path / "data" / "ledger.key.pub"), [])
    finally:
        store.close()
    assert report.ok and report.size == 4, report.problems


async def test_cancelled_in_flight_append_is_followed_by_a_refusal(store_url: str, tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(append_timeout=5), store_url, tmp_path)
    try:
        with WriteLock(store_url):
            task = asyncio.create_task(ledger.append("rpc.response", {"session": "s1", "n": 1}))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await ledger.append("rpc.request", {"n": 2}) == 2
        docs = await records(store_url, tmp_path)
        assert [(d["event"], d.get("abandoned_seq"), d.get("reason")) for d in docs] == [
            ("rpc.response", None, None), ("append.abandoned", 0, "cancelled"), ("rpc.request", None, None)]
    finally:
        await ledger.close()


async def wait_for(predicate, timeout: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


@pytest.mark.postgres
async def test_readiness_follows_the_store_without_traffic(tmp_path: Path) -> None:
    """Issue 20 item 6: readiness goes bad when the store cannot write, even with no request coming
    (an idle probe write finds it), and comes back once it can."""
    import secrets

    import psycopg

    role = f"lg_rd_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    ledger = await Ledger.open(settings(), f"postgresql://{role}@127.0.0.1:5432/test?options=-csearch_path%3D{role}",
                               tmp_path)
    ledger.probe_idle = 0.2
    try:
        await ledger.append("rpc.request", {"n": 1})
        assert ledger.readiness() == "ok"
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {role} NOLOGIN")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        assert await wait_for(lambda: ledger.readiness() != "ok"), "no request came, yet the store is gone"
        assert "terminat" in ledger.readiness() or "not permitted" in ledger.readiness(), ledger.readiness()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {role} LOGIN")
        assert await wait_for(lambda: ledger.readiness() == "ok"), ledger.readiness()
        assert await ledger.append("rpc.request", {"n": 2}) == 1
    finally:
        await ledger.close()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {role} LOGIN")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            admin.execute(f"DROP SCHEMA {role} CASCADE")
            admin.execute(f"DROP ROLE {role}")


async def test_readiness_on_sqlite_file_replaced_without_traffic(tmp_path: Path) -> None:
    db = tmp_path / "rd" / "l.db"
    ledger = await Ledger.open(settings(), f"sqlite:///{db}", tmp_path)
    ledger.probe_idle = 0.2
    try:
        await ledger.append("rpc.request", {"n": 1})
        await asyncio.sleep(0.5)  # idle probes succeed
        assert ledger.readiness() == "ok"
        backup = db.with_suffix(".bak")
        shutil.copy(db, backup)
        os.replace(backup, db)
        assert await wait_for(lambda: ledger.readiness() != "ok")
        assert "replaced" in ledger.readiness(), ledger.readiness()
    finally:
        await ledger.close()


async def test_readiness_bad_after_failed_write_and_while_a_follow_up_is_owed(store_url: str,
                                                                               tmp_path: Path) -> None:
    ledger = await Ledger.open(settings(append_timeout=0.4), store_url, tmp_path)
    try:
        assert ledger.readiness() == "ok"
        with WriteLock(store_url):
            with pytest.raises(LedgerUnavailable):
                await ledger.append("rpc.request", {"n": 1})
            assert "not made durable" in ledger.readiness()
            await asyncio.sleep(0.3)
            assert ledger.readiness() != "ok"
        assert await wait_for(lambda: ledger.readiness() == "ok")
        assert [d["event"] for d in await records(store_url, tmp_path)] == ["rpc.request", "append.abandoned"]
    finally:
        await ledger.close()
