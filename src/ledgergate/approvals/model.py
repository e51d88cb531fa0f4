"""Just-in-time approvals: one exact call, held until N distinct people approve it. Pure: no I/O.

An approval is bound to one call (`Binding`): who asked, which server, method
and target, the SHA-256 of the RFC 8785 canonical arguments, the policy rule
and the policy version. Any change to any of these is a different call and
needs its own approval; an approved one runs once (`execute`).

States: pending -> approved | denied | expired | cancelled; approved -> executed.
The rules live here as functions from an approval (and a decider) to the next
approval, so the service, the REST API and the CLI cannot disagree on them:

- the requester never decides their own call, whatever groups they hold;
- a decider must be one of the rule's approvers (a group they hold, or their
  subject or principal key named in `approvers.subjects`), unless they act as
  an operator from the CLI (who has the store in hand anyway, and is recorded
  as such);
- the same person counts once: `count: N` needs N different people;
- one deny ends it; every decision carries a reason (non-empty, bounded);
- a decision on an approval that is no longer pending is refused, naming its state.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from ledgergate.audit import canonical
from ledgergate.errors import RATE_LIMITED, GatewayError
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec

Status = Literal["pending", "approved", "denied", "expired", "cancelled", "executed"]
Verdict = Literal["approve", "deny"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "denied", "expired", "cancelled", "executed")
VERDICTS: tuple[Verdict, ...] = ("approve", "deny")
FINAL: frozenset[str] = frozenset({"denied", "expired", "cancelled", "executed"})

ID_PREFIX = "apr_"
MAX_REASON = 1000
MAX_JUSTIFICATION = 2000
#: the issuer of identities the CLI acts as (`ledgergate approvals approve --by NAME`)
OPERATOR_ISSUER = "ledgergate-cli"


# ── errors: each is what the decider sees, mapped to HTTP by its status ───────


class ApprovalError(GatewayError):
    """A refused approval operation; the message is safe to show the caller."""


class ApprovalNotFound(ApprovalError):
    http_status = 404


class TooManyPending(ApprovalError):
    """The requester already has `approvals.max_pending` approvals waiting."""

    http_status = 429
    rpc_code = RATE_LIMITED


class NotAllowed(ApprovalError):
    """The caller may not do this to this approval (requester, not an approver)."""

    http_status = 403


class NotPending(ApprovalError):
    """The approval is no longer open to this operation; `status` says why."""

    http_status = 409

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message, data={"status": status})
        self.status = status


class AlreadyDecided(ApprovalError):
    http_status = 409


class BadDecision(ApprovalError):
    """The decision itself is malformed (no reason, unknown verdict, too long)."""

    http_status = 400


class ApprovalUnavailable(ApprovalError):
    """The store could not record it: nothing was applied (fail closed)."""

    http_status = 503


# ── identities and digests ─────────────────────────────────────────────────────


def new_id() -> str:
    """128 random bits: knowing one approval's id tells nothing about another's."""
    return ID_PREFIX + secrets.token_hex(16)


def looks_like_id(value: str) -> bool:
    return (len(value) == len(ID_PREFIX) + 32 and value.startswith(ID_PREFIX)
            and all(c in "0123456789abcdef" for c in value[len(ID_PREFIX):]))


@dataclass(frozen=True)
class Cursor:
    """Where a listing stopped: the (created, id) of the last approval read, in the listing's
    order (newest first, then id). Handed out as an opaque token so callers do not build their own."""

    created: float
    id: str

    def token(self) -> str:
        # repr of a float reads back as the same float: the next page starts exactly after this row
        return base64.urlsafe_b64encode(f"{self.created!r}/{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor a token names; BadDecision (400) for anything this gateway did not hand out."""
        bad = BadDecision("cursor is not one a listing handed out (pass the 'next' of the previous page)")
        if not token or len(token) > 200 or not token.isascii():
            raise bad
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
            created_text, sep, approval_id = text.partition("/")
            created = float(created_text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad from exc
        if not sep or not math.isfinite(created) or not looks_like_id(approval_id):
            raise bad
        return cls(created, approval_id)


def args_digest(arguments: Any, key: bytes) -> str:
    """HMAC-SHA256 hex of the RFC 8785 bytes of the raw arguments (absent arguments are `{}`), under the
    deployment's approval key (`Ledger.subkey`, the same on every replica, so a call held on one replica is
    released on another).

    Keyed because the digest is shown beside the masked preview (REST API, CLI, console, webhooks, the
    `approval.requested` record): a plain SHA-256 let anyone who saw both try the few values a masked span can
    hold until one matched (an SSN whose last four digits a partial view shows: 10^5 guesses, under a second)."""
    return canonical.hmac_hex(key, {} if arguments is None else arguments)


def preview_digest(masked_args: Any) -> str:
    """SHA-256 hex of the canonical masked preview: names exactly what an approver was shown."""
    return hashlib.sha256(canonical.dumps(masked_args)).hexdigest()


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Binding:
    """The exact call an approval releases. Equal bindings are the same call."""

    principal: str  # Principal.key of the requester
    server: str
    method: str
    target: str | None  # tool name, resource URI or prompt name
    args_digest: str
    rule: str
    policy_version: str

    @property
    def key(self) -> str:
        """One indexable string for the whole binding (SHA-256 hex of its canonical form)."""
        return hashlib.sha256(canonical.dumps(dataclasses.asdict(self))).hexdigest()


def policy_version(rules: Iterable[Any]) -> str:
    """A short content hash of the policy rules (pydantic models or plain data): equal rules, equal version,
    so a config reload that leaves the rules alone keeps open approvals valid, and one that changes any
    rule makes their calls need new approvals."""
    data = [r.model_dump(mode="json") if hasattr(r, "model_dump") else r for r in rules]
    return "sha256:" + hashlib.sha256(canonical.dumps(data)).hexdigest()[:16]


def binding_for(principal: Principal, server: str, method: str, target: str | None, arguments: Any,
                rule: str, policy_version: str, key: bytes) -> Binding:
    """The binding of a call as the gateway sees it (the raw arguments only as their keyed digest)."""
    return Binding(principal.key, server, method, target, args_digest(arguments, key), rule, policy_version)


@dataclass(frozen=True, slots=True)
class Vote:
    """One person's decision, as recorded."""

    approver: str  # principal key
    subject: str
    display: str
    verdict: Verdict
    reason: str
    time: float
    preview_digest: str
    operator: bool = False  # decided from the CLI as an operator identity


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    binding: Binding
    requester: Mapping[str, Any]  # Principal.summary() of the requester
    masked_args: Any  # the ledger-masked preview; raw arguments are never kept
    approvers: ApproverSpec
    created: float
    expires: float
    justification: str | None = None
    session: str | None = None
    request_id: str | None = None
    status: Status = "pending"
    decisions: tuple[Vote, ...] = ()
    granted_until: float | None = None
    executed_at: float | None = None
    executed_request_id: str | None = None
    closed_at: float | None = None
    close_reason: str | None = None
    #: bumped by the store on every change; conditional updates use it
    version: int = field(default=0, compare=False)

    @property
    def binding_key(self) -> str:
        return self.binding.key

    @property
    def principal_key(self) -> str:
        return self.binding.principal

    @property
    def approvals(self) -> int:
        return sum(1 for v in self.decisions if v.verdict == "approve")

    @property
    def requester_subject(self) -> str:
        return str(self.requester.get("subject", ""))

    @property
    def preview_digest(self) -> str:
        return preview_digest(self.masked_args)

    def to_doc(self) -> dict[str, Any]:
        """Everything but `version`, as JSON-ready data (the store keeps version in its own column)."""
        doc = dataclasses.asdict(self)
        doc.pop("version")
        doc["approvers"] = {"groups": list(self.approvers.groups), "subjects": list(self.approvers.subjects),
                            "count": self.approvers.count, "justification": self.approvers.justification}
        doc["requester"] = dict(self.requester)
        doc["decisions"] = [dataclasses.asdict(v) for v in self.decisions]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], version: int = 0) -> Approval:
        a = doc["approvers"]
        return cls(
            id=doc["id"], binding=Binding(**doc["binding"]), requester=doc["requester"],
            masked_args=doc["masked_args"],
            approvers=ApproverSpec(tuple(a["groups"]), tuple(a["subjects"]), int(a["count"]),
                                   a.get("justification", "optional")),
            created=doc["created"], expires=doc["expires"], justification=doc.get("justification"),
            session=doc.get("session"), request_id=doc.get("request_id"), status=doc["status"],
            decisions=tuple(Vote(**v) for v in doc.get("decisions", ())),
            granted_until=doc.get("granted_until"), executed_at=doc.get("executed_at"),
            executed_request_id=doc.get("executed_request_id"), closed_at=doc.get("closed_at"),
            close_reason=doc.get("close_reason"), version=version,
        )

    def public(self) -> dict[str, Any]:
        """The view an approver, auditor or requester gets (REST, CLI --json, webhooks)."""
        b = self.binding
        return {
            "id": self.id, "status": self.status,
            "requester": dict(self.requester), "server": b.server, "method": b.method, "target": b.target,
            "tool": b.target if b.method == "tools/call" else None,
            "arguments": self.masked_args, "preview_digest": self.preview_digest,
            "args_digest": b.args_digest, "rule": b.rule, "policy_version": b.policy_version,
            "approvers": {"groups": list(self.approvers.groups), "subjects": list(self.approvers.subjects),
                          "count": self.approvers.count},
            "approvals": self.approvals, "justification": self.justification,
            "session": self.session, "request_id": self.request_id,
            "created": rfc3339(self.created), "expires": rfc3339(self.expires),
            "decisions": [{"approver": v.display, "approver_key": v.approver, "verdict": v.verdict,
                           "reason": v.reason, "time": rfc3339(v.time), "preview_digest": v.preview_digest,
                           "operator": v.operator} for v in self.decisions],
            "granted_until": rfc3339(self.granted_until), "executed_at": rfc3339(self.executed_at),
            "executed_request_id": self.executed_request_id,
            "closed_at": rfc3339(self.closed_at), "close_reason": self.close_reason,
        }


