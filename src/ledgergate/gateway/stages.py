"""The interfaces of the stages the pipeline orders (see DESIGN.md, "The data path").

Each stage lives in its own package and knows nothing of HTTP; these protocols
are the whole of what the pipeline relies on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ledgergate.principal import Principal
from ledgergate.policy.decision import Decision


class IdentityStage(Protocol):
    async def authenticate(self, credential: str | None) -> Principal:
        """The principal for a bearer credential; raises errors.AuthError."""


class PolicyStage(Protocol):
    def decide(self, principal: Principal, server: str, method: str, target: str | None,
               arguments: Mapping[str, Any] | None, now: float) -> Decision: ...

    def filter_list(self, principal: Principal, server: str, method: str, items: list[dict[str, Any]],
                    now: float) -> list[dict[str, Any]]:
        """The items of a list answer (tools, resources, templates, prompts) the caller may use."""


class MaskingStage(Protocol):
    def mask(self, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
        """A masked deep copy of a JSON value and counts of what was masked, by detector."""

    def mask_for_ledger(self, value: Any) -> tuple[Any, dict[str, int]]:
        """The ledger's profile: every detector, redacted — never weaker than any caller's."""


class AuditStage(Protocol):
    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        """Make one record durable; returns its leaf index. Raises errors.LedgerUnavailable."""
