"""The outcome of policy evaluation, shared by policy, approvals, audit and the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Effect = Literal["allow", "deny", "approve"]


@dataclass(frozen=True, slots=True)
class ApproverSpec:
    groups: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    count: int = 1
    justification: Literal["required", "optional"] = "optional"


@dataclass(frozen=True, slots=True)
class Decision:
    """What policy decided for one call.

    `rule` names the rule that produced the effect (None for the default deny;
    for protocol housekeeping it is the rule that lets the principal use the
    server), `matched` lists every rule that matched, in order, so an operator
    can see why. `condition_errors` holds "rule: error" for every `when` that
    failed to evaluate (allow rules then do not match; deny/approve rules do:
    fail closed).
    """

    effect: Effect
    rule: str | None = None
    mask: str | None = None
    approvers: ApproverSpec | None = None
    reason: str = ""
    matched: tuple[str, ...] = field(default_factory=tuple)
    condition_errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


DEFAULT_DENY = Decision(effect="deny", rule=None, reason="no policy rule allows this (default deny)")
