"""`ledgergate approvals ...` as an operator runs it (a separate process) against real stores:
deciding, refusals with exit codes, records in the CLI's own ledger log, and waking a held call."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from ledgergate.approvals import model as m
from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec
from ledgergate.store.ledger_store import open_ledger_store
from tests.support.pg import throwaway_schema, url_for

pytestmark = pytest.mark.timeout(120)

ALICE = Principal("http://idp.test", "alice", groups=frozenset({"staff", "approvers"}))
CLI = [sys.executable, "-m", "ledgergate.cli"]


def write_config(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "ledgergate.yaml"
    path.write_text(f'storage: "{storage}"\n'
                    "audit:\n  signing_key: ./data/ledger.key\n  replica: gw\n  checkpoint_interval: 1h\n")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "approvals", *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


async def gateway_side(url: str, tmp_path: Path, **kw: Any) -> tuple[ApprovalService, Ledger]:
    led = await Ledger.open(AuditSettings(replica="gw", checkpoint_interval=0, signing_key="./data/ledger.key"),
                            url, tmp_path)
    svc = ApprovalService(open_store(url), led.append, ApprovalsSettings(), args_key=led.subkey("approval-arguments"),
                          **kw)
    await svc.start(background=False)
    return svc, led


async def ask(svc: ApprovalService, count: int = 1) -> m.Approval:
    return await svc.request(principal=ALICE, server="bank", method="tools/call", target="transfer",
                             arguments={"amount": 70000, "ssn": "123-45-6789"},
                             masked_args={"amount": 70000, "ssn": "***-**-6789"}, rule="big", policy_version="v1",
                             approvers=ApproverSpec(("approvers",), (), count), justification="quarter close",
                             session="sess-cli")


def cli_records(url: str) -> list[dict[str, Any]]:
    store = open_ledger_store(url)
    try:
        return [orjson.loads(r.record) for r in store.rows("gw-cli", 0, store.size("gw-cli"))]
    finally:
        store.close()


async def test_list_show_approve_deny_from_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    config = str(write_config(tmp_path, url))
    svc, led = await gateway_side(url, tmp_path)
    try:
        a = await ask(svc, count=2)
        b = await svc.request(principal=ALICE, server="bank", method="tools/call", target="close-account",
                              arguments={"id": 7}, masked_args={"id": 7}, rule="big", policy_version="v1",
                              approvers=ApproverSpec(("approvers",), (), 1))
    finally:
        await svc.close()
        await led.close()

    listed = cli("list", "--config", config, "--json")
    assert listed.returncode == 0, listed.stderr
    table = subprocess.run([*CLI, "approvals", "list", "--config", config], capture_output=True, text=True,
                           timeout=60, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})  # a narrow terminal:
    assert table.returncode == 0 and a.id in table.stdout and b.id in table.stdout, table.stdout  # ids whole
    assert {x["id"] for x in json.loads(listed.stdout)} == {a.id, b.id}
    shown = cli("show", a.id, "--config", config)
    assert shown.returncode == 0 and a.id in shown.stdout and "***-**-6789" in shown.stdout
    assert "123-45-6789" not in shown.stdout and "quarter close" in shown.stdout

    own = cli("approve", a.id, "--reason", "mine", "--by", "alice", "--config", config)
    assert own.returncode == 1 and "you requested this call" in own.stderr
    no_reason = cli("approve", a.id, "--reason", "  ", "--by", "bob", "--config", config)
    assert no_reason.returncode == 1 and "reason is required" in no_reason.stderr
    missing = cli("approve", a.id, "--by", "bob", "--config", config)
    assert missing.returncode == 2  # --reason is required by the command line itself

    one = cli("approve", a.id, "--reason", "invoice checked", "--by", "bob", "--config", config, "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["status"] == "pending" and json.loads(one.stdout)["approvals"] == 1
    twice = cli("approve", a.id, "--reason", "again", "--by", "bob", "--config", config)
    assert twice.returncode == 1 and "already decided" in twice.stderr
    two = cli("approve", a.id, "--reason", "second look", "--by", "carol", "--config", config)
    assert two.returncode == 0 and "now approved" in two.stdout
    late = cli("deny", a.id, "--reason", "too late", "--by", "dave", "--config", config)
    assert late.returncode == 1 and "approved, not pending" in late.stderr
    denied = cli("deny", b.id, "--reason", "account has a balance", "--by", "bob", "--config", config)
    assert denied.returncode == 0 and "denied" in denied.stdout
    unknown = cli("show", m.new_id(), "--config", config)
    assert unknown.returncode == 1 and "no approval" in unknown.stderr

    recs = cli_records(url)
    decided = [(r["approver"]["subject"], r["verdict"], r["reason"], r["operator"]) for r in recs
               if r["event"] == "approval.decided"]
    assert decided == [("bob", "approve", "invoice checked", True), ("carol", "approve", "second look", True),
                       ("bob", "deny", "account has a balance", True)]
    assert [r["event"] for r in recs if r["event"] in ("approval.granted", "approval.denied")] == [
        "approval.granted", "approval.denied"]
    verify = subprocess.run([*CLI, "audit", "verify", "--config", config], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # `audit export` of the requester's session carries its approval, from both logs, provably.
    bundle = tmp_path / "session.json"
    export = subprocess.run([*CLI, "audit", "export", "--config", config, "--session", "sess-cli", "-o", str(bundle)],
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stdout + export.stderr
    doc = json.loads(bundle.read_text())
    carried = sorted((entry["log"], json.loads(r)["event"]) for entry in doc["logs"] for r in entry["records"])
    assert carried == [("gw", "approval.requested"), ("gw-cli", "approval.decided"), ("gw-cli", "approval.decided"),
                       ("gw-cli", "approval.granted")]
    checked = subprocess.run([*CLI, "audit", "verify-bundle", str(bundle), "--public-key",
                              str(tmp_path / "data" / "ledger.key.pub")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_cli_decision_fails_closed_when_the_ledger_cannot_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    svc, led = await gateway_side(url, tmp_path)
    try:
        a = await ask(svc)
    finally:
        await svc.close()
        await led.close()
    (tmp_path / "blocker").write_text("a file where the key's directory should be")
    config = tmp_path / "broken.yaml"
    config.write_text(f'storage: "{url}"\naudit:\n  signing_key: ./blocker/ledger.key\n  replica: gw\n')
    r = cli("approve", a.id, "--reason", "ok", "--by", "bob", "--config", str(config))
    assert r.returncode == 3 and "ledger" in r.stderr and "Traceback" not in r.stderr, r.stderr
    svc, led = await gateway_side(url, tmp_path)
    try:
        assert (await svc.get(a.id)).status == "pending" and (await svc.get(a.id)).decisions == ()
    finally:
        await svc.close()
        await led.close()


@pytest.mark.postgres
async def test_postgres_a_cli_decision_wakes_the_held_call_at_once(tmp_path: Path) -> None:
    with throwaway_schema("lg_apr") as schema:
        url = url_for(schema)
        config = str(write_config(tmp_path, url))
        svc, led = await gateway_side(url, tmp_path, poll_interval=60)  # only the bus can wake it in time
        try:
            assert svc.listening
            a = await ask(svc)
            waiter = asyncio.create_task(svc.wait(a.id, 60))
            proc = await asyncio.create_subprocess_exec(*CLI, "approvals", "approve", a.id, "--reason", "ok",
                                                        "--by", "bob", "--config", config,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, stderr = await proc.communicate()
            finished = time.monotonic()
            assert proc.returncode == 0, stderr.decode()
            got = await asyncio.wait_for(waiter, 5)
            assert got.status == "approved" and time.monotonic() - finished < 0.5
        finally:
            await svc.close()
            await led.close()
