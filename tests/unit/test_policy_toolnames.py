"""A rule naming a tool its server does not list (`transfer_fund` for `transfer_funds`) is warned about:
the pure comparison (`policy/toolnames.py`), the drift guard's once-only log at run time, and the wiring of
the stage that observes `tools/list` answers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ledgergate.config import parse_config
from ledgergate.gateway.call import Call
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.pipeline import Lasting, Pipeline
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.tasks import TaskOwners
from ledgergate.identity.service import IdentityService
from ledgergate.policy.engine import PolicyEngine
from ledgergate.policy.settings import PolicyRuleSettings, ToolDriftSettings
from ledgergate.policy.toolnames import (
    RuleToolNames,
    closest,
    covering,
    is_exact,
    named_tools,
    unlisted,
)
from ledgergate.principal import Principal
from ledgergate.store.fingerprints_store import FingerprintStore

BANK_TOOLS = ["lookup_customer", "list_transactions", "transfer_funds", "export_customers"]


def rules(*specs: dict[str, Any]) -> PolicyEngine:
    return PolicyEngine.from_settings([PolicyRuleSettings.model_validate(s) for s in specs])


def rule(name: str, tools: list[str], servers: list[str] | None = None, effect: str = "deny") -> dict[str, Any]:
    match: dict[str, Any] = {"tools": tools}
    if servers is not None:
        match["servers"] = servers
    return {"name": name, "match": match, "effect": effect}


def tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": f"the {name} tool", "inputSchema": {"type": "object"}}


# --- the pure comparison ------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "exact"), [("transfer_funds", True), ("get-sum", True), ("lookup_*", False),
                                                ("get-?", False), ("get-[ab]", False), ("[[]x", False)])
def test_only_names_without_glob_characters_are_exact(pattern: str, exact: bool) -> None:
    assert is_exact(pattern) is exact


def test_an_exact_name_the_server_does_not_list_is_found_with_the_closest_listed_name() -> None:
    engine = rules(rule("ok", ["lookup_customer"], ["bank"]),
                   rule("typo", ["list_transactions", "transfer_fund", "lookup_*", "get-[ab]"], ["bank"]))
    found = unlisted(named_tools(engine.rules, ["bank"]), {"bank": BANK_TOOLS})
    assert [(f.named.rule, f.named.tool, f.named.entry, f.suggestion) for f in found] == [
        ("typo", "transfer_fund", 1, "transfer_funds")]
    assert found[0].message() == (
        "policies[1].match.tools[1]: policy rule 'typo' names tool 'transfer_fund', which server 'bank' has not "
        "listed (did you mean 'transfer_funds'?); this entry matches no call until a server lists that exact name")


def test_globs_are_never_reported_even_when_they_match_nothing() -> None:
    engine = rules(rule("globs", ["nothing_*", "x?", "[ab]c"], ["bank"]))
    assert unlisted(named_tools(engine.rules, ["bank"]), {"bank": BANK_TOOLS}) == []


def test_the_suggestion_ignores_case_and_is_left_out_when_nothing_is_close() -> None:
    assert closest("Transfer_Funds", BANK_TOOLS) == "transfer_funds"
    assert closest("wire_money", BANK_TOOLS) is None
    engine = rules(rule("far", ["wire_money"], ["bank"]))
    [found] = unlisted(named_tools(engine.rules, ["bank"]), {"bank": BANK_TOOLS})
    assert found.suggestion is None and "did you mean" not in found.describe()


def test_a_server_whose_tools_are_unknown_is_not_judged() -> None:
    engine = rules(rule("typo", ["transfer_fund"], ["bank"]))
    assert unlisted(named_tools(engine.rules, ["bank"]), {}) == []


def test_a_rule_covering_several_servers_is_judged_only_when_all_their_tools_are_known() -> None:
    engine = rules(rule("anywhere", ["transfer_funds", "echo", "transfer_fund"]))  # no `servers`: every server
    named = named_tools(engine.rules, ["bank", "everything"])
    assert {n.servers for n in named} == {("bank", "everything")}
    assert unlisted(named, {"bank": BANK_TOOLS}) == []  # `everything` may list them
    found = unlisted(named, {"bank": BANK_TOOLS, "everything": ["echo", "get-sum"]})
    assert [(f.named.tool, f.suggestion) for f in found] == [("transfer_fund", "transfer_funds")]
    assert "which none of servers 'bank', 'everything' has listed" in found[0].describe()


def test_a_rule_for_servers_not_configured_here_is_left_out() -> None:
    engine = rules(rule("elsewhere", ["transfer_fund"], ["other-gateways-bank"]),
                   rule("globbed", ["transfer_fund"], ["ba*"]))
    named = named_tools(engine.rules, ["bank"])
    assert [(n.rule, n.servers) for n in named] == [("globbed", ("bank",))]
    assert covering(named, "bank") == named and covering(named, "everything") == ()


def test_names_from_the_upstream_cannot_break_the_line() -> None:
    engine = rules(rule("typo", ["transfer_fund"], ["bank"]))
    [found] = unlisted(named_tools(engine.rules, ["bank"]), {"bank": ["transfer_fund\n{\"level\": \"info\"}"]})
    assert "\n" not in found.message()


# --- at run time: the drift guard -----------------------------------------------------


@pytest.fixture
def guard(tmp_path: Path) -> Any:
    store = FingerprintStore.open(f"sqlite:///{tmp_path / 'fp.db'}")
    yield DriftGuard(store, ToolDriftSettings())
    store.close()


async def test_each_unlisted_name_is_logged_once_per_policy_version(guard: DriftGuard,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    engine = rules(rule("approve-typo", ["transfer_fund"], ["bank"]))
    names = RuleToolNames.build(engine.rules, ["bank"], "sha256:v1")
    caplog.set_level(logging.WARNING, logger="ledgergate.policy")
    assert guard.warn_unlisted("bank", names) == []  # nothing listed yet: unknown, not judged
    await guard.observe("bank", [tool(n) for n in BANK_TOOLS])
    [first] = guard.warn_unlisted("bank", names)
    assert first.suggestion == "transfer_funds"
    for _ in range(3):  # the same listing, and a new tool on it: said already
        await guard.observe("bank", [tool(n) for n in BANK_TOOLS])
        assert guard.warn_unlisted("bank", names) == []
    await guard.observe("bank", [tool(n) for n in [*BANK_TOOLS, "close_account"]])
    assert guard.warn_unlisted("bank", names) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "ledgergate.policy"]
    assert lines == [first.message()]
    assert "transfer_fund'" in lines[0] and "did you mean 'transfer_funds'?" in lines[0]
    # a changed policy (a reload) is warned about afresh
    assert len(guard.warn_unlisted("bank", RuleToolNames.build(engine.rules, ["bank"], "sha256:v2"))) == 1


async def test_a_name_the_server_lists_is_never_logged(guard: DriftGuard, caplog: pytest.LogCaptureFixture) -> None:
    engine = rules(rule("approve-transfers", ["transfer_funds"], ["bank"], "approve") |
                   {"approvers": {"groups": ["approvers"]}},
                   rule("reads", ["lookup_*"], ["bank"], "allow"))
    await guard.observe("bank", [tool(n) for n in BANK_TOOLS])
    caplog.set_level(logging.WARNING, logger="ledgergate.policy")
    assert guard.warn_unlisted("bank", RuleToolNames.build(engine.rules, ["bank"], "v")) == []
    assert not [r for r in caplog.records if r.name == "ledgergate.policy"]


async def test_a_reload_that_changes_the_servers_is_compared_again(guard: DriftGuard) -> None:
    engine = rules(rule("anywhere", ["transfer_fund"]))  # no `servers`: every configured server
    await guard.observe("bank", [tool(n) for n in BANK_TOOLS])
    assert guard.warn_unlisted("bank", RuleToolNames.build(engine.rules, ["bank", "sandbox"], "v")) == []
    # the same policy, now before the bank alone: the sandbox's unknown tools no longer excuse the rule
    [found] = guard.warn_unlisted("bank", RuleToolNames.build(engine.rules, ["bank"], "v"))
    assert found.named.servers == ("bank",)


async def test_a_paginated_listing_counts_every_page_the_gateway_saw(guard: DriftGuard) -> None:
    engine = rules(rule("page-two", ["transfer_funds"], ["bank"]))
    names = RuleToolNames.build(engine.rules, ["bank"], "v")
    await guard.observe("bank", [tool("transfer_funds")])  # page 2, seen before
    await guard.observe("bank", [tool("lookup_customer")])  # page 1 of a later listing
    assert guard.warn_unlisted("bank", names) == []


# --- the stage that observes tools/list answers ---------------------------------------------

CONFIG = """
servers:
  bank:
    url: http://127.0.0.1:1/mcp
