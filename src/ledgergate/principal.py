"""Who is asking: the identity every later stage reasons about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PrincipalKind = Literal["human", "service"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified identity.

    `issuer` + `subject` is the stable key (sessions are bound to it, approvals
    name it, the ledger records it). `claims` keeps the verified token claims so
    policy conditions can look at e.g. a CI token's repository or ref; it never
    holds the token itself.
    """

    issuer: str
    subject: str
    kind: PrincipalKind = "human"
    groups: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    #: which credential of this identity made the call, where one identity can hold several in turn (an
    #: API key's id: a key revoked after a leak and its replacement share a name, never an id)
    credential: str | None = None
    # Derived once: every request of a cached identity reads them, several times.
    key: str = field(init=False, repr=False, compare=False)
    _summary: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.issuer}#{self.subject}")
        summary = {"issuer": self.issuer, "subject": self.subject, "kind": self.kind, "groups": sorted(self.groups)}
        if self.credential is not None:
            summary["credential"] = self.credential
        object.__setattr__(self, "_summary", summary)

    def summary(self) -> dict[str, Any]:
        """The part of a principal that goes into audit records (shared: callers must not mutate it)."""
        return self._summary