# ── who is who ────────────────────────────────────────────────────────────────


def display_name(principal: Principal) -> str:
    """How a person is named to others: a readable claim if the token had one, else the subject."""
    for claim in ("preferred_username", "email", "name"):
        value = principal.claims.get(claim) if principal.claims else None
        if isinstance(value, str) and value.strip():
            return value.strip()[:200]
    return principal.subject


def is_operator(principal: Principal) -> bool:
    return principal.issuer == OPERATOR_ISSUER


def operator_principal(name: str) -> Principal:
    """The identity the CLI acts as. `issuer#subject` names a principal of an IdP exactly."""
    return Principal(OPERATOR_ISSUER, name.strip(), "human")


def _same_person(key_a: str, subject_a: str, operator_a: bool, key_b: str, subject_b: str, operator_b: bool) -> bool:
    # Keys are exact. An operator names a person only by subject (or by a full key), so an operator
    # decision is the same person as anyone with that subject: `--by alice` is never alice's approver.
    if key_a == key_b:
        return True
    if operator_a and (subject_a == key_b or subject_a == subject_b):
        return True
    return operator_b and (subject_b == key_a or subject_b == subject_a)


def is_requester(approval: Approval, principal: Principal) -> bool:
    return _same_person(principal.key, principal.subject, is_operator(principal),
                        approval.binding.principal, approval.requester_subject, False)


