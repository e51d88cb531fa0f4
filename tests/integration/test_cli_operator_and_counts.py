"""Against `ledgergate demo` (gateway, bank server, development issuer): alice's large transfer is held for
an approval and carol, who is not an approver, denies it from the CLI.

- A session's counts are of calls, not records: the held-then-denied call is 1 call and 1 denial (it has
  four records: `approval.requested`, `approval.decided`, `approval.denied`, `approval.refused`), in
  `sessions list`, `sessions show`, `sessions replay` and the console's Sessions table and replay page.
- `--by carol` is an unverified operator label: every view of the decision says
  "carol (CLI operator, unverified)" — `approvals show`, `sessions replay` (text and JSON), the console's
  replay page and its approvals inbox."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from ledgergate.approvals.model import Approval
from ledgergate.approvals.service import ApprovalService
from ledgergate.policy.decision import ApproverSpec
from ledgergate.principal import Principal
from tests.integration.test_console_offboarding import in_demo_store, sign_in
from tests.support.client import connect
from tests.support.demo import Demo, start_demo

pytestmark = pytest.mark.timeout(240)

MARK = "carol (CLI operator, unverified)"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("operator"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def denied(demo: Demo) -> dict[str, Any]:
    """alice's held transfer, denied by carol from the CLI: its approval id and session id."""
    async def work() -> str:
        async with connect(demo.url, demo.tokens["alice"], "legacy") as client:
            call = asyncio.create_task(client.call_tool(
                "transfer_funds", {"from_account": "A-2004", "to_account": "A-2002", "amount": 12500}))
            approval_id = None
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {demo.tokens['bob']}"}) as bob:
                for _ in range(300):
                    listed = (await bob.get(f"{demo.base}/api/v1/approvals",
                                            params={"status": "pending"})).json()["approvals"]
                    if listed:
                        approval_id = listed[0]["id"]
                        break
                    await asyncio.sleep(0.1)
            assert approval_id is not None
            run = await asyncio.to_thread(demo.cli, "approvals", "deny", approval_id, "--reason", "not today",
                                          "--by", "carol", "--config", str(demo.config))
            assert run.returncode == 0, run.stdout + run.stderr
            with pytest.raises(MCPError):
                await asyncio.wait_for(call, 30)
        return approval_id

    approval_id = asyncio.run(work())
    records = demo.records()
    session = next(r["session"] for r in records if r.get("approval") == approval_id
                   and r["event"] == "approval.requested")
    mine = [r for r in records if r.get("session") == session]
    return {"approval": approval_id, "session": session, "records": mine}


def test_the_records_are_four_about_one_call(denied: dict[str, Any]) -> None:
    about = [r for r in denied["records"] if r.get("approval") == denied["approval"]]
    assert {r["event"] for r in about} >= {"approval.requested", "approval.decided", "approval.denied",
                                           "approval.refused"}
    assert len({r["request_id"] for r in about}) == 1
    decided = next(r for r in about if r["event"] == "approval.decided")
    assert decided["operator"] is True and decided["approver"]["issuer"] == "ledgergate-cli"


def test_a_held_call_denied_by_an_approver_is_one_call_and_one_denial(demo: Demo, denied: dict[str, Any]) -> None:
    sid, cfg = denied["session"], str(demo.config)
    listed = demo.cli("sessions", "list", "--config", cfg, "--json")
    assert listed.returncode == 0, listed.stderr
    mine = next(s for s in json.loads(listed.stdout) if s["session"] == sid)
    assert (mine["calls"], mine["denials"], mine["approvals"]) == (1, 1, 1), mine
    assert mine["records"] >= 4
    show = demo.cli("sessions", "show", "--config", cfg, "--", sid)
    assert show.returncode == 0, show.stderr
    assert "calls 1, denials 1, approvals 1" in show.stdout, show.stdout
    table = demo.cli("sessions", "list", "--config", cfg)
    assert "once per request id" in table.stdout  # the table says what it counts
    replay = demo.cli("sessions", "replay", "--config", cfg, "--by", "auditor-ann", "--", sid)
    assert replay.returncode == 0, replay.stderr
    assert "1 calls, 1 denials, 1 approvals" in replay.stdout
    console = sign_in(demo, "bob")
    page = console.get("/ui/sessions", params={"principal": "alice"})
    assert page.status_code == 200
    row = next(r for r in re.findall(r"<tr>.*?</tr>", page.text, re.DOTALL) if f"/ui/sessions/{sid}" in r)
    assert [int(n) for n in re.findall(r'<td class="num[^"]*">(\d+)</td>', row)] == [1, 1, 1], row
    assert 'id="sessions-counts-defined"' in page.text
    replayed = console.get(f"/ui/sessions/{sid}")
    assert replayed.status_code == 200 and "1 calls · 1 denials · 1 approvals" in replayed.text


def test_a_cli_decision_is_marked_unverified_everywhere_it_is_shown(demo: Demo, denied: dict[str, Any]) -> None:
    cfg = str(demo.config)
    shown = demo.cli("approvals", "show", denied["approval"], "--config", cfg)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"deny\s+carol \(CLI operator, unverified\) at", shown.stdout), shown.stdout
    replay = demo.cli("sessions", "replay", "--config", cfg, "--", denied["session"])
    assert f"by={MARK}" in replay.stdout, replay.stdout
    doc = json.loads(demo.cli("sessions", "replay", "--config", cfg, "--json", "--", denied["session"]).stdout)
    step = next(st for st in doc["timeline"] if st["event"] == "approval.decided")
    assert step["approver"] == MARK and step["approver_cli"] is True
    console = sign_in(demo, "bob")
    page = console.get(f"/ui/sessions/{denied['session']}")
    assert page.status_code == 200 and f"by <b>{MARK}</b>" in page.text


def test_a_pending_approval_shows_its_cli_decision_in_the_console_inbox(demo: Demo) -> None:
    async def ask(svc: ApprovalService) -> str:
        a: Approval = await svc.request(
            principal=Principal(demo.base, "alice", groups=frozenset({"analysts"})), server="bank",
            method="tools/call", target="transfer_funds", arguments={"amount": 20000},
            masked_args={"amount": 20000}, rule="large-transfers-need-approval", policy_version="v1",
            approvers=ApproverSpec(("approvers",), (), 2))
        return a.id

    made = in_demo_store(demo, ask)
    run = demo.cli("approvals", "approve", made, "--reason", "looks fine", "--by", "carol", "--config",
                   str(demo.config))
    assert run.returncode == 0 and "carol (CLI operator, unverified)" in run.stdout, run.stdout + run.stderr
    inbox = sign_in(demo, "bob").get(f"/ui/approvals/{made}")
    assert inbox.status_code == 200
    article = re.search(rf'<article[^>]*data-id="{made}".*?</article>', inbox.text, re.DOTALL)
    assert article is not None and f"approve by <b>{MARK}</b>" in article.group(0), inbox.text[-3000:]
