"""The approvals service on real stores (SQLite file and PostgreSQL) with the real ledger:
the state machine end to end, evidence, exactly-once execution, waiting across replicas, restart."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ledgergate.approvals import model as m
from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.audit import canonical
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.errors import LedgerUnavailable
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec
from ledgergate.store.ledger_store import open_ledger_store
from tests.support.pg import throwaway_schema, url_for

#: the approvals key of every service here (a deployment derives it from its HMAC key, `Ledger.subkey`)
ARGS_KEY = b"approval-arguments key for tests!"

pytestmark = pytest.mark.timeout(120)

IDP = "http://idp.test"
ALICE = Principal(IDP, "alice", groups=frozenset({"staff", "approvers"}))
BOB = Principal(IDP, "bob", groups=frozenset({"approvers"}))
CAROL = Principal(IDP, "carol", groups=frozenset({"approvers"}))
MALLORY = Principal(IDP, "mallory", groups=frozenset({"staff"}))
RAW = {"to": "DE89370400440532013000", "amount": 25000, "memo": "ssn 123-45-6789"}
MASKED = {"to": "DE89**************3000", "amount": 25000, "memo": "ssn ***-**-6789"}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
        return
    with throwaway_schema("lg_apr") as schema:
        yield url_for(schema)


@pytest.fixture
async def ledger(store_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    led = await Ledger.open(AuditSettings(replica="replica-a", checkpoint_interval=0), store_url, tmp_path)
    yield led
    await led.close()


async def service(url: str, ledger: Ledger, clock: Any = time.time, **kw: Any) -> ApprovalService:
    settings = kw.pop("settings", ApprovalsSettings(timeout=600, grant_window=60))
    svc = ApprovalService(open_store(url), ledger.append, settings, clock=clock, args_key=ARGS_KEY, **kw)
    await svc.start(background=False)
    return svc


def records(url: str, log_id: str = "replica-a") -> list[dict[str, Any]]:
    store = open_ledger_store(url)
    try:
        return [orjson.loads(r.record) for r in store.rows(log_id, 0, store.size(log_id))]
    finally:
        store.close()


async def ask(svc: ApprovalService, who: Principal = ALICE, args: Any = RAW, count: int = 1,
              **kw: Any) -> m.Approval:
    return await svc.request(principal=who, server="bank", method="tools/call", target="transfer", arguments=args,
                             masked_args=MASKED, rule="large-transfers", policy_version="v1",
                             approvers=ApproverSpec(("approvers",), (), count), session="sess-1",
                             request_id="req-1", **kw)


def binding(args: Any = RAW, who: Principal = ALICE) -> m.Binding:
    """The binding every ledger in this module's tests binds with: their HMAC keys are all this one."""
    return m.binding_for(who, "bank", "tools/call", "transfer", args, "large-transfers", "v1", ARGS_KEY)


async def test_request_is_recorded_masked_and_idempotent(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc)
        again = await ask(svc)
        assert again.id == a.id and a.status == "pending" and a.binding == binding()
        other = await ask(svc, args={**RAW, "amount": 25001})
        assert other.id != a.id
        listed = await svc.list(status="pending")
        assert {x.id for x in listed} == {a.id, other.id}
    finally:
        await svc.close()
    recs = [r for r in records(store_url) if r["event"] == "approval.requested"]
    assert [r["approval"] for r in recs] == [a.id, other.id]
    first = recs[0]
    assert first["args"] == MASKED and first["args_digest"] == m.args_digest(RAW, ARGS_KEY)
    assert first["args_digest"] != hashlib.sha256(canonical.dumps(RAW)).hexdigest()  # never a plain digest
    assert first["approvers"] == {"groups": ["approvers"], "subjects": [], "count": 1}
    assert first["rule"] == "large-transfers" and first["session"] == "sess-1" and first["request_id"] == "req-1"
    everything = b"".join(orjson.dumps(r) for r in records(store_url))
    assert b"123-45-6789" not in everything and b"DE89370400440532013000" not in everything


