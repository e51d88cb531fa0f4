"""Tool-definition drift ("rug pull") at the gateway.

An MCP server can change a tool's description or schema after a human looked
at it: the model then reads new instructions under an old, trusted name. The
gateway fingerprints every tool the first time it sees it, accepts that
fingerprint, and treats a later, different fingerprint as drift: the tool is
hidden and its calls refused (mode `block`) or only reported (mode `alert`)
until an operator runs `ledgergate tools accept SERVER TOOL`.

The fingerprints and their comparison are pure functions; `observe` applies
one upstream `tools/list` to the store (`store/fingerprints_store.py` only
keeps rows), and `DriftGuard` keeps the latest verdicts per server in memory
and does the store I/O off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
import rfc8785

from ledgergate.policy.settings import DriftMode, ToolDriftSettings
from ledgergate.policy.toolnames import RuleToolNames, UnlistedTool, covering, unlisted
from ledgergate.store.fingerprints_store import FingerprintStore

log = logging.getLogger("ledgergate.policy")

FINGERPRINT_FIELDS: tuple[str, ...] = ("name", "description", "inputSchema", "outputSchema", "annotations")
"""What a model is told about a tool. `title`, `icons` and `_meta` are left out:
they are display-only and change for cosmetic reasons."""

Status = Literal["new", "unchanged", "changed"]


def tool_definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprinted part of a tool: the five fields, an absent one as null."""
    return {k: tool.get(k) for k in FINGERPRINT_FIELDS}


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON; values outside JCS's domain (huge ints, NaN) fall back
    to sorted-key compact JSON, which is still deterministic for one input."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def fingerprint_tool(tool: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of the tool's name, description, schemas and annotations."""
    return hashlib.sha256(canonical_json(tool_definition(tool))).hexdigest()


