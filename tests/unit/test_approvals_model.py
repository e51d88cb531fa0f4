"""The approval state machine as pure functions: who may decide, counting, reasons, expiry, execution."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import rfc8785

from ledgergate.approvals import model as m
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec

IDP = "http://idp.test"
ALICE = Principal(IDP, "alice", groups=frozenset({"staff", "approvers"}))  # requester, also an approver
BOB = Principal(IDP, "bob", groups=frozenset({"approvers"}))
CAROL = Principal(IDP, "carol", groups=frozenset({"approvers"}), claims={"preferred_username": "carol.c"})
MALLORY = Principal(IDP, "mallory", groups=frozenset({"staff"}))
NOW = 1_800_000_000.0
KEY = b"approval-arguments key for tests"


def pending(count: int = 1, **kw: object) -> m.Approval:
    args = {"a": 5000, "b": 1}
    b = m.binding_for(ALICE, "bank", "tools/call", "transfer", args, "large-transfers", "v1", KEY)
    base: dict[str, object] = dict(id=m.new_id(), binding=b, requester=ALICE.summary(), masked_args=args,
                                   approvers=ApproverSpec(("approvers",), (), count), created=NOW, expires=NOW + 3600)
    base.update(kw)
    return m.Approval(**base)  # type: ignore[arg-type]


def test_ids_are_128_random_bits_and_recognisable() -> None:
    ids = {m.new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(m.looks_like_id(i) and len(i) == 4 + 32 for i in ids)
    assert not m.looks_like_id("apr_" + "g" * 32) and not m.looks_like_id("apr_123")


def test_args_digest_is_a_keyed_hmac_of_rfc8785_and_ignores_key_order() -> None:
    """Keyed: the digest is published beside the masked preview, and a plain SHA-256 of the raw arguments let
    anyone who saw both guess a masked value back (leak probe H1: an SSN in 10^5 tries)."""
    args = {"b": [1, 2.5, "x"], "a": {"z": None, "é": True}}
    assert m.args_digest(args, KEY) == hmac.new(KEY, rfc8785.dumps(args), hashlib.sha256).hexdigest()
    assert m.args_digest(args, KEY) != hashlib.sha256(rfc8785.dumps(args)).hexdigest()
    assert m.args_digest(args, KEY) != m.args_digest(args, b"another key of thirty-two bytes!")
    assert m.args_digest({"a": {"é": True, "z": None}, "b": [1, 2.5, "x"]}, KEY) == m.args_digest(args, KEY)
    assert m.args_digest({"a": 1}, KEY) != m.args_digest({"a": 1.5}, KEY)
    assert m.args_digest(None, KEY) == m.args_digest({}, KEY)


def test_binding_changes_with_every_part() -> None:
    base = m.binding_for(ALICE, "bank", "tools/call", "transfer", {"a": 1}, "r", "v1", KEY)
    assert base == m.binding_for(ALICE, "bank", "tools/call", "transfer", {"a": 1}, "r", "v1", KEY)
    variants = [
        m.binding_for(BOB, "bank", "tools/call", "transfer", {"a": 1}, "r", "v1", KEY),
        m.binding_for(ALICE, "bank2", "tools/call", "transfer", {"a": 1}, "r", "v1", KEY),
        m.binding_for(ALICE, "bank", "prompts/get", "transfer", {"a": 1}, "r", "v1", KEY),
        m.binding_for(ALICE, "bank", "tools/call", "transfer2", {"a": 1}, "r", "v1", KEY),
        m.binding_for(ALICE, "bank", "tools/call", "transfer", {"a": 2}, "r", "v1", KEY),
        m.binding_for(ALICE, "bank", "tools/call", "transfer", {"a": 1}, "r2", "v1", KEY),
        m.binding_for(ALICE, "bank", "tools/call", "transfer", {"a": 1}, "r", "v2", KEY),
    ]
    keys = {base.key, *(v.key for v in variants)}
    assert len(keys) == 1 + len(variants)


def test_one_approval_grants_for_the_window() -> None:
    a = m.decide(pending(), BOB, "approve", "looks right", NOW + 10, 300)
    assert a.status == "approved" and a.granted_until == NOW + 310 and a.approvals == 1
    assert a.decisions[0].approver == BOB.key and a.decisions[0].preview_digest == m.preview_digest(a.masked_args)


@pytest.mark.parametrize("who", ["plain", "operator-subject", "operator-key"])
def test_requester_can_never_decide_their_own(who: str) -> None:
    decider = {"plain": ALICE, "operator-subject": m.operator_principal("alice"),
               "operator-key": m.operator_principal(ALICE.key)}[who]
    for verdict in ("approve", "deny"):
        with pytest.raises(m.NotAllowed, match="you requested this call"):
            m.decide(pending(), decider, verdict, "mine", NOW, 300)


def test_a_decider_outside_the_approver_groups_is_refused_but_a_named_subject_is_not() -> None:
    with pytest.raises(m.NotAllowed, match="not an approver"):
        m.decide(pending(), MALLORY, "approve", "ok", NOW, 300)
    named = pending(approvers=ApproverSpec((), ("mallory",), 1))
    assert m.decide(named, MALLORY, "approve", "ok", NOW, 300).status == "approved"
    by_key = pending(approvers=ApproverSpec((), (MALLORY.key,), 1))
    assert m.decide(by_key, MALLORY, "deny", "no", NOW, 300).status == "denied"


def test_someone_who_may_not_decide_learns_nothing_of_the_state() -> None:
    """Who may decide is checked first: a refusal to an outsider or the requester does not say whether the
    approval is pending, executed or expired (the approver still hears why a late decision fails)."""
    executed = m.execute(m.decide(pending(), BOB, "approve", "ok", NOW, 300), NOW + 1, "r1")
    for state, at in ((executed, NOW + 2), (pending(), NOW + 7200)):
        with pytest.raises(m.NotAllowed, match="not an approver"):
            m.decide(state, MALLORY, "deny", "x", at, 300)
        with pytest.raises(m.NotAllowed, match="you requested this call"):
            m.decide(state, ALICE, "deny", "x", at, 300)
        with pytest.raises(m.NotPending):
            m.decide(state, CAROL, "deny", "x", at, 300)


def test_count_two_needs_two_different_people() -> None:
    a = m.decide(pending(count=2), BOB, "approve", "fine", NOW, 300)
    assert a.status == "pending" and a.approvals == 1
    with pytest.raises(m.AlreadyDecided):
        m.decide(a, BOB, "approve", "again", NOW + 1, 300)
    # The same person under the operator identity does not count twice either.
    with pytest.raises(m.AlreadyDecided):
        m.decide(a, m.operator_principal("bob"), "approve", "again", NOW + 1, 300)
    a = m.decide(a, CAROL, "approve", "fine too", NOW + 2, 300)
    assert a.status == "approved" and [v.display for v in a.decisions] == ["bob", "carol.c"]


def test_one_deny_ends_it_even_after_approvals() -> None:
    a = m.decide(pending(count=2), BOB, "approve", "fine", NOW, 300)
    a = m.decide(a, CAROL, "deny", "amount is wrong", NOW + 1, 300)
    assert a.status == "denied" and "amount is wrong" in (a.close_reason or "")
    with pytest.raises(m.NotPending, match="is denied, not pending") as err:
        m.decide(a, m.operator_principal("dave"), "approve", "override", NOW + 2, 300)
    assert err.value.status == "denied" and err.value.http_status == 409


@pytest.mark.parametrize("reason", [None, "", "   ", 42, "x" * (m.MAX_REASON + 1), "ok\x00"])
def test_every_decision_needs_a_bounded_reason(reason: object) -> None:
    with pytest.raises(m.BadDecision):
        m.decide(pending(), BOB, "approve", reason, NOW, 300)


def test_unknown_verdict_is_refused() -> None:
    with pytest.raises(m.BadDecision, match="verdict"):
        m.decide(pending(), BOB, "maybe", "hmm", NOW, 300)


def test_expiry_is_a_denial_and_late_decisions_are_refused() -> None:
    a = pending()
    with pytest.raises(m.NotPending):
        m.expire(a, NOW + 3599)
    with pytest.raises(m.NotPending, match="expired"):
        m.decide(a, BOB, "approve", "late", NOW + 3600, 300)
    e = m.expire(a, NOW + 3600)
    assert e.status == "expired" and e.closed_at == NOW + 3600
    with pytest.raises(m.NotPending):
        m.expire(m.decide(a, BOB, "approve", "ok", NOW, 300), NOW + 4000)


def test_execute_once_within_the_window() -> None:
    a = m.decide(pending(), BOB, "approve", "ok", NOW, 300)
    with pytest.raises(m.NotPending, match="granted until"):
        m.execute(a, NOW + 300, "r1")
    x = m.execute(a, NOW + 299, "r1")
    assert (x.status, x.executed_request_id) == ("executed", "r1")
    with pytest.raises(m.NotPending, match="executed"):
        m.execute(x, NOW + 299, "r2")
    with pytest.raises(m.NotPending, match="pending"):
        m.execute(pending(), NOW, "r3")


def test_a_decision_about_other_arguments_than_shown_is_refused() -> None:
    a = pending()
    with pytest.raises(m.NotPending, match="other arguments"):
        m.decide(a, BOB, "approve", "ok", NOW, 300, shown_digest=m.preview_digest({"a": 1}))
    assert m.decide(a, BOB, "approve", "ok", NOW, 300, shown_digest=a.preview_digest).status == "approved"


def test_document_round_trip_keeps_everything() -> None:
    a = m.decide(pending(count=2, justification="month end", session="s1", request_id="r1"), BOB, "approve", "ok",
                 NOW, 300)
    back = m.Approval.from_doc(a.to_doc(), version=7)
    assert back == a and back.version == 7
    pub = a.public()
    assert pub["tool"] == "transfer" and pub["approvers"]["count"] == 2 and pub["decisions"][0]["reason"] == "ok"


def test_visibility() -> None:
    a = pending()
    auditor = Principal(IDP, "audrey", groups=frozenset({"auditors"}))
    assert m.may_see(a, ALICE, ["auditors"]) and m.may_see(a, BOB, ["auditors"])
    assert m.may_see(a, auditor, ["auditors"]) and not m.may_see(a, MALLORY, ["auditors"])


def test_settings_defaults_and_webhook_forms() -> None:
    s = ApprovalsSettings()
    assert (s.timeout, s.grant_window, s.hold) == (3600, 300, 50)
    s = ApprovalsSettings(webhooks=["https://hooks.example/x", {"url": "http://127.0.0.1:1/h", "format": "json",
                                                                  "secret": "0123456789abcdef"}])
    assert [(w.format, w.secret) for w in s.webhooks] == [("slack", None), ("json", "0123456789abcdef")]
    with pytest.raises(ValueError, match="needs a 'secret'"):
        ApprovalsSettings(webhooks=[{"url": "http://127.0.0.1:1/h", "format": "json"}])
    with pytest.raises(ValueError, match="http"):
        ApprovalsSettings(webhooks=["ftp://x"])


def test_a_rule_can_require_a_justification() -> None:
    from ledgergate.policy.engine import PolicyEngine
    from ledgergate.policy.settings import PolicyRuleSettings

    rules = [PolicyRuleSettings(name="staff", match={"groups": ["staff"]}, effect="allow"),
             PolicyRuleSettings(name="big", match={"tools": ["transfer"]}, effect="approve",
                                approvers={"groups": ["approvers"], "justification": "required"}),
             PolicyRuleSettings(name="small", match={"tools": ["refund"]}, effect="approve",
                                approvers={"groups": ["approvers"]})]
    engine = PolicyEngine.from_settings(rules, set())
    big = engine.decide(ALICE, "bank", "tools/call", "transfer", {}, NOW)
    small = engine.decide(ALICE, "bank", "tools/call", "refund", {}, NOW)
    assert big.approvers is not None and big.approvers.justification == "required"
    assert small.approvers is not None and small.approvers.justification == "optional"
    with pytest.raises(ValueError):
        PolicyRuleSettings(name="x", effect="approve", approvers={"groups": ["a"], "justification": "maybe"})


def test_policy_version_follows_the_rules_only() -> None:
    from ledgergate.config import load_config

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    a = load_config(root / "examples" / "ledgergate.yaml", env={"EVERYTHING_KEY": "x"}).settings
    b = load_config(root / "examples" / "ledgergate.yaml", env={"EVERYTHING_KEY": "y"}).settings
    assert m.policy_version(a.policies) == m.policy_version(b.policies)
    changed = [r.model_copy(update={"when": "args.a > 1001"}) if r.name == "large-sums-need-approval" else r
               for r in a.policies]
    assert m.policy_version(changed) != m.policy_version(a.policies)
    assert m.policy_version(a.policies).startswith("sha256:")


@pytest.mark.parametrize("reason", ["ok \u202edeifirev\u202c", "fine \u2066x\u2069", "sure \u200f", "ok \x9b31m",
                                    "ok \x85 next", "ok \x1b[31m"])
def test_a_reason_that_would_read_otherwise_than_it_is_refused(reason: str) -> None:
    """An approver's reason (or a requester's justification) with a bidi override read backwards beside
    the call; C1 controls (CSI, NEL) act on terminals. Both are refused, as C0 controls were."""
    with pytest.raises(m.BadDecision, match="control characters"):
        m.check_reason(reason)


@pytest.mark.parametrize("reason", ["matches ticket FIN-1182", "Müller approved by phone", "読む 🙂", "two\nlines"])
def test_ordinary_reasons_pass(reason: str) -> None:
    assert m.check_reason(reason) == reason