async def test_the_requester_never_decides_even_as_an_approver_and_outsiders_are_refused(
        store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc)
        with pytest.raises(m.NotAllowed, match="you requested this call"):
            await svc.decide(a.id, ALICE, "approve", "I trust me")
        with pytest.raises(m.NotAllowed, match="you requested this call"):
            await svc.decide(a.id, m.operator_principal("alice"), "approve", "cli as me")
        with pytest.raises(m.NotAllowed, match="not an approver"):
            await svc.decide(a.id, MALLORY, "approve", "why not")
        with pytest.raises(m.BadDecision, match="reason"):
            await svc.decide(a.id, BOB, "approve", "  ")
        with pytest.raises(m.ApprovalNotFound):
            await svc.decide(m.new_id(), BOB, "approve", "ok")
        assert (await svc.get(a.id)).status == "pending" and (await svc.get(a.id)).decisions == ()
    finally:
        await svc.close()
    assert not [r for r in records(store_url) if r["event"] == "approval.decided"]


async def test_count_two_needs_two_people_and_each_decision_is_recorded(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc, count=2)
        one = await svc.decide(a.id, BOB, "approve", "amount matches invoice 7781")
        assert one.status == "pending" and one.approvals == 1
        with pytest.raises(m.AlreadyDecided):
            await svc.decide(a.id, BOB, "approve", "really sure")
        two = await svc.decide(a.id, CAROL, "approve", "second pair of eyes", shown_digest=a.preview_digest)
        assert two.status == "approved" and two.granted_until is not None
        with pytest.raises(m.NotPending, match="approved, not pending"):
            await svc.decide(a.id, Principal(IDP, "dave", groups=frozenset({"approvers"})), "deny", "late")
    finally:
        await svc.close()
    recs = records(store_url)
    decided = [r for r in recs if r["event"] == "approval.decided"]
    assert [(r["approver"]["subject"], r["verdict"], r["reason"]) for r in decided] == [
        ("bob", "approve", "amount matches invoice 7781"), ("carol", "approve", "second pair of eyes")]
    assert all(r["preview_digest"] == m.preview_digest(MASKED) for r in decided)
    granted = [r for r in recs if r["event"] == "approval.granted"]
    assert len(granted) == 1 and granted[0]["approvals"] == 2
    # The decision record is durable before the grant: the ledger order is the order of effect.
    events = [r["event"] for r in recs]
    assert events.index("approval.granted") > max(i for i, e in enumerate(events) if e == "approval.decided")


async def test_one_deny_ends_it(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc, count=2)
        await svc.decide(a.id, BOB, "approve", "fine")
        d = await svc.decide(a.id, CAROL, "deny", "beneficiary not on the allow list")
        assert d.status == "denied" and "beneficiary" in (d.close_reason or "")
        with pytest.raises(m.NotPending, match="denied"):
            await svc.decide(a.id, Principal(IDP, "dave", groups=frozenset({"approvers"})), "approve", "override")
        assert await svc.claim_grant(binding(), "req-2") is None
    finally:
        await svc.close()
    assert [r["event"] for r in records(store_url) if r["event"].startswith("approval.d")] == [
        "approval.decided", "approval.decided", "approval.denied"]


async def test_expiry_is_a_recorded_denial(store_url: str, ledger: Ledger) -> None:
    clock = Clock()
    svc = await service(store_url, ledger, clock)
    try:
        a = await ask(svc)
        assert await svc.expire_due() == []
        clock.now += 601
        with pytest.raises(m.NotPending, match="expired"):
            await svc.decide(a.id, BOB, "approve", "too late")
        expired = await svc.expire_due()
        assert [x.id for x in expired] == [a.id] and (await svc.get(a.id)).status == "expired"
        assert await svc.expire_due() == []
        # Asking again for the same call after expiry makes a new approval.
        again = await ask(svc)
        assert again.id != a.id and again.status == "pending"
    finally:
        await svc.close()
    exp = [r for r in records(store_url) if r["event"] == "approval.expired"]
    assert len(exp) == 1 and exp[0]["approval"] == a.id and "no decision before" in exp[0]["close_reason"]


