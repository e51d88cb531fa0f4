"""Policy engine: table tests for matching, precedence, CEL, housekeeping, and the example config."""

from __future__ import annotations

import time

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ledgergate.config import load_config
from ledgergate.principal import Principal
from ledgergate.policy.cel import MAX_VALUE_DEPTH
from ledgergate.policy.decision import ApproverSpec
from ledgergate.policy.engine import PolicyEngine
from ledgergate.policy.rules import request_target
from ledgergate.policy.settings import PolicyRuleSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ledgergate.yaml"
NOON = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc).timestamp()


def P(subject: str = "alice", groups: tuple[str, ...] = (), kind: str = "human", **claims: Any) -> Principal:
    return Principal(issuer="https://idp", subject=subject, kind=kind, groups=frozenset(groups), claims=claims)  # type: ignore[arg-type]


def engine(*rules: dict[str, Any], profiles: set[str] | None = None) -> PolicyEngine:
    return PolicyEngine.from_settings([PolicyRuleSettings.model_validate(r) for r in rules], profiles)


STAFF = P("alice", ("staff",))
CONTRACTOR = P("bob", ("contractors",))
APPROVER = P("carol", ("approvers",))
STAFF_CONTRACTOR = P("dave", ("staff", "contractors"))
NOBODY = P("eve")


# --- the example configuration (DESIGN.md) -----------------------------------------


@pytest.fixture(scope="module")
def example() -> PolicyEngine:
    settings = load_config(EXAMPLE, env={"EVERYTHING_KEY": "k"}).settings
    return PolicyEngine.from_settings(settings.policies, set(settings.masking.profiles))


@pytest.mark.parametrize(
    ("who", "tool", "args", "effect", "rule", "mask"),
    [
        (STAFF, "echo", {"message": "hi"}, "allow", "staff-read", "standard"),
        (STAFF, "get-structured-content", {"location": "NYC"}, "allow", "staff-read", "standard"),
        (STAFF, "get-sum", {"a": 5, "b": 6}, "allow", "staff-read", "standard"),
        (STAFF, "get-sum", {"a": 1000, "b": 6}, "allow", "staff-read", "standard"),
        (STAFF, "get-sum", {"a": 1001, "b": 6}, "approve", "large-sums-need-approval", "standard"),
        (STAFF, "get-sum", {"a": 1000.5, "b": 6}, "approve", "large-sums-need-approval", "standard"),
        # a condition that cannot be evaluated never downgrades approve to allow
        (STAFF, "get-sum", {"b": 6}, "approve", "large-sums-need-approval", "standard"),
        (STAFF, "get-sum", {"a": "5000", "b": 6}, "approve", "large-sums-need-approval", "standard"),
        (STAFF, "get-sum", {"a": True, "b": 6}, "approve", "large-sums-need-approval", "standard"),
        (STAFF, "get-env", {}, "deny", None, None),
        (STAFF, "toggle-simulated-logging", {}, "deny", None, None),
        (CONTRACTOR, "get-env", {}, "deny", "no-env-for-contractors", None),
        (CONTRACTOR, "echo", {"message": "hi"}, "deny", None, None),
        (CONTRACTOR, "get-sum", {"a": 5, "b": 6}, "deny", None, None),
        (CONTRACTOR, "get-sum", {"a": 5000, "b": 6}, "deny", None, None),  # approve guards, never grants
        (APPROVER, "get-sum", {"a": 5000, "b": 6}, "deny", None, None),
        (APPROVER, "echo", {"message": "hi"}, "deny", None, None),
        (STAFF_CONTRACTOR, "get-env", {}, "deny", "no-env-for-contractors", None),
        (STAFF_CONTRACTOR, "echo", {"message": "x"}, "allow", "staff-read", "standard"),
        (NOBODY, "echo", {"message": "x"}, "deny", None, None),
    ],
)
def test_example_config_meaning(
    example: PolicyEngine, who: Principal, tool: str, args: dict[str, Any], effect: str, rule: str | None, mask: str | None
) -> None:
    d = example.decide(who, "everything", "tools/call", tool, args, NOON)
    assert (d.effect, d.rule, d.mask) == (effect, rule, mask), d.reason
    if effect == "approve":
        assert d.approvers == ApproverSpec(groups=("approvers",), subjects=(), count=1)
        assert d.matched == ("staff-read", "large-sums-need-approval")


