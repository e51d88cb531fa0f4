"""Sessions and their replay, built from verified record content. Pure: no I/O.

A session is every record whose canonical JSON names it (`"session": ID`):
`session.opened`, each call's `rpc.request` and `rpc.response`, refusals
(`policy.denied`, `budget.exceeded`, `tool.drift_blocked`, `approval.*`),
server messages, and `session.closed`, across every log (an approval decided
from the CLI is in the CLI's log). The input is what the caller read and
checked (bytes that hash to their leaf, a record that says its own place);
nothing here looks at the store's index columns.

Records only ever hold masked values (the ledger masks before it writes), so
a replay shows what the ledger holds and nothing more.

A session's counts (`sessions list|show|replay`, the console) are of calls, not
records; several records are about one call (an approval held and then denied
writes `approval.requested`, `approval.decided`, `approval.denied` and
`approval.refused`, all with the call's `request_id`):

- calls: client requests of this session the gateway decided (forwarded,
  held for an approval, or refused), counted once per `request_id`;
- denials: those of them refused by policy (a deny rule, a budget, a drifted
  tool) or by an approver (denied, expired or refused approval), once per
  `request_id` however many refusal records it has; a denial is also a call;
- approvals: approvals this session's calls asked for, once per approval id.

Only the session's own records count: an approval record another session's
call joined is shown in the replay, not counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: events that are a refusal of the call they are about
DENIALS = frozenset({"policy.denied", "budget.exceeded", "tool.drift_blocked", "approval.denied",
                     "approval.refused", "approval.expired", "approval.state_refused"})
REPLAYED = "session.replayed"
#: the issuer of the identity `ledgergate approvals approve|deny --by NAME` acts as
OPERATOR_ISSUER = "ledgergate-cli"
#: how a decision made from the CLI is marked wherever it is shown: `--by` is a label the operator typed,
#: not an identity anyone checked (the CLI is the trust of whoever holds the store; docs/security.md §3)
CLI_OPERATOR = "CLI operator, unverified"
#: events that say the gateway decided a client request (with DENIALS): counted once per request_id
DECIDED = frozenset({"rpc.request", "rpc.refused", "approval.requested", "approval.held"}) | DENIALS


@dataclass(frozen=True)
class Entry:
    log_id: str
    index: int
    doc: dict[str, Any]

    @property
    def time(self) -> str:
        t = self.doc.get("time")
        return t if isinstance(t, str) else ""

    @property
    def event(self) -> str:
        e = self.doc.get("event")
        return e if isinstance(e, str) else ""


@dataclass
class Session:
    id: str
    principal: dict[str, Any] = field(default_factory=dict)
    server: str | None = None
    start: str = ""
    end: str = ""
    calls: int = 0
    denials: int = 0
    approvals: int = 0
    tools: set[str] = field(default_factory=set)
    decisions: set[str] = field(default_factory=set)
    entries: list[Entry] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return str(self.principal.get("subject", ""))

    @property
    def principal_key(self) -> str:
        return f"{self.principal.get('issuer', '')}#{self.subject}"

    def summary(self) -> dict[str, Any]:
        return {"session": self.id, "principal": self.principal, "server": self.server, "start": self.start,
                "end": self.end, "calls": self.calls, "denials": self.denials, "approvals": self.approvals,
                "tools": sorted(self.tools), "records": len(self.entries)}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def is_cli_decision(operator: Any, approver: Any = None) -> bool:
    """Whether a decision (a record's or an approval's) was made from the CLI as an operator identity."""
    return operator is True or (isinstance(approver, dict) and approver.get("issuer") == OPERATOR_ISSUER) \
        or (isinstance(approver, str) and approver.startswith(OPERATOR_ISSUER + "#"))


def decider_label(name: str, cli: bool) -> str:
    """Who decided, as shown: a CLI decision says that its name is the operator's unverified `--by`."""
    return f"{name} ({CLI_OPERATOR})" if cli else name


def collect(entries: Iterable[Entry]) -> dict[str, Session]:
    """Every session named by a record, with its records in time order (then log and index).

    A call held for an approval may join an approval another of the requester's sessions opened
    (the same exact call asked twice); the approval's records then name that other session. So a
    session also holds every record about an approval one of its own records names.
    """
    sessions: dict[str, Session] = {}
    by_approval: dict[str, list[Entry]] = {}
    for e in entries:
        approval = _str(e.doc.get("approval"))
        if approval and e.event.startswith("approval."):
            by_approval.setdefault(approval, []).append(e)
        sid = _str(e.doc.get("session"))
        if not sid or e.event == REPLAYED:
            continue
        s = sessions.get(sid)
        if s is None:
            s = sessions[sid] = Session(sid)
        s.entries.append(e)
    for s in sessions.values():
        have = {(e.log_id, e.index) for e in s.entries}
        named = {a for e in s.entries if (a := _str(e.doc.get("approval")))}
        for approval in sorted(named):
            for e in by_approval.get(approval, ()):
                if (e.log_id, e.index) not in have:
                    have.add((e.log_id, e.index))
                    s.entries.append(e)
    for s in sessions.values():
        s.entries.sort(key=lambda x: (x.time, x.log_id, x.index))
        s.start, s.end = s.entries[0].time, s.entries[-1].time
        _count(s)
    return sessions