def is_approver(spec: ApproverSpec, principal: Principal) -> bool:
    """In one of the approver groups, or named (by subject or principal key) in `approvers.subjects`."""
    if not principal.groups.isdisjoint(spec.groups):
        return True
    return principal.subject in spec.subjects or principal.key in spec.subjects


def may_see(approval: Approval, principal: Principal, auditor_groups: Iterable[str]) -> bool:
    """Approvers of this approval, auditors, and the requester (their own)."""
    return (is_approver(approval.approvers, principal) or not principal.groups.isdisjoint(auditor_groups)
            or is_requester(approval, principal) or is_operator(principal))


# ── transitions ───────────────────────────────────────────────────────────────


#: the Unicode bidirectional formatting characters (UAX #9): embeddings, overrides, isolates, marks
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_reason(reason: Any, *, what: str = "reason", limit: int = MAX_REASON) -> str:
    """A reason worth recording: a non-empty string of at most `limit` characters, no control characters."""
    if not isinstance(reason, str):
        raise BadDecision(f"a {what} is required (a string)")
    text = reason.strip()
    if not text:
        raise BadDecision(f"a {what} is required: say why")
    if len(text) > limit:
        raise BadDecision(f"the {what} is too long ({len(text)} characters; at most {limit})")
    if any(ord(c) < 32 and c not in "\n\t" or 0x7f <= ord(c) <= 0x9f for c in text):
        raise BadDecision(f"the {what} contains control characters")
    if any(c in _BIDI_CONTROLS for c in text):
        # a reason is read by people and shown beside the call: an override would make it read otherwise
        raise BadDecision(f"the {what} contains bidirectional control characters")
    return text