def test_example_other_server_is_denied(example: PolicyEngine) -> None:
    assert example.decide(STAFF, "other", "tools/call", "echo", {}, NOON).effect == "deny"
    assert example.decide(STAFF, "other", "initialize", None, None, NOON).effect == "deny"


def test_example_tools_list_shows_each_caller_what_it_may_call(example: PolicyEngine) -> None:
    tools = [{"name": n} for n in ("echo", "get-sum", "get-env", "get-structured-content", "toggle-simulated-logging")]
    names = lambda who: [t["name"] for t in example.filter_list(who, "everything", "tools/list", tools, NOON)]  # noqa: E731
    assert names(STAFF) == ["echo", "get-sum", "get-structured-content"]
    assert names(CONTRACTOR) == []
    assert names(APPROVER) == []
    assert names(STAFF_CONTRACTOR) == ["echo", "get-sum", "get-structured-content"]


def test_example_housekeeping(example: PolicyEngine) -> None:
    for method in ("initialize", "ping", "server/discover", "tools/list", "notifications/initialized",
                   "resources/list", "prompts/list", "logging/setLevel"):
        note = method.startswith("notifications/")  # sent as a notification, as clients send it
        d = example.decide(STAFF, "everything", method, None, None, NOON, note)
        assert (d.effect, d.rule) == ("allow", "staff-read"), (method, d.reason)
        assert example.decide(CONTRACTOR, "everything", method, None, None, NOON, note).effect == "deny"
        assert example.decide(NOBODY, "everything", method, None, None, NOON, note).effect == "deny"


def test_example_server_to_client_refused(example: PolicyEngine) -> None:
    for method in ("sampling/createMessage", "elicitation/create", "roots/list"):
        d = example.decide(STAFF, "everything", method, None, {}, NOON)
        assert d.effect == "deny" and "server-to-client" in d.reason


# --- matching ---------------------------------------------------------------------

