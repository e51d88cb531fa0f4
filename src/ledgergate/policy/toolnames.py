"""Rules that name a tool the upstream does not list (a typo such as `transfer_fund` for `transfer_funds`).

Rules match tool names exactly or by glob, so a rule naming a tool its server never lists matches no call:
an approve or deny rule written so is silently inert, and the call it was meant to guard runs under the
other rules (or the default). The loader cannot see this (it does not know the servers' tools); what has
seen them is the drift guard, which records every tool a server lists. This module compares the two.

Pure: the listings come from the caller (the gateway's drift guard at run time, the fingerprint store in
`ledgergate policy check`). It never changes a decision: servers add and drop tools, so a rule for an
unlisted tool is a warning, not an error.

Only exact names are checked: a glob (`lookup_*`) is written to match whatever exists, and matching none
today says little. A rule covering several configured servers (no `servers`, or a glob) is warned about
only when every one of them has a known listing and none lists the name: one missing listing means we
cannot tell, and a false warning teaches operators to skip them.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ledgergate.policy.rules import CompiledRule

#: how alike a listed name must be to be offered as "did you mean" (difflib's ratio; as the loader's server check)
SUGGESTION_CUTOFF = 0.75
#: names come from the upstream and the config: cut long ones short in a message (a log line stays one line)
_SHOWN_MAX = 80
_GLOB_CHARS = frozenset("*?[")


def is_exact(pattern: str) -> bool:
    """Whether a `tools` entry names one tool (no `*`, `?` or `[`): only those can be a typo of a listed name."""
    return _GLOB_CHARS.isdisjoint(pattern)


def shown(name: str) -> str:
    """A name quoted for a message: `repr` escapes newlines and control characters (an upstream chooses its
    tools' names, and must not be able to forge a log line), cut short."""
    text = repr(name)
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX - 4] + "…'"


@dataclass(frozen=True, slots=True)
class NamedTool:
    """One exact tool name in one rule's `tools`, and the configured servers the rule covers."""

    rule: str
    rule_index: int
    entry: int  # index in the rule's `match.tools`
    tool: str
    servers: tuple[str, ...]  # sorted

    @property
    def location(self) -> str:
        """Where the config holds it, as the loader names keys in its errors."""
        return f"policies[{self.rule_index}].match.tools[{self.entry}]"


@dataclass(frozen=True, slots=True)
class UnlistedTool:
    """A rule's exact tool name that no server the rule covers has listed."""

    named: NamedTool
    suggestion: str | None  # the closest listed name, if one is close

    def describe(self) -> str:
        """One line, without the location (the caller puts it, with a line number when it has one)."""
        n = self.named
        if len(n.servers) == 1:
            where = f"which server {shown(n.servers[0])} has not listed"
        else:
            where = f"which none of servers {', '.join(shown(s) for s in n.servers)} has listed"
        hint = f" (did you mean {shown(self.suggestion)}?)" if self.suggestion is not None else ""
        return (f"policy rule {shown(n.rule)} names tool {shown(n.tool)}, {where}{hint}; "
                "this entry matches no call until a server lists that exact name")

    def message(self) -> str:
        return f"{self.named.location}: {self.describe()}"


def named_tools(rules: Sequence[CompiledRule], servers: Iterable[str]) -> tuple[NamedTool, ...]:
    """Every exact tool name of every rule, with the configured servers the rule covers. A rule that covers
    no configured server is left out (one policy may serve gateways with other servers)."""
    configured = sorted(set(servers))
    out: list[NamedTool] = []
    for rule in rules:
        if rule.tools is None:
            continue
        covered = tuple(s for s in configured if rule.matches_server(s) is None)
        if not covered:
            continue
        seen: set[str] = set()
        for entry, tool in enumerate(rule.tools):
            if is_exact(tool) and tool not in seen:
                seen.add(tool)
                out.append(NamedTool(rule.name, rule.index, entry, tool, covered))
    return tuple(out)


def covering(named: Iterable[NamedTool], server: str) -> tuple[NamedTool, ...]:
    return tuple(n for n in named if server in n.servers)


def closest(name: str, listed: Collection[str]) -> str | None:
    """The listed name most like `name`, if one is close; case is ignored (`Transfer_Funds`), as a reader would."""
    by_folded: dict[str, str] = {}
    for candidate in sorted(listed):
        by_folded.setdefault(candidate.casefold(), candidate)
    near = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=SUGGESTION_CUTOFF)
    return by_folded[near[0]] if near else None


def unlisted(named: Iterable[NamedTool], listings: Mapping[str, Collection[str]]) -> list[UnlistedTool]:
    """The names no covered server lists. `listings`: server → the tool names it is known to list; a server
    without an entry is unknown, and a rule covering it is not judged."""
    out: list[UnlistedTool] = []
    for n in named:
        known = [listings.get(s) for s in n.servers]
        lists: list[Collection[str]] = [k for k in known if k is not None]
        if len(lists) != len(known):
            continue  # some covered server's tools are unknown: it may list this one
        if any(n.tool in names for names in lists):
            continue
        candidates: set[str] = set().union(*lists) if lists else set()
        out.append(UnlistedTool(n, closest(n.tool, candidates)))
    return out


@dataclass(frozen=True, slots=True)
class RuleToolNames:
    """What the gateway compares each `tools/list` answer with: built once per config snapshot, so nothing
    of it runs per call. `version` is the policy's (a changed policy is warned about afresh)."""

    version: str
    named: tuple[NamedTool, ...]

    @classmethod
    def build(cls, rules: Sequence[CompiledRule], servers: Iterable[str], version: str) -> RuleToolNames:
        return cls(version, named_tools(rules, servers))