def _require_pending(approval: Approval, now: float, doing: str) -> None:
    if approval.status != "pending":
        raise NotPending(f"approval {approval.id} is {approval.status}, not pending: cannot {doing}",
                         approval.status)
    if now >= approval.expires:
        raise NotPending(f"approval {approval.id} expired at {rfc3339(approval.expires)}: cannot {doing}", "expired")


def decide(approval: Approval, decider: Principal, verdict: str, reason: Any, now: float, grant_window: float,
           *, shown_digest: str | None = None) -> Approval:
    """The approval after `decider`'s verdict, or the precise refusal.

    `shown_digest`, when the decider's client sends it, must be the digest of
    the preview this approval holds: a decision about other arguments than the
    ones shown is refused.
    """
    if verdict not in VERDICTS:
        raise BadDecision(f"verdict must be 'approve' or 'deny', not {str(verdict)[:40]!r}")
    # who may decide is checked before what state the approval is in: someone who may not decide must
    # not learn from the refusal whether it is still pending, was executed or expired
    operator = is_operator(decider)
    if is_requester(approval, decider):
        raise NotAllowed(f"you requested this call, so you cannot {verdict} it (approval {approval.id}); "
                         "another approver must decide")
    if not operator and not is_approver(approval.approvers, decider):
        raise NotAllowed(f"you are not an approver of approval {approval.id} "
                         f"(approvers: {describe_approvers(approval.approvers)})")
    _require_pending(approval, now, verdict)
    for v in approval.decisions:
        if _same_person(v.approver, v.subject, v.operator, decider.key, decider.subject, operator):
            raise AlreadyDecided(f"you already decided approval {approval.id} ({v.verdict}); "
                                 "one person counts once")
    text = check_reason(reason)
    if shown_digest is not None and shown_digest != approval.preview_digest:
        raise NotPending(f"approval {approval.id} holds other arguments than the ones you reviewed; look again",
                         approval.status)
    vote = Vote(decider.key, decider.subject, display_name(decider), cast(Verdict, verdict), text, now,
                approval.preview_digest, operator)
    decisions = (*approval.decisions, vote)
    if verdict == "deny":
        return dataclasses.replace(approval, decisions=decisions, status="denied", closed_at=now,
                                   close_reason=f"denied by {vote.display}: {text}")
    if sum(1 for v in decisions if v.verdict == "approve") >= approval.approvers.count:
        return dataclasses.replace(approval, decisions=decisions, status="approved", granted_until=now + grant_window)
    return dataclasses.replace(approval, decisions=decisions)