MATCH_CASES: list[tuple[dict[str, Any], Principal, str, str, str | None, bool]] = [
    # match, principal, server, method, target, matches?
    ({}, NOBODY, "s", "tools/call", "x", True),
    ({"groups": ["staff"]}, STAFF, "s", "tools/call", "x", True),
    ({"groups": ["staff"]}, CONTRACTOR, "s", "tools/call", "x", False),
    ({"groups": ["staff", "contractors"]}, CONTRACTOR, "s", "tools/call", "x", True),
    ({"groups": ["st*"]}, STAFF, "s", "tools/call", "x", False),  # groups are exact names
    ({"subjects": ["ali*"]}, STAFF, "s", "tools/call", "x", True),
    ({"subjects": ["bob"]}, STAFF, "s", "tools/call", "x", False),
    ({"kinds": ["service"]}, STAFF, "s", "tools/call", "x", False),
    ({"kinds": ["service"]}, P("ci", kind="service"), "s", "tools/call", "x", True),
    ({"servers": ["prod-*"]}, STAFF, "prod-db", "tools/call", "x", True),
    ({"servers": ["prod-*"]}, STAFF, "dev-db", "tools/call", "x", False),
    ({"servers": ["Prod"]}, STAFF, "prod", "tools/call", "x", False),  # case-sensitive
    ({"tools": ["get-*"]}, STAFF, "s", "tools/call", "get-sum", True),
    ({"tools": ["get-*"]}, STAFF, "s", "tools/call", "echo", False),
    ({"tools": ["echo"]}, STAFF, "s", "tools/list", None, False),  # a tools rule covers tools/call only
    ({"tools": ["echo"]}, STAFF, "s", "initialize", None, False),
    ({"tools": ["echo"]}, STAFF, "s", "prompts/get", "echo", False),
    ({"tools": ["*"], "methods": ["tasks/get"]}, STAFF, "s", "tasks/get", "echo", True),  # methods says otherwise
    ({"resources": ["file:///docs/*"]}, STAFF, "s", "resources/read", "file:///docs/a.md", True),
    ({"resources": ["file:///docs/*"]}, STAFF, "s", "resources/subscribe", "file:///docs/a.md", True),
    ({"resources": ["file:///docs/*"]}, STAFF, "s", "resources/read", "file:///etc/passwd", False),
    ({"resources": ["file:///docs/*"]}, STAFF, "s", "tools/call", "file:///docs/a.md", False),
    ({"prompts": ["greet"]}, STAFF, "s", "prompts/get", "greet", True),
    ({"prompts": ["greet"]}, STAFF, "s", "completion/complete", "ref/prompt:greet", True),
    ({"prompts": ["greet"]}, STAFF, "s", "completion/complete", "ref/resource:greet", False),
    ({"resources": ["test://*"]}, STAFF, "s", "completion/complete", "ref/resource:test://static/{id}", True),
    ({"methods": ["tools/*"]}, STAFF, "s", "tools/list", None, True),
    ({"methods": ["tools/call"]}, STAFF, "s", "tools/list", None, False),
    ({"methods": ["*"]}, STAFF, "s", "sampling/createMessage", None, False),  # must be named
    ({"methods": ["sampling/*"]}, STAFF, "s", "sampling/createMessage", None, True),
    ({"methods": ["elicitation/create"]}, STAFF, "s", "elicitation/create", None, True),
    ({}, STAFF, "s", "roots/list", None, False),
    ({"groups": ["staff"], "tools": ["echo"], "servers": ["s"]}, STAFF, "s", "tools/call", "echo", True),
    ({"groups": ["staff"], "tools": ["echo"], "servers": ["t"]}, STAFF, "s", "tools/call", "echo", False),
    ({"tools": ["echo"], "prompts": ["echo"]}, STAFF, "s", "prompts/get", "echo", True),
    ({"tools": ["a[bc]"]}, STAFF, "s", "tools/call", "ac", True),
]


@pytest.mark.parametrize(("match", "who", "server", "method", "target", "expected"), MATCH_CASES)
def test_match_fields(match: dict[str, Any], who: Principal, server: str, method: str, target: str | None,
                      expected: bool) -> None:
    e = engine({"name": "r", "match": match, "effect": "deny"})
    d = e.decide(who, server, method, target, {}, NOON)
    assert (d.matched == ("r",)) is expected, d.reason
    # the explanation (reference matcher) agrees with the indexed one
    trace = e.explain(who, server, method, target, {}, NOON).traces[0]
    assert (trace.status == "matched") is expected, trace.detail


def test_precedence_deny_beats_approve_beats_allow() -> None:
    rules = [
        {"name": "allow-all", "effect": "allow", "mask": "m1"},
        {"name": "approve-sum", "match": {"tools": ["sum"]}, "effect": "approve", "approvers": {"groups": ["a"]}},
        {"name": "deny-rm", "match": {"tools": ["rm", "sum"]}, "when": "has(args.force)", "effect": "deny"},
        {"name": "allow-again", "effect": "allow", "mask": "m2"},
    ]
    e = engine(*rules)
    d = e.decide(STAFF, "s", "tools/call", "echo", {}, NOON)
    assert (d.effect, d.rule, d.mask, d.matched) == ("allow", "allow-all", "m1", ("allow-all", "allow-again"))
    d = e.decide(STAFF, "s", "tools/call", "sum", {}, NOON)
    assert (d.effect, d.rule, d.mask) == ("approve", "approve-sum", "m1")
    d = e.decide(STAFF, "s", "tools/call", "sum", {"force": 1}, NOON)
    assert (d.effect, d.rule) == ("deny", "deny-rm")
    assert d.matched == ("allow-all", "approve-sum", "deny-rm", "allow-again")


