"""A session's counts are of calls (one per request id), not records: a held call denied by an approver is
one call and one denial however many records it has; one approved is one call and no denial; a policy
denial is a call too; approval records of another session's call, shown in this one's replay, count there.
(`tests/integration/test_cli_operator_and_counts.py` checks the same on the demo's real records.)"""

from __future__ import annotations

from typing import Any

from ledgergate.audit.sessions import Entry, collect


def entries(*docs: dict[str, Any]) -> list[Entry]:
    return [Entry("gw", i, {"time": f"2026-01-01T00:00:{i:02d}Z", **d}) for i, d in enumerate(docs)]


def call(event: str, sid: str, rid: str, **kw: Any) -> dict[str, Any]:
    return {"event": event, "session": sid, "request_id": rid, "method": "tools/call", "target": "pay", **kw}


def test_a_held_call_denied_by_an_approver_is_one_call_and_one_denial() -> None:
    s = collect(entries(
        {"event": "session.opened", "session": "A"},
        call("approval.requested", "A", "r1", approval="apr_1"),
        call("approval.decided", "A", "r1", approval="apr_1", verdict="deny", operator=True),
        call("approval.denied", "A", "r1", approval="apr_1"),
        call("approval.refused", "A", "r1", approval="apr_1"),
        {"event": "session.closed", "session": "A"},
    ))["A"]
    assert (s.calls, s.denials, s.approvals) == (1, 1, 1)
    assert s.decisions == {"approve", "deny"}


def test_approved_allowed_and_policy_denied_calls() -> None:
    s = collect(entries(
        call("approval.requested", "A", "r1", approval="apr_1"),
        call("approval.decided", "A", "r1", approval="apr_1", verdict="approve"),
        call("approval.granted", "A", "r1", approval="apr_1"),
        call("rpc.request", "A", "r1", decision="approve"),
        call("rpc.response", "A", "r1"),
        call("rpc.request", "A", "r2"),
        call("rpc.response", "A", "r2"),
        call("policy.denied", "A", "r3", rule="no"),
        call("budget.exceeded", "A", "r4"),
    ))["A"]
    assert (s.calls, s.denials, s.approvals) == (4, 2, 1)


def test_another_sessions_approval_records_are_shown_but_not_counted_twice() -> None:
    found = collect(entries(
        call("approval.requested", "A", "r1", approval="apr_1"),
        call("approval.held", "B", "r9", approval="apr_1"),  # B asked the same call and joined A's approval
        call("approval.decided", "A", "r1", approval="apr_1", verdict="deny"),
        call("approval.denied", "A", "r1", approval="apr_1"),
        call("approval.refused", "B", "r9", approval="apr_1"),
    ))
    a, b = found["A"], found["B"]
    assert (a.calls, a.denials, a.approvals) == (1, 1, 1)
    assert (b.calls, b.denials, b.approvals) == (1, 1, 0)
    assert len(b.entries) == 5  # B's replay shows the approval's records from A