policies:
  - name: transfers-need-approval
    match: {servers: [bank], tools: [transfer_fund]}
    effect: approve
    approvers: {groups: [approvers]}
  - name: staff
    match: {groups: [staff], servers: [bank]}
    effect: allow
"""


class _Ledger:
    async def append(self, event: str, fields: Any) -> int:
        return 0


def _tools_list(cursor: str | None = None) -> Call:
    params = {} if cursor is None else {"cursor": cursor}
    return Call(server="bank", principal=Principal(issuer="i", subject="alice", kind="human",
                                                   groups=frozenset({"staff"}), claims={}),
                message={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params})


async def test_the_built_pipeline_warns_after_a_complete_tools_list(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    settings = parse_config(CONFIG)
    snapshot = Snapshot.build(settings, IdentityService(settings.identity, settings.storage, tmp_path))
    store = FingerprintStore.open(f"sqlite:///{tmp_path / 'fp.db'}")
    caplog.set_level(logging.WARNING, logger="ledgergate.policy")
    try:
        built = Pipeline.build(snapshot, Lasting(_Ledger(), lambda v: "", DriftGuard(store, settings.tool_drift),
                                                 TaskOwners()))
        observe = built.response_stages[0]
        page = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool("lookup_customer")], "nextCursor": "2"}}
        await observe.on_response(_tools_list(), page)
        assert not [r for r in caplog.records if r.name == "ledgergate.policy"]  # a page is not the listing
        last = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool(n) for n in BANK_TOOLS[1:]]}}
        answered = await observe.on_response(_tools_list("2"), last)
        assert answered == last  # the answer is not changed
        await observe.on_response(_tools_list(), {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}})
        lines = [r.getMessage() for r in caplog.records if r.name == "ledgergate.policy"]
        assert lines == [(
            "policies[0].match.tools[0]: policy rule 'transfers-need-approval' names tool 'transfer_fund', which "
            "server 'bank' has not listed (did you mean 'transfer_funds'?); this entry matches no call until a "
            "server lists that exact name")]
    finally:
        store.close()


async def test_the_demo_policy_names_only_tools_the_demo_bank_lists() -> None:
    from ledgergate.demo.bank_server import build_server
    from ledgergate.demo.run import POLICIES, SERVER

    listed = [t.name for t in await build_server().list_tools()]
    engine = PolicyEngine.from_settings([PolicyRuleSettings.model_validate(p) for p in POLICIES])
    named = named_tools(engine.rules, [SERVER])
    assert {n.tool for n in named} >= {"transfer_funds", "lookup_customer"}  # the check has something to check
    assert unlisted(named, {SERVER: listed}) == []