def test_an_approve_rules_own_mask_beside_another_allow_mask_is_the_ledgers() -> None:
    """Profiles are not ordered, so of two different ones neither can be taken as the stricter: the
    ledger's (every detector, redacted) is never weaker than either."""
    e = engine(
        {"name": "a", "effect": "allow", "mask": "light"},
        {"name": "b", "effect": "approve", "mask": "strict", "approvers": {"subjects": ["boss"], "count": 2}},
    )
    d = e.decide(STAFF, "s", "tools/call", "t", {}, NOON)
    assert (d.effect, d.mask, d.approvers) == ("approve", "ledger", ApproverSpec((), ("boss",), 2))


def test_nothing_matches_is_default_deny() -> None:
    d = engine().decide(STAFF, "s", "tools/call", "t", {}, NOON)
    assert (d.effect, d.rule, d.matched) == ("deny", None, ())
    assert "default deny" in d.reason


# --- CEL ----------------------------------------------------------------------------


def test_cel_on_args_switches_allow_to_approve() -> None:
    e = engine(
        {"name": "pay", "match": {"tools": ["transfer"]}, "effect": "allow"},
        {"name": "big", "match": {"tools": ["transfer"]}, "when": "args.a > 1000", "effect": "approve",
         "approvers": {"groups": ["approvers"]}},
    )
    assert e.decide(STAFF, "s", "tools/call", "transfer", {"a": 999}, NOON).effect == "allow"
    assert e.decide(STAFF, "s", "tools/call", "transfer", {"a": 1001}, NOON).effect == "approve"


@pytest.mark.parametrize(
    ("when", "args", "who", "expected"),
    [
        ("args.a > 1000", {"a": 2000}, STAFF, True),
        ("args.a > 1000", {"a": 2000.0}, STAFF, True),
        ("'staff' in principal.groups", {}, STAFF, True),
        ("principal.groups.exists(g, g.startsWith('con'))", {}, CONTRACTOR, True),
        ("principal.kind == 'service'", {}, STAFF, False),
        ("principal.subject == 'alice' && principal.issuer == 'https://idp'", {}, STAFF, True),
        ("principal.claims.repo == 'org/app'", {}, P("ci", repo="org/app"), True),
        ("server == 's' && method == 'tools/call' && tool == 't' && resource == null", {}, STAFF, True),
        ("time.getHours() >= 9 && time.getHours() < 17", {}, STAFF, True),
        ("time > timestamp('2026-01-01T00:00:00Z')", {}, STAFF, True),
        ("args.path.startsWith('/etc')", {"path": "/etc/passwd"}, STAFF, True),
        ("args.path.matches('^/home/[a-z]+/')", {"path": "/home/al/x"}, STAFF, True),
        ("size(args.items) > 2", {"items": [1, 2, 3]}, STAFF, True),
        ("has(args.a) && args.a > 1", {}, STAFF, False),
        ("args.nested.deep.value == 'x'", {"nested": {"deep": {"value": "x"}}}, STAFF, True),
        ("args.items.map(x, x * 2).filter(y, y > 10).size() == 1", {"items": [1, 6]}, STAFF, True),
    ],
)
def test_cel_variables(when: str, args: dict[str, Any], who: Principal, expected: bool) -> None:
    e = engine({"name": "r", "when": when, "effect": "allow"})
    d = e.decide(who, "s", "tools/call", "t", args, NOON)
    assert (d.effect == "allow") is expected, d.reason
    assert d.condition_errors == ()


