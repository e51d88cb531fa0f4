"""Tool-definition drift ("rug pull") detection: fingerprints and their comparison.

An MCP server can change a tool's description or schema after a human looked
at it: the model then reads new instructions under an old, trusted name. The
gateway fingerprints every tool the first time it sees it, accepts that
fingerprint, and treats a later, different fingerprint as drift: the tool is
blocked (mode `block`) or only reported (mode `alert`) until an operator runs
`ledgergate tools accept SERVER TOOL`.

This module is pure: it computes fingerprints and compares them with the
accepted ones. Persistence is `ledgergate.store.fingerprints_store`. The
gateway, on each upstream `tools/list` answer:

1. `seen = fingerprint_tools(tools)`
2. `report = compare(seen, accepted_from_store, mode)`
3. stores `report.to_accept` as accepted (first seen) and `report.changed` as
   pending (so `tools accept` can promote them) — `FingerprintStore.observe`
   does 1–3 in one call;
4. answers the client with `report.filter_tools(tools)` and refuses
   `tools/call` for `report.blocks(name)`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785

from ledgergate.policy.settings import DriftMode

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