def expire(approval: Approval, now: float) -> Approval:
    """A pending approval past its expiry becomes expired (a denial)."""
    if approval.status != "pending":
        raise NotPending(f"approval {approval.id} is {approval.status}, not pending: cannot expire", approval.status)
    if now < approval.expires:
        raise NotPending(f"approval {approval.id} does not expire before {rfc3339(approval.expires)}", "pending")
    return dataclasses.replace(approval, status="expired", closed_at=now,
                               close_reason=f"no decision before {rfc3339(approval.expires)}")


def cancel(approval: Approval, now: float, reason: str) -> Approval:
    if approval.status != "pending":
        raise NotPending(f"approval {approval.id} is {approval.status}, not pending: cannot cancel", approval.status)
    return dataclasses.replace(approval, status="cancelled", closed_at=now, close_reason=check_reason(reason))


def execute(approval: Approval, now: float, request_id: str | None) -> Approval:
    """Approved -> executed, once, within the grant window."""
    if approval.status != "approved":
        raise NotPending(f"approval {approval.id} is {approval.status}, not approved: cannot run the call",
                         approval.status)
    if approval.granted_until is None or now >= approval.granted_until:
        raise NotPending(f"approval {approval.id} was granted until {rfc3339(approval.granted_until)}; "
                         "the call needs a new approval", "approved")
    return dataclasses.replace(approval, status="executed", executed_at=now, executed_request_id=request_id)


def approval_url(console_url: str | None, approval_id: str) -> str | None:
    """Where a person decides this approval, if a console is configured."""
    return f"{console_url.rstrip('/')}/{approval_id}" if console_url else None


def describe_pending(approval: Approval, console_url: str | None = None) -> str:
    """What a held caller is told while it waits: which approval, who may decide, where, until when."""
    where = approval_url(console_url, approval.id)
    how = f"decide at {where}" if where else f"an approver runs `ledgergate approvals approve {approval.id} --reason ...`"
    return (f"this call waits for approval {approval.id} under rule {approval.binding.rule!r}: "
            f"{describe_approvers(approval.approvers)}, {approval.approvals} so far; {how}; "
            f"it expires at {rfc3339(approval.expires)}")


def describe_outcome(approval: Approval) -> str:
    """Why a call whose approval is no longer pending does not run (or that it did)."""
    if approval.status == "denied":
        return f"approval {approval.id} was {approval.close_reason}"
    if approval.status == "expired":
        return f"approval {approval.id} expired: {approval.close_reason} (expiry is a denial)"
    if approval.status == "cancelled":
        return f"approval {approval.id} was cancelled: {approval.close_reason}"
    if approval.status == "executed":
        return (f"approval {approval.id} was already used by request {approval.executed_request_id}; "
                "an approved call runs once, ask again")
    if approval.status == "approved":
        return f"approval {approval.id} is approved until {rfc3339(approval.granted_until)}"
    return f"approval {approval.id} is pending"


def describe_approvers(spec: ApproverSpec) -> str:
    who = [f"group {g}" for g in spec.groups] + [f"subject {s}" for s in spec.subjects]
    return f"{spec.count} of {', '.join(who) or 'nobody'} (never the requester)"


__all__ = [
    "AlreadyDecided", "Approval", "approval_url", "describe_outcome", "describe_pending", "ApprovalError", "ApprovalNotFound", "ApprovalUnavailable", "BadDecision",
    "Binding", "FINAL", "ID_PREFIX", "MAX_JUSTIFICATION", "MAX_REASON", "NotAllowed", "NotPending",
    "OPERATOR_ISSUER", "STATUSES", "Status", "VERDICTS", "Verdict", "Vote", "args_digest", "binding_for",
    "cancel", "check_reason", "decide", "describe_approvers", "display_name", "execute", "expire",
    "is_approver", "is_operator", "is_requester", "looks_like_id", "may_see", "new_id", "operator_principal",
    "policy_version", "preview_digest", "rfc3339",
]
