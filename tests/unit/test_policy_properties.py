"""Hypothesis properties of the policy engine over random rule sets and requests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.principal import Principal
from ledgergate.policy.engine import PolicyEngine
from ledgergate.policy.rules import LIST_ITEM_KEY, LIST_METHODS, is_housekeeping, is_server_to_client
from ledgergate.policy.settings import PolicyRuleSettings

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc).timestamp()

GROUPS = ["g1", "g2", "g3"]
SUBJECTS = ["alice", "bob", "carol"]
SERVERS = ["s1", "s2"]
TOOLS = ["t1", "t2", "x1"]
URIS = ["file:///a", "file:///b/c"]
PROMPTS = ["p1", "p2"]
METHODS = [
    "tools/call", "resources/read", "prompts/get", "completion/complete",
    "tools/list", "resources/list", "prompts/list", "initialize", "ping", "notifications/initialized",
    "sampling/createMessage", "elicitation/create", "tasks/get", "custom/method",
]
CONDITIONS_STATIC = [None, "principal.kind == 'human'", "'g1' in principal.groups", "time.getHours() > 20",
                     "principal.claims.x == 1"]  # the last one errors (no such claim): fail-closed paths
CONDITIONS_ARGS = ["args.a > 5", "has(args.a) && args.a == 3", "args.b == 'x'"]  # "args.b" errors when absent


def opt(values: list[str], globs: list[str] = ()) -> st.SearchStrategy[list[str] | None]:  # type: ignore[assignment]
    return st.none() | st.lists(st.sampled_from(values + list(globs)), min_size=1, max_size=2, unique=True)


@st.composite
def rule_dicts(draw: st.DrawFn, conditions: list[str | None]) -> dict[str, Any]:
    match: dict[str, Any] = {}
    for key, strategy in (
        ("groups", opt(GROUPS)),
        ("subjects", opt(SUBJECTS, ["a*"])),
        ("kinds", st.none() | st.just(["service"]) | st.just(["human"])),
        ("servers", opt(SERVERS, ["s*"])),
        ("methods", st.none() | st.none() | opt(METHODS, ["tools/*", "*", "sampling/*"])),
        ("tools", st.none() | st.none() | opt(TOOLS, ["t*"])),
        ("resources", st.none() | st.none() | opt(URIS, ["file:///b/*"])),
        ("prompts", st.none() | st.none() | opt(PROMPTS, ["p*"])),
    ):
        value = draw(strategy)
        if value is not None:
            match[key] = value
    effect = draw(st.sampled_from(["allow", "allow", "deny", "approve"]))
    rule: dict[str, Any] = {"match": match, "effect": effect}
    when = draw(st.sampled_from(conditions))
    if when is not None:
        rule["when"] = when
    if effect == "approve":
        rule["approvers"] = {"groups": ["approvers"]}
    if effect == "allow" and draw(st.booleans()):
        rule["mask"] = draw(st.sampled_from(["m1", "m2"]))
    return rule


def build(rules: list[dict[str, Any]]) -> PolicyEngine:
    return PolicyEngine.from_settings(
        [PolicyRuleSettings.model_validate({"name": f"r{i}", **r}) for i, r in enumerate(rules)]
    )


principals = st.builds(
    lambda s, g, k: Principal(issuer="i", subject=s, kind=k, groups=frozenset(g)),
    st.sampled_from(SUBJECTS), st.sets(st.sampled_from(GROUPS + ["approvers"]), max_size=3),
    st.sampled_from(["human", "service"]),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str | None, dict[str, Any]]:
    method = draw(st.sampled_from(METHODS))
    target: str | None = None
    if method == "tools/call":
        target = draw(st.sampled_from(TOOLS + ["zz"]))
    elif method == "resources/read":
        target = draw(st.sampled_from(URIS))
    elif method == "prompts/get":
        target = draw(st.sampled_from(PROMPTS))
    elif method == "completion/complete":
        target = draw(st.sampled_from(["ref/prompt:p1", "ref/resource:file:///a", "junk"]))
    elif method in ("tasks/get", "custom/method"):
        target = draw(st.none() | st.sampled_from(TOOLS))
    args = draw(st.sampled_from([{}, {"a": 3}, {"a": 10}, {"a": "x"}, {"b": "x"}]))
    return draw(st.sampled_from(SERVERS)), method, target, args


ALL_RULES = st.lists(rule_dicts(CONDITIONS_STATIC + CONDITIONS_ARGS), max_size=8)
STATIC_RULES = st.lists(rule_dicts(CONDITIONS_STATIC), max_size=8)
PROPS = settings(max_examples=200, deadline=None)


@PROPS
@given(ALL_RULES, principals, requests())
def test_deny_always_wins(rules: list[dict[str, Any]], who: Principal, req: tuple) -> None:
    server, method, target, args = req
    e = build(rules)
    d = e.decide(who, server, method, target, args, NOW)
    if any(rules[int(n[1:])]["effect"] == "deny" for n in d.matched):
        assert d.effect == "deny"
        assert d.rule is not None and rules[int(d.rule[1:])]["effect"] == "deny"
    # a deny rule that matches everything, inserted anywhere, makes everything deny
    catch_all = {"match": {"methods": ["*", "sampling/*", "elicitation/*", "roots/*"]}, "effect": "deny"}
    for position in (0, len(rules) // 2, len(rules)):
        with_deny = build(rules[:position] + [catch_all] + rules[position:])
        assert with_deny.decide(who, server, method, target, args, NOW).effect == "deny"


@PROPS
@given(ALL_RULES, principals, requests())
def test_nothing_matches_means_deny_and_only_allow_grants(rules: list[dict[str, Any]], who: Principal,
                                                          req: tuple) -> None:
    server, method, target, args = req
    d = build(rules).decide(who, server, method, target, args, NOW)
    if is_housekeeping(method):
        if d.effect == "allow":
            assert d.rule is not None and rules[int(d.rule[1:])]["effect"] == "allow"
        return
    if not d.matched:
        assert (d.effect, d.rule) == ("deny", None)
    if d.effect != "deny":
        assert any(rules[int(n[1:])]["effect"] == "allow" for n in d.matched)
    if is_server_to_client(method) and d.effect != "deny":
        assert any("methods" in rules[int(n[1:])]["match"] for n in d.matched)


@PROPS
@given(ALL_RULES, principals, requests())
def test_effect_does_not_depend_on_rule_order(rules: list[dict[str, Any]], who: Principal, req: tuple) -> None:
    server, method, target, args = req
    forward = build(rules).decide(who, server, method, target, args, NOW)
    backward = build(list(reversed(rules))).decide(who, server, method, target, args, NOW)
    assert forward.effect == backward.effect
    assert sorted(forward.matched, key=lambda n: int(n[1:])) == list(forward.matched)


@PROPS
@given(ALL_RULES, principals, requests())
def test_indexed_matching_equals_reference_matching(rules: list[dict[str, Any]], who: Principal, req: tuple) -> None:
    server, method, target, args = req
    explanation = build(rules).explain(who, server, method, target, args, NOW)
    reference = tuple(
        t.rule for t in explanation.traces
        if t.status == "matched" or (t.status == "condition-error" and t.effect != "allow")
    )
    assert explanation.decision.matched == reference


@PROPS
@given(STATIC_RULES, principals, st.sampled_from(SERVERS), st.sampled_from(sorted(LIST_METHODS)))
def test_list_filtering_equals_per_item_decisions(rules: list[dict[str, Any]], who: Principal, server: str,
                                                 list_method: str) -> None:
    e = build(rules)
    key = LIST_ITEM_KEY[list_method]
    values = {"name": TOOLS + PROMPTS, "uri": URIS, "uriTemplate": URIS + ["file:///b/{x}"]}[key]
    items = [{key: v, "description": "d"} for v in values]
    kept = e.filter_list(who, server, list_method, items, NOW)
    item_method = LIST_METHODS[list_method]
    expected = [i for i in items if e.decide(who, server, item_method, i[key], {}, NOW).effect != "deny"]
    assert kept == expected


@PROPS
@given(ALL_RULES, principals, st.sampled_from(SERVERS))
def test_list_filtering_never_hides_a_usable_tool(rules: list[dict[str, Any]], who: Principal, server: str) -> None:
    """With conditions on arguments, a tool some arguments make usable is listed; a hidden one is never usable."""
    e = build(rules)
    items = [{"name": t} for t in TOOLS]
    kept = {i["name"] for i in e.filter_list(who, server, "tools/list", items, NOW)}
    for tool in TOOLS:
        usable = any(
            e.decide(who, server, "tools/call", tool, args, NOW).effect != "deny"
            for args in ({}, {"a": 3}, {"a": 10}, {"a": "x"}, {"b": "x"}, {"a": 3, "b": "x"}, {"a": 10, "b": "y"})
        )
        if usable:
            assert tool in kept