@pytest.mark.parametrize(
    "when",
    [
        "args.missing > 1",  # no such key
        "args.a > 'x'",  # no overload
        "args.a + 9223372036854775807 > 0",  # overflow
        "1 / (args.a - 5) > 0",  # division by zero
        "args.a",  # not a boolean
    ],
)
def test_cel_errors_fail_closed(when: str) -> None:
    args = {"a": 5}
    allow = engine({"name": "base", "effect": "allow"}, {"name": "r", "when": when, "effect": "allow", "mask": "x"})
    d = allow.decide(STAFF, "s", "tools/call", "t", args, NOON)
    assert (d.effect, d.rule, d.matched) == ("allow", "base", ("base",))  # the erroring allow rule did not match
    assert d.condition_errors and d.condition_errors[0].startswith("r: ")

    deny = engine({"name": "base", "effect": "allow"}, {"name": "r", "when": when, "effect": "deny"})
    d = deny.decide(STAFF, "s", "tools/call", "t", args, NOON)
    assert (d.effect, d.rule) == ("deny", "r")
    assert "fail-closed" in d.reason

    approve = engine({"name": "base", "effect": "allow"},
                     {"name": "r", "when": when, "effect": "approve", "approvers": {"groups": ["a"]}})
    assert approve.decide(STAFF, "s", "tools/call", "t", args, NOON).effect == "approve"

    only_allow = engine({"name": "r", "when": when, "effect": "allow"})
    assert only_allow.decide(STAFF, "s", "tools/call", "t", args, NOON).effect == "deny"


def test_too_deep_arguments_fail_closed_without_crashing() -> None:
    deep: Any = 1
    for _ in range(20_000):  # deep enough to crash the native converter if it ever saw it
        deep = {"x": deep}
    e = engine({"name": "base", "effect": "allow"},
               {"name": "r", "when": "args.a > 1", "effect": "deny"})
    d = e.decide(STAFF, "s", "tools/call", "t", {"a": deep}, NOON)
    assert (d.effect, d.rule) == ("deny", "r")
    assert str(MAX_VALUE_DEPTH) in d.condition_errors[0]
    whole = engine({"name": "base", "effect": "allow"},
                   {"name": "r", "when": "size(args) > 5", "effect": "deny"})
    d = whole.decide(STAFF, "s", "tools/call", "t", {"a": 0, "d": deep}, NOON)
    assert (d.effect, d.rule) == ("deny", "r")
    assert str(MAX_VALUE_DEPTH) in d.condition_errors[0]