async def test_the_background_sweep_expires_and_wakes_the_waiter(store_url: str, ledger: Ledger) -> None:
    svc = ApprovalService(open_store(store_url), ledger.append,
                          ApprovalsSettings(timeout=0.3), expire_interval=0.05, args_key=ARGS_KEY)
    await svc.start()
    try:
        a = await ask(svc)
        started = time.monotonic()
        done = await svc.wait(a.id, 10)
        assert done.status == "expired" and time.monotonic() - started < 2
    finally:
        await svc.close()


async def test_a_grant_runs_exactly_once_under_concurrency(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc)
        assert await svc.claim_grant(binding(), "early") is None  # pending: nothing to run yet
        await svc.decide(a.id, BOB, "approve", "ok")
        assert await svc.claim_grant(binding({**RAW, "amount": 1}), "changed") is None
        assert await svc.claim_grant(binding(who=BOB), "someone-else") is None
        results = await asyncio.gather(*(svc.claim_grant(binding(), f"req-{i}") for i in range(20)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0].id == a.id and winners[0].status == "executed"
        assert await svc.claim_grant(binding(), "replay") is None
        stored = await svc.get(a.id)
        assert stored.status == "executed" and stored.executed_request_id == winners[0].executed_request_id
    finally:
        await svc.close()
    ex = [r for r in records(store_url) if r["event"] == "approval.executed"]
    assert len(ex) == 1 and ex[0]["request_id"] == winners[0].executed_request_id
    assert ex[0]["approved_request_id"] == "req-1"


async def test_a_grant_closes_after_its_window(store_url: str, ledger: Ledger) -> None:
    clock = Clock()
    svc = await service(store_url, ledger, clock)
    try:
        a = await ask(svc)
        await svc.decide(a.id, BOB, "approve", "ok")
        clock.now += 61
        assert await svc.claim_grant(binding(), "too-late") is None
    finally:
        await svc.close()


async def test_wait_returns_as_soon_as_decided_and_on_timeout(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc)
        started = time.monotonic()
        still = await svc.wait(a.id, 0.2)
        assert still.status == "pending" and 0.19 <= time.monotonic() - started < 1.5
        waiter = asyncio.create_task(svc.wait(a.id, 30))
        await asyncio.sleep(0.05)
        assert not waiter.done() and svc.waiting == 1
        decided_at = time.monotonic()
        await svc.decide(a.id, BOB, "approve", "ok")
        got = await asyncio.wait_for(waiter, 5)
        woke = time.monotonic() - decided_at
        assert got.status == "approved" and woke < 0.1, woke
        assert svc.waiting == 0
        with pytest.raises(m.ApprovalNotFound):
            await svc.wait(m.new_id(), 1)
    finally:
        await svc.close()


async def test_approvals_survive_a_restart(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    a = await ask(svc, count=2)
    await svc.decide(a.id, BOB, "approve", "first")
    await svc.close()
    svc = await service(store_url, ledger)
    try:
        back = await svc.get(a.id)
        assert back.status == "pending" and back.approvals == 1 and back.masked_args == MASKED
        assert (await ask(svc, count=2)).id == a.id
        assert (await svc.decide(a.id, CAROL, "approve", "second")).status == "approved"
    finally:
        await svc.close()


async def test_nothing_is_applied_when_the_ledger_cannot_record(store_url: str, tmp_path: Path) -> None:
    led = await Ledger.open(AuditSettings(replica="replica-a", checkpoint_interval=0), store_url, tmp_path)
    svc = await service(store_url, led)
    try:
        a = await ask(svc)
        await led.close()
        with pytest.raises(LedgerUnavailable):
            await svc.decide(a.id, BOB, "approve", "ok")
        assert (await svc.get(a.id)).status == "pending" and (await svc.get(a.id)).decisions == ()
        with pytest.raises(LedgerUnavailable):
            await ask(svc, args={"other": 1})
        assert [x.id for x in await svc.list()] == [a.id]
    finally:
        await svc.close()


async def test_nothing_is_applied_when_the_store_refuses_and_the_ledger_says_so(
        store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc)
        refuse_updates(store_url)
        with pytest.raises(m.ApprovalUnavailable):
            await svc.decide(a.id, BOB, "approve", "ok")
        assert (await svc.get(a.id)).status == "pending"
        assert await svc.claim_grant(binding(), "r") is None
    finally:
        await svc.close()
    events = [r["event"] for r in records(store_url)]
    assert events[-2:] == ["approval.granted", "approval.void"]


def refuse_updates(url: str) -> None:
    """Make the database itself reject writes to the approvals table (as a read-only replica would)."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
        conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON approvals BEGIN SELECT RAISE(ABORT, 'read-only'); END")
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'read-only'; END $$ "
                     "LANGUAGE plpgsql")
        conn.execute("CREATE TRIGGER refuse BEFORE UPDATE ON approvals FOR EACH ROW EXECUTE FUNCTION refuse()")


async def test_sqlite_a_decision_from_another_process_is_picked_up_by_the_poll(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    led = await Ledger.open(AuditSettings(replica="replica-a", checkpoint_interval=0), url, tmp_path)
    gateway = await service(url, led, poll_interval=0.1)
    cli = await service(url, led)  # another store connection: as the CLI has
    try:
        a = await ask(gateway)
        waiter = asyncio.create_task(gateway.wait(a.id, 30))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await cli.decide(a.id, m.operator_principal("bob"), "approve", "from the CLI")
        got = await asyncio.wait_for(waiter, 5)
        assert got.status == "approved" and time.monotonic() - started < 1.0
        assert got.decisions[0].operator
    finally:
        await cli.close()
        await gateway.close()
        await led.close()


@pytest.mark.postgres
async def test_postgres_a_decision_on_one_replica_wakes_the_other_promptly(tmp_path: Path) -> None:
    with throwaway_schema("lg_apr") as schema:
        url = url_for(schema)
        led_a = await Ledger.open(AuditSettings(replica="a", checkpoint_interval=0), url, tmp_path / "a")
        led_b = await Ledger.open(AuditSettings(replica="b", checkpoint_interval=0), url, tmp_path / "b")
        # A long poll interval: only the bus can wake the waiter in time.
        a = await service(url, led_a, poll_interval=60)
        b = await service(url, led_b, poll_interval=60)
        try:
            assert a.listening and b.listening
            timings = []
            for _ in range(5):
                ap = await ask(a, args={"n": len(timings)})
                waiter = asyncio.create_task(a.wait(ap.id, 30))
                await asyncio.sleep(0.05)
                started = time.monotonic()
                await b.decide(ap.id, BOB, "approve", "ok from replica b")
                got = await asyncio.wait_for(waiter, 5)
                timings.append(time.monotonic() - started)
                assert got.status == "approved"
            assert max(timings) < 0.5, timings
            # The granted call runs once, wherever the retries land.
            ap = await ask(a, args={"race": True})
            await b.decide(ap.id, CAROL, "approve", "ok")
            results = await asyncio.gather(*(svc.claim_grant(binding({"race": True}), f"r{i}")
                                             for i in range(20) for svc in (a, b)))
            assert sum(r is not None for r in results) == 1
        finally:
            await a.close()
            await b.close()
            await led_a.close()
            await led_b.close()


@pytest.mark.postgres
async def test_postgres_claims_from_two_processes_run_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    with throwaway_schema("lg_apr") as schema:
        url = url_for(schema)
        led = await Ledger.open(AuditSettings(replica="a", checkpoint_interval=0), url, tmp_path)
        svc = await service(url, led)
        try:
            ap = await ask(svc)
            await svc.decide(ap.id, BOB, "approve", "ok")
            script = (
                "import sys, time\n"
                "from ledgergate.approvals import model as m\n"
                "from ledgergate.approvals.service import open_store\n"
                "store = open_store(sys.argv[1]); store.open()\n"
                "while time.time() < float(sys.argv[3]): pass\n"
                "now = time.time()\n"
                "got = store.claim(sys.argv[2], now, lambda a: m.execute(a, now, 'proc'))\n"
                "print('won' if got else 'lost')\n")
            start_at = str(time.time() + 1.5)
            procs = [subprocess.Popen([sys.executable, "-c", script, url, binding().key, start_at],
                                      stdout=subprocess.PIPE, text=True) for _ in range(4)]
            outs = [p.communicate(timeout=30)[0].strip() for p in procs]
            assert sorted(outs) == ["lost", "lost", "lost", "won"], outs
            assert (await svc.get(ap.id)).status == "executed"
        finally:
            await svc.close()
            await led.close()


@pytest.mark.postgres
async def test_postgres_store_reconnects_after_its_connection_is_killed(tmp_path: Path) -> None:
    import psycopg

    with throwaway_schema("lg_apr") as schema:
        url = url_for(schema)
        led = await Ledger.open(AuditSettings(replica="a", checkpoint_interval=0), url, tmp_path)
        svc = await service(url, led)
        try:
            a = await ask(svc)
            pid = svc.store._conn.info.backend_pid  # noqa: SLF001 - the one connection to cut
            with psycopg.connect(url, autocommit=True) as admin:
                killed = admin.execute("SELECT pg_terminate_backend(pid), application_name FROM pg_stat_activity "
                                       "WHERE pid = %s", (pid,)).fetchone()
            assert killed == (True, "ledgergate-approvals")
            assert (await svc.decide(a.id, BOB, "approve", "after a reconnect")).status == "approved"
            assert (await svc.latest(binding())).status == "approved"  # type: ignore[union-attr]
        finally:
            await svc.close()
            await led.close()


async def test_latest_names_the_outcome_of_the_same_call(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        assert await svc.latest(binding()) is None
        a = await ask(svc)
        await svc.decide(a.id, BOB, "deny", "no")
        latest = await svc.latest(binding())
        assert latest is not None and latest.id == a.id and latest.status == "denied"
        assert await svc.latest(binding({"other": 1})) is None
    finally:
        await svc.close()


async def test_a_required_justification_is_asked_for_and_recorded(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    strict = ApproverSpec(("approvers",), (), 1, "required")
    try:
        with pytest.raises(m.BadDecision, match="needs a justification"):
            await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer", arguments=RAW,
                              masked_args=MASKED, rule="large-transfers", policy_version="v1", approvers=strict)
        with pytest.raises(m.BadDecision, match="justification"):
            await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer", arguments=RAW,
                              masked_args=MASKED, rule="large-transfers", policy_version="v1", approvers=strict,
                              justification="   ")
        a = await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer", arguments=RAW,
                              masked_args=MASKED, rule="large-transfers", policy_version="v1", approvers=strict,
                              justification="payroll for March")
        assert a.justification == "payroll for March"
    finally:
        await svc.close()
    [rec] = [r for r in records(store_url) if r["event"] == "approval.requested"]
    assert rec["justification"] == "payroll for March"


async def test_identical_concurrent_requests_make_one_approval_and_one_record(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    other = await service(store_url, ledger)  # a second instance: another replica's connection
    try:
        got = await asyncio.gather(*(ask(s) for _ in range(10) for s in (svc, other)))
        assert len({a.id for a in got}) == 1
    finally:
        await svc.close()
        await other.close()
    events = [r["event"] for r in records(store_url)]
    requested = events.count("approval.requested")
    # Within a process identical requests queue behind one another; across instances the loser's record
    # is followed by a void record naming the one that stood.
    assert requested in (1, 2) and events.count("approval.void") == requested - 1


async def test_closing_releases_waiters_with_an_error(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    a = await ask(svc)
    waiter = asyncio.create_task(svc.wait(a.id, 60))
    await asyncio.sleep(0.05)
    await svc.close()
    with pytest.raises(m.ApprovalUnavailable, match="shutting down"):
        await asyncio.wait_for(waiter, 5)
    again = await service(store_url, ledger)
    try:
        assert (await again.get(a.id)).status == "pending"
    finally:
        await again.close()


async def test_the_stage_flow_admit_hold_decide_run_once(store_url: str, ledger: Ledger) -> None:
    """What the approval stage does: admit, hold, then run the call once; a retry joins the same approval;
    changed arguments need a new one; after it ran, the identical call needs a new approval too."""
    svc = await service(store_url, ledger)

    async def admit(args: Any, request_id: str) -> tuple[m.Approval, bool]:
        return await svc.admit(principal=ALICE, server="bank", method="tools/call", target="transfer",
                               arguments=args, masked_args=MASKED, rule="large-transfers", policy_version="v1",
                               approvers=ApproverSpec(("approvers",), (), 1), session="s", request_id=request_id)
    try:
        held, run = await admit(RAW, "r1")
        assert not run and held.status == "pending"
        assert "waits for approval " + held.id in m.describe_pending(held, "https://gw/ui/approvals")
        assert f"https://gw/ui/approvals/{held.id}" in m.describe_pending(held, "https://gw/ui/approvals")
        retry, run = await admit(RAW, "r2")
        assert (retry.id, run) == (held.id, False)
        changed, run = await admit({**RAW, "amount": 25001}, "r3")
        assert changed.id != held.id and not run
        waiter = asyncio.create_task(svc.wait(held.id, 30))
        await svc.decide(held.id, BOB, "approve", "ok")
        assert (await waiter).status == "approved"
        ran = await svc.claim_grant(held.binding, "r1")
        assert ran is not None and ran.status == "executed"
        again, run = await admit(RAW, "r4")
        assert not run and again.id not in (held.id, changed.id)
        assert "already used by request r1" in m.describe_outcome(await svc.get(held.id))
        await svc.decide(again.id, CAROL, "deny", "once is enough")
        assert "denied by carol: once is enough" in m.describe_outcome(await svc.get(again.id))
    finally:
        await svc.close()


async def test_cancel_is_recorded_wakes_the_waiter_and_ends_the_approval(store_url: str, ledger: Ledger) -> None:
    svc = await service(store_url, ledger)
    try:
        a = await ask(svc)
        waiter = asyncio.create_task(svc.wait(a.id, 30))
        await asyncio.sleep(0.02)
        with pytest.raises(m.BadDecision):
            await svc.cancel(a.id, "")
        c = await svc.cancel(a.id, "the client went away")
        assert c.status == "cancelled" and (await asyncio.wait_for(waiter, 5)).status == "cancelled"
        with pytest.raises(m.NotPending, match="cancelled"):
            await svc.decide(a.id, BOB, "approve", "late")
        with pytest.raises(m.NotPending, match="cancelled"):
            await svc.cancel(a.id, "again")
    finally:
        await svc.close()
    [rec] = [r for r in records(store_url) if r["event"] == "approval.cancelled"]
    assert rec["reason"] == "the client went away"


@pytest.mark.parametrize("huge", [10**30, -(10**25), 2**64, 2**63])
async def test_arguments_with_integers_beyond_64_bits_are_held_and_kept_exactly(store_url: str, ledger: Ledger,
                                                                               huge: int) -> None:
    """JSON lets a caller send any integer, and the gateway reads it exactly; the approvals store once wrote
    its document with orjson, which cannot, and answered a valid call with 503 "store unavailable"."""
    svc = await service(store_url, ledger)
    args = {**RAW, "amount": huge, "nested": [{"n": huge}]}
    try:
        a = await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer", arguments=args,
                              masked_args={**MASKED, "amount": huge}, rule="large-transfers", policy_version="v1",
                              approvers=ApproverSpec(("approvers",), (), 1), session="sess-1", request_id="req-1")
        assert a.status == "pending"
    finally:
        await svc.close()
    svc = await service(store_url, ledger)  # read back from the store, not from memory
    try:
        back = await svc.get(a.id)
        assert back.masked_args["amount"] == huge and type(back.masked_args["amount"]) is int
        assert back.binding == binding(args)
    finally:
        await svc.close()


async def test_paging_visits_every_approval_once_in_order_even_with_equal_times(store_url: str,
                                                                                ledger: Ledger) -> None:
    """Keyset paging over (created, id): approvals made in the same instant (a fixed clock) are
    neither skipped nor repeated between pages, on either engine."""
    svc = await service(store_url, ledger, clock=Clock())
    try:
        made = [await ask(svc, args={**RAW, "amount": n}) for n in range(25)]
        whole = await svc.list(status="pending", limit=1000)
        assert sorted(a.id for a in whole) == sorted(a.id for a in made)
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = await svc.page("pending", 7, lambda a: True, cursor)
            seen += [a.id for a in page]
            if cursor is None:
                break
        assert seen == [a.id for a in whole]
        # a reader who may see few of many: each call reads at most `scan` rows, and the cursor goes on
        wanted = {made[3].id, made[17].id, made[24].id}
        found: list[str] = []
        calls = 0
        cursor = None
        while True:
            page, cursor = await svc.page("pending", 100, lambda a: a.id in wanted, cursor, scan=6)
            calls += 1
            assert len(page) <= 100
            found += [a.id for a in page]
            if cursor is None:
                break
        assert sorted(found) == sorted(wanted) and calls >= 25 // 6
        assert m.Cursor.parse(m.Cursor(made[0].created, made[0].id).token()) == m.Cursor(made[0].created, made[0].id)
    finally:
        await svc.close()


@pytest.mark.parametrize("token", ["", "x", "not-base64!", "AAAA", "MS4wL2Fw", "bmFuL2Fw", "a" * 300,
                                   "MS4wL2FwXzAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA", "ｘ"])
def test_a_cursor_not_handed_out_is_a_precise_refusal(token: str) -> None:
    with pytest.raises(m.BadDecision, match="cursor is not one a listing handed out"):
        m.Cursor.parse(token)


async def test_one_requester_may_have_at_most_max_pending_approvals_waiting(store_url: str, ledger: Ledger) -> None:
    """One identity filed 3,000 pending approvals in 18 s (DoS probe D4): the approvers' inbox is buried and
    the store grows without bound. Past `approvals.max_pending` a new one is refused (429); the same call
    again still finds its own, another requester is not affected, and a decision frees a place."""
    svc = await service(store_url, ledger, settings=ApprovalsSettings(max_pending=3))
    try:
        made = [await ask(svc, args={**RAW, "amount": 20000 + i}) for i in range(3)]
        with pytest.raises(m.TooManyPending) as refused:
            await ask(svc, args={**RAW, "amount": 30000})
        assert refused.value.http_status == 429 and "approvals.max_pending" in refused.value.message
        assert (await ask(svc, args={**RAW, "amount": 20000})).id == made[0].id  # its own, already waiting
        assert (await ask(svc, who=BOB, args={**RAW, "amount": 30000})).status == "pending"
        await svc.decide(made[0].id, CAROL, "deny", "not this one")
        assert (await ask(svc, args={**RAW, "amount": 30000})).status == "pending"
    finally:
        await svc.close()