def fingerprint_tools(tools: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """name → fingerprint for a `tools/list` answer.

    A name listed twice with different definitions gets a fingerprint of both,
    which matches no accepted one: an ambiguous tool is treated as changed.
    Items without a string name are ignored (they cannot be called).
    """
    out: dict[str, str] = {}
    for tool in tools:
        name = tool.get("name") if isinstance(tool, Mapping) else None
        if not isinstance(name, str):
            continue
        fp = fingerprint_tool(tool)
        if name in out and out[name] != fp:
            fp = hashlib.sha256(f"{out[name]}|{fp}".encode()).hexdigest()
        out[name] = fp
    return out


@dataclass(frozen=True, slots=True)
class DriftVerdict:
    """One tool's state: `new` (record as accepted), `unchanged`, or `changed` (drift)."""

    name: str
    status: Status
    seen: str
    accepted: str | None
    blocked: bool


@dataclass(frozen=True, slots=True)
class DriftReport:
    mode: DriftMode
    verdicts: Mapping[str, DriftVerdict] = field(default_factory=dict)
    removed: tuple[str, ...] = ()  # accepted before, absent from this listing
    #: every tool name the store holds for the server once this listing is recorded: what it has ever listed
    #: (all pages of a paginated listing the gateway passed on), for `DriftGuard.warn_unlisted`
    known: frozenset[str] = frozenset()

    @property
    def to_accept(self) -> dict[str, str]:
        """First-seen tools: name → fingerprint to store as accepted."""
        return {n: v.seen for n, v in self.verdicts.items() if v.status == "new"}

    @property
    def changed(self) -> dict[str, DriftVerdict]:
        """Tools whose definition differs from the accepted one (store as pending; alert)."""
        return {n: v for n, v in self.verdicts.items() if v.status == "changed"}

    @property
    def blocked(self) -> frozenset[str]:
        return frozenset(n for n, v in self.verdicts.items() if v.blocked)

    def blocks(self, name: str) -> bool:
        """Whether a `tools/call` of `name` must be refused."""
        v = self.verdicts.get(name)
        return v is not None and v.blocked

    def filter_tools(self, tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The listing without blocked tools (a model should not even read a drifted description)."""
        blocked = self.blocked
        if not blocked:
            return list(tools)
        return [t for t in tools if not (isinstance(t, Mapping) and t.get("name") in blocked)]


def compare(seen: Mapping[str, str], accepted: Mapping[str, str], mode: DriftMode = "block") -> DriftReport:
    """Judge a listing's fingerprints against the accepted ones.

    `seen`: name → fingerprint from this listing; `accepted`: name → accepted
    fingerprint (from the store). In mode `block` a changed tool is blocked; in
    `alert` it is only reported; in `off` nothing is reported as changed
    (first-seen tools are still returned in `to_accept`, so turning the check
    on later has a baseline).
    """
    verdicts: dict[str, DriftVerdict] = {}
    for name, fp in seen.items():
        prior = accepted.get(name)
        if prior is None:
            verdicts[name] = DriftVerdict(name, "new", fp, None, False)
        elif prior == fp or mode == "off":
            verdicts[name] = DriftVerdict(name, "unchanged", fp, prior, False)
        else:
            verdicts[name] = DriftVerdict(name, "changed", fp, prior, mode == "block")
    removed = tuple(sorted(n for n in accepted if n not in seen))
    return DriftReport(mode=mode, verdicts=verdicts, removed=removed)


def observe(store: FingerprintStore, server: str, tools: list[dict[str, Any]], mode: DriftMode,
            now: float, redact: Callable[[Any], Any] | None = None) -> DriftReport:
    """Everything the gateway does with one upstream `tools/list` answer; returns the verdicts.

    First-seen tools become accepted, changed ones are stored as pending (so
    `tools accept` can promote exactly them), and a tool whose definition went
    back to the accepted one has its pending change cleared. Several replicas
    may observe the same first listing at once: the store keeps whichever
    first-seen row won, and the report is computed from what it holds afterwards.
    Fingerprints are of the definitions as served; the definitions kept beside them
    (for `tools diff` and the console) pass `redact` first: a description or a default
    can carry an account number, and the store is data at rest outside the ledger.
    """
    def kept(tool: Mapping[str, Any]) -> str:
        definition = tool_definition(tool)
        return canonical_json(definition if redact is None else redact(definition)).decode()

    by_name: dict[str, dict[str, Any]] = {}
    for t in tools:
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            by_name.setdefault(t["name"], t)
    seen = fingerprint_tools(tools)
    records = {r.tool: r for r in store.list(server)}
    new = [by_name[n] for n in seen if n not in records]
    if new:
        store.record_first_seen(server, [(t["name"], fingerprint_tool(t), kept(t)) for t in new], now)
        records = {r.tool: r for r in store.list(server)}  # what won, if another replica raced us
    report = compare(seen, {n: r.accepted_fp for n, r in records.items()}, mode)
    if new:  # report first-seen tools as "new" (unless a racing replica accepted something else)
        fresh = {t["name"] for t in new}
        verdicts = {
            n: (DriftVerdict(n, "new", v.seen, v.accepted, False) if n in fresh and v.status == "unchanged" else v)
            for n, v in report.verdicts.items()
        }
        report = DriftReport(mode=report.mode, verdicts=verdicts, removed=report.removed)
    report = replace(report, known=frozenset(records) | frozenset(seen))
    for name, fp in seen.items():
        record = records.get(name)
        if record is None:
            continue
        if fp != record.accepted_fp and fp != record.pending_fp:
            # fingerprint_tools may combine duplicates; store the first definition under that fp
            store.set_pending(server, name, fp, kept(by_name[name]), now)
        elif fp == record.accepted_fp and record.pending_fp is not None:
            store.clear_pending(server, name)
    return report


#: at most this many (policy version, rule, tool, servers) warnings remembered as said; then forgotten at
#: once (a long-running gateway with many reloads may then say one again, never every listing)
_WARNED_MAX = 4096


class DriftGuard:
    def __init__(self, store: FingerprintStore, settings: ToolDriftSettings) -> None:
        self.store = store
        self.settings = settings
        self._reports: dict[str, DriftReport] = {}
        #: server → every tool name it has listed (`DriftReport.known`), from its last observed listing
        self._known: dict[str, frozenset[str]] = {}
        #: server → (the policy's tool names, its known names) last compared: the same pair is not compared again
        self._checked: dict[str, tuple[RuleToolNames, frozenset[str]]] = {}
        self._warned: set[tuple[str, str, str, tuple[str, ...]]] = set()

    def mode_for(self, server: str) -> DriftMode:
        return self.settings.servers.get(server, self.settings.mode)

    async def is_blocked(self, server: str, tool: str | None) -> bool:
        """Whether a call must be refused. A tool blocked by the last listing is re-checked against the
        store, so `ledgergate tools accept` takes effect at once, without waiting for a new listing."""
        report = self._reports.get(server)
        if not tool or report is None or not report.blocks(tool):
            return False
        accepted = await anyio.to_thread.run_sync(self.store.accepted, server)
        return accepted.get(tool) != report.verdicts[tool].seen

    async def observe(self, server: str, tools: list[dict[str, Any]],
                      redact: Callable[[Any], Any] | None = None) -> DriftReport:
        report = await anyio.to_thread.run_sync(observe, self.store, server, tools, self.mode_for(server), time.time(),
                                                redact)
        self._reports[server] = report
        self._known[server] = report.known
        return report

    def warn_unlisted(self, server: str, names: RuleToolNames) -> list[UnlistedTool]:
        """After a complete `tools/list` of `server` was observed: log each rule naming an exact tool that no
        server it covers has listed, once per (rule, tool, servers) and policy version; returns what was logged.
        Only names are compared and logged, never a call's arguments; decisions are not touched (servers add
        and drop tools). Cached per (server, its known names, policy version), so a listing like the last one
        costs a comparison of two sets."""
        known = self._known.get(server)
        if known is None:
            return []
        key = (names, known)  # by value: a reload that changes neither rules nor servers is the same pair
        if self._checked.get(server) == key:
            return []
        self._checked[server] = key
        fresh: list[UnlistedTool] = []
        for finding in unlisted(covering(names.named, server), self._known):
            said = (names.version, finding.named.rule, finding.named.tool, finding.named.servers)
            if said in self._warned:
                continue
            if len(self._warned) >= _WARNED_MAX:
                self._warned.clear()
            self._warned.add(said)
            fresh.append(finding)
            log.warning("%s", finding.message())
        return fresh

    def close(self) -> None:
        self.store.close()