def test_a_condition_is_given_only_the_argument_fields_it_reads() -> None:
    """The interpreter copies what it is given (about 3.5 µs a value, holding the interpreter lock): a 4 MB
    argument of small objects held every other call for a second under `args.amount > 1000`. A field the
    condition never names is not handed over, so a deep one there cannot reach the native converter either."""
    deep: Any = 1
    for _ in range(20_000):
        deep = {"x": deep}
    e = engine({"name": "base", "effect": "allow"},
               {"name": "r", "when": "args.a > 1 || args['to'] == 'x'", "effect": "deny"})
    bulk = [{"n": i} for i in range(300_000)]
    started = time.perf_counter()
    d = e.decide(STAFF, "s", "tools/call", "t", {"a": 0, "to": "y", "d": deep, "bulk": bulk}, NOON)
    assert (d.effect, d.rule, d.condition_errors) == ("allow", "base", ())
    assert time.perf_counter() - started < 0.1  # handing over `bulk` took a second
    assert e.decide(STAFF, "s", "tools/call", "t", {"a": 2, "bulk": bulk}, NOON).effect == "deny"
    assert e.decide(STAFF, "s", "tools/call", "t", {"to": "x", "d": deep}, NOON).effect == "deny"


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("args.a >", "invalid CEL"),
        ("arg.a > 1000", "unknown variable(s) arg"),
        ("principle.subject == 'x'", "unknown variable(s) principle"),
        ("", "empty"),
        ("cel.bind(x, 1, x > 0)", "unknown variable(s) cel"),
    ],
)
def test_bad_cel_rejected_at_load_naming_the_rule(when: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        engine({"name": "ok", "effect": "allow"}, {"name": "large-sums", "when": when, "effect": "approve",
                                                   "approvers": {"groups": ["a"]}})
    assert "policy rule 'large-sums'" in str(info.value)
    assert message in str(info.value)


def test_comprehension_variables_are_not_unknown() -> None:
    """`item` and `x` are bound by the macros, so the rule loads, and it decides on them."""
    e = engine({"name": "r", "when": "args.items.all(item, item.size < 10) && [1].exists(x, x == 1)",
                "effect": "allow"})
    small = e.decide(STAFF, "s", "tools/call", "t", {"items": [{"size": 1}, {"size": 9}]}, NOON)
    assert (small.effect, small.rule) == ("allow", "r")
    large = e.decide(STAFF, "s", "tools/call", "t", {"items": [{"size": 1}, {"size": 10}]}, NOON)
    assert (large.effect, large.rule) == ("deny", None)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "r", "effect": "allow", "mask": "nope"}, "unknown masking profile 'nope'"),
        ({"name": "r", "effect": "approve"}, "needs approvers"),
        ({"name": "r", "effect": "approve", "approvers": {"count": 2}}, "needs approvers"),
        ({"name": "r", "effect": "allow", "approvers": {"groups": ["a"]}}, "only an approve rule"),
        ({"name": "r", "effect": "deny", "mask": "standard"}, "deny rule returns nothing"),
    ],
)
def test_rule_meaning_checked_at_load(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        engine(rule, profiles={"standard"})
    assert "policy rule 'r'" in str(info.value)


def test_duplicate_rule_names_rejected() -> None:
    with pytest.raises(ValueError, match="used twice"):
        engine({"name": "r", "effect": "allow"}, {"name": "r", "effect": "deny"})


def test_empty_match_list_rejected() -> None:
    with pytest.raises(ValueError, match="empty list"):
        PolicyRuleSettings.model_validate({"name": "r", "effect": "deny", "match": {"groups": []}})


# --- housekeeping and server-to-client ------------------------------------------


def test_housekeeping_needs_an_allow_rule_on_that_server() -> None:
    e = engine({"name": "echo", "match": {"servers": ["a"], "tools": ["echo"]}, "effect": "allow"})
    assert e.decide(STAFF, "a", "ping", None, None, NOON).effect == "allow"
    assert e.decide(STAFF, "b", "ping", None, None, NOON).effect == "deny"
    assert e.decide(STAFF, "a", "tools/call", "other", {}, NOON).effect == "deny"
    assert e.decide(STAFF, "a", "completion/complete", "ref/prompt:p", {}, NOON).effect == "deny"


def test_housekeeping_denied_by_a_matching_deny_rule() -> None:
    e = engine(
        {"name": "all", "effect": "allow"},
        {"name": "no-ping", "match": {"methods": ["ping"]}, "effect": "deny"},
        {"name": "no-env", "match": {"tools": ["env"]}, "effect": "deny"},  # a tools rule does not touch initialize
    )
    assert e.decide(STAFF, "a", "ping", None, None, NOON).rule == "no-ping"
    assert e.decide(STAFF, "a", "ping", None, None, NOON).effect == "deny"
    assert e.decide(STAFF, "a", "initialize", None, None, NOON).effect == "allow"


def test_blanket_approve_does_not_hold_up_housekeeping_nor_grant_it() -> None:
    e = engine(
        {"name": "use", "match": {"tools": ["*"]}, "effect": "allow"},
        {"name": "everything-approved", "effect": "approve", "approvers": {"groups": ["a"]}},
    )
    assert e.decide(STAFF, "s", "initialize", None, None, NOON).effect == "allow"
    assert e.decide(STAFF, "s", "tools/call", "t", {}, NOON).effect == "approve"
    only_approve = engine({"name": "everything-approved", "effect": "approve", "approvers": {"groups": ["a"]}})
    assert only_approve.decide(STAFF, "s", "initialize", None, None, NOON).effect == "deny"


def test_housekeeping_grant_respects_time_conditions() -> None:
    e = engine({"name": "office-hours", "when": "time.getHours() < 17", "match": {"tools": ["*"]}, "effect": "allow"})
    evening = dt.datetime(2026, 3, 2, 20, 0, tzinfo=dt.timezone.utc).timestamp()
    assert e.decide(STAFF, "s", "initialize", None, None, NOON).effect == "allow"
    assert e.decide(STAFF, "s", "initialize", None, None, evening).effect == "deny"


def test_housekeeping_grant_from_rule_conditioned_on_the_request() -> None:
    e = engine({"name": "e-tools", "when": "tool.startsWith('e')", "match": {"tools": ["*"]}, "effect": "allow"})
    assert e.decide(STAFF, "s", "initialize", None, None, NOON).effect == "allow"
    assert e.decide(STAFF, "s", "tools/call", "echo", {}, NOON).effect == "allow"
    assert e.decide(STAFF, "s", "tools/call", "get", {}, NOON).effect == "deny"


def test_sampling_allowed_only_when_named() -> None:
    e = engine(
        {"name": "all", "effect": "allow"},
        {"name": "sampling", "match": {"groups": ["staff"], "methods": ["sampling/createMessage"]}, "effect": "allow"},
    )
    assert e.decide(STAFF, "s", "sampling/createMessage", None, {}, NOON).rule == "sampling"
    assert e.decide(STAFF, "s", "elicitation/create", None, {}, NOON).effect == "deny"
    assert e.decide(CONTRACTOR, "s", "sampling/createMessage", None, {}, NOON).effect == "deny"


def test_request_target() -> None:
    assert request_target("tools/call", {"name": "echo", "arguments": {}}) == "echo"
    assert request_target("resources/read", {"uri": "file:///a"}) == "file:///a"
    assert request_target("resources/subscribe", {"uri": "file:///a"}) == "file:///a"
    assert request_target("prompts/get", {"name": "p"}) == "p"
    assert request_target("completion/complete", {"ref": {"type": "ref/prompt", "name": "p"}}) == "ref/prompt:p"
    assert request_target("completion/complete", {"ref": {"type": "ref/resource", "uri": "u"}}) == "ref/resource:u"
    assert request_target("completion/complete", {"ref": "x"}) is None
    assert request_target("tools/call", {"name": 5}) is None
    assert request_target("tools/list", {}) is None
    assert request_target("tools/call", None) is None


# --- lists ------------------------------------------------------------------------


def test_filter_lists_of_each_kind() -> None:
    e = engine(
        {"name": "tools", "match": {"tools": ["get-*"]}, "effect": "allow"},
        {"name": "docs", "match": {"resources": ["file:///docs/*"]}, "effect": "allow"},
        {"name": "prompts", "match": {"prompts": ["greet"]}, "effect": "allow"},
        {"name": "secret", "match": {"resources": ["file:///docs/secret*"]}, "effect": "deny"},
        {"name": "big", "match": {"tools": ["get-sum"]}, "when": "args.a > 5", "effect": "deny"},
        {"name": "hidden", "match": {"tools": ["get-hidden"]}, "when": "principal.kind == 'human'", "effect": "deny"},
    )
    tools = [{"name": "get-sum"}, {"name": "get-env"}, {"name": "echo"}, {"name": "get-hidden"}, {"title": "no name"}]
    assert [t["name"] for t in e.filter_list(STAFF, "s", "tools/list", tools, NOON)] == ["get-sum", "get-env"]
    resources = [{"uri": "file:///docs/a"}, {"uri": "file:///docs/secret.txt"}, {"uri": "file:///etc/x"}]
    assert e.filter_list(STAFF, "s", "resources/list", resources, NOON) == [{"uri": "file:///docs/a"}]
    templates = [{"uriTemplate": "file:///docs/{name}"}, {"uriTemplate": "file:///etc/{name}"}]
    assert e.filter_list(STAFF, "s", "resources/templates/list", templates, NOON) == [templates[0]]
    prompts = [{"name": "greet"}, {"name": "other"}]
    assert e.filter_list(STAFF, "s", "prompts/list", prompts, NOON) == [{"name": "greet"}]
    with pytest.raises(ValueError):
        e.filter_list(STAFF, "s", "tools/call", tools, NOON)


def test_decision_is_pure_and_caches_do_not_change_answers() -> None:
    e = engine(
        {"name": "a", "match": {"subjects": ["a*"], "tools": ["t*"]}, "effect": "allow"},
        {"name": "d", "match": {"groups": ["x"]}, "effect": "deny"},
    )
    first = [e.decide(p, "s", "tools/call", t, {}, NOON) for p in (STAFF, P("alice", ("x",))) for t in ("t1", "u")]
    for _ in range(3):
        again = [e.decide(p, "s", "tools/call", t, {}, NOON) for p in (STAFF, P("alice", ("x",))) for t in ("t1", "u")]
        assert again == first
    assert [d.effect for d in first] == ["allow", "deny", "deny", "deny"]


def test_housekeeping_masks_with_the_one_profile_every_rule_names_or_the_ledgers() -> None:
    """Task results, lists, a server's hello and its messages outside any call were masked with the first
    granting rule's profile: an unmasked allow for one tool, placed first, unmasked the rest."""
    who = Principal("https://idp", "alice", "human", frozenset({"staff"}))
    mixed = engine({"name": "echo", "match": {"groups": ["staff"], "servers": ["bank"], "tools": ["echo"]},
                    "effect": "allow"},
                   {"name": "lookup", "match": {"groups": ["staff"], "servers": ["bank"], "tools": ["lookup"]},
                    "effect": "allow", "mask": "strict"}, profiles={"strict"})
    for method in ("tasks/result", "tasks/get", "tasks/list", "tools/list", "notifications/message", "initialize"):
        decision = mixed.decide(who, "bank", method, None, None, 0.0, method.startswith("notifications/"))
        assert decision.effect == "allow" and decision.mask == "ledger", (method, decision)
    same = engine({"name": "a", "match": {"groups": ["staff"], "servers": ["bank"], "tools": ["echo"]},
                   "effect": "allow", "mask": "strict"},
                  {"name": "b", "match": {"groups": ["staff"], "servers": ["bank"], "tools": ["lookup"]},
                   "effect": "allow", "mask": "strict"},
                  {"name": "other-server", "match": {"groups": ["staff"], "servers": ["hr"]}, "effect": "allow"},
                  profiles={"strict"})
    assert same.decide(who, "bank", "tools/list", None, None, 0.0).mask == "strict"
    unmasked = engine({"name": "all", "match": {"groups": ["staff"], "servers": ["bank"]}, "effect": "allow"})
    assert unmasked.decide(who, "bank", "tools/list", None, None, 0.0).mask is None


def test_an_approve_rule_never_loosens_the_allow_rules_masking() -> None:
    """`approve` with a mask of its own replaced the allow rule's: `standard` (partial) over `strict` (redact)."""
    who = Principal("https://idp", "carol", "human", frozenset({"contractors"}))

    def decided(allow_mask: str | None, approve_mask: str | None) -> str | None:
        allow: dict[str, Any] = {"name": "a", "match": {"groups": ["contractors"], "tools": ["lookup"]}, "effect": "allow"}
        approve: dict[str, Any] = {"name": "p", "match": {"tools": ["lookup"]}, "when": "args.full == true",
                                   "effect": "approve", "approvers": {"groups": ["approvers"]}}
        if allow_mask:
            allow["mask"] = allow_mask
        if approve_mask:
            approve["mask"] = approve_mask
        d = engine(allow, approve, profiles={"strict", "standard"}).decide(who, "bank", "tools/call", "lookup",
                                                                          {"full": True}, 0.0)
        assert d.effect == "approve"
        return d.mask

    assert decided("strict", "standard") == "ledger"  # was "standard": looser than the allow rule's
    assert decided("strict", None) == "strict" and decided("strict", "strict") == "strict"
    assert decided(None, "standard") == "standard" and decided(None, None) is None