def _count(s: Session) -> None:
    """Calls, denials and approvals as the module's docstring defines them; tools and decisions seen."""
    calls: set[Any] = set()
    denied: set[Any] = set()
    approvals: set[Any] = set()
    for e in s.entries:
        d = e.doc
        if not s.principal and isinstance(d.get("principal"), dict):
            s.principal = d["principal"]
        if s.server is None and _str(d.get("server")):
            s.server = d["server"]
        ev = e.event
        if ev == "rpc.request":
            s.decisions.add(str(d.get("decision") or "allow"))
        if ev in DENIALS:
            s.decisions.add("deny")
        if ev == "approval.requested":
            s.decisions.add("approve")
        if d.get("method") == "tools/call" and _str(d.get("target")):
            s.tools.add(d["target"])
        if d.get("session") != s.id:  # another session's approval record, shown here but counted there
            continue
        rid = d.get("request_id")
        call = ("request", rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else \
            ("record", e.log_id, e.index)
        if ev in DECIDED:
            calls.add(call)
        if ev in DENIALS:
            denied.add(call)
        if ev == "approval.requested":
            approvals.add(_str(d.get("approval")) or call)
    s.calls, s.denials, s.approvals = len(calls), len(denied), len(approvals)


@dataclass(frozen=True)
class SessionFilter:
    principal: str | None = None
    server: str | None = None
    tool: str | None = None
    decision: str | None = None
    since: str | None = None  # RFC 3339 UTC (the ledger's form), compared as strings
    until: str | None = None

    def match(self, s: Session) -> bool:
        if self.principal is not None and self.principal not in (s.subject, s.principal_key):
            return False
        if self.server is not None and s.server != self.server:
            return False
        if self.tool is not None and self.tool not in s.tools:
            return False
        if self.decision is not None and self.decision not in s.decisions:
            return False
        if self.since is not None and s.end < self.since:
            return False
        return not (self.until is not None and s.start > self.until)


def select(sessions: dict[str, Session], flt: SessionFilter) -> list[Session]:
    """Matching sessions, newest first."""
    return sorted((s for s in sessions.values() if flt.match(s)), key=lambda s: s.start, reverse=True)


def _ms_between(a: str, b: str) -> float | None:
    try:
        return (datetime.fromisoformat(b.replace("Z", "+00:00"))
                - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds() * 1000
    except ValueError:
        return None


def _payload(d: dict[str, Any]) -> tuple[str, Any] | None:
    for key in ("args", "response", "result", "error", "message", "params"):
        if key in d:
            return key, d[key]
    return None


def step(e: Entry, start: str) -> dict[str, Any]:
    """One line of a replay: when (and how long after the session began), what, and its masked payload."""
    d = e.doc
    out: dict[str, Any] = {"log": e.log_id, "index": e.index, "time": e.time, "offset_ms": _ms_between(start, e.time),
                           "event": e.event, "request_id": d.get("request_id"), "method": d.get("method"),
                           "target": d.get("target")}
    payload = _payload(d)
    if payload is not None:
        out["payload_kind"], out["payload"] = payload
    for key in ("decision", "rule", "reason", "latency_ms", "approval", "verdict", "status", "close_reason",
                "justification", "approver_display", "budget", "message_method", "masked", "args_masked"):
        if d.get(key) is not None:
            out[key] = d[key]
    if isinstance(d.get("approver"), dict):
        cli = is_cli_decision(d.get("operator"), d["approver"])
        out["approver"] = decider_label(str(d.get("approver_display") or d["approver"].get("subject")), cli)
        out["approver_cli"] = cli
    if e.event in DENIALS:
        out["denied"] = True
    return out


def replay(session: Session) -> dict[str, Any]:
    """The session's summary and every record, in order, as replay steps."""
    return {**session.summary(), "timeline": [step(e, session.start) for e in session.entries]}


__all__ = ["CLI_OPERATOR", "DECIDED", "DENIALS", "OPERATOR_ISSUER", "REPLAYED", "Entry", "Session", "SessionFilter",
           "collect", "decider_label", "is_cli_decision", "replay", "select", "step"]
