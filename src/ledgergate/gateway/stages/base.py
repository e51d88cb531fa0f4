"""What a stage is, and the ports the stages are built on.

A stage has a request hook, a response hook, or both, like mitmproxy's addons.
A request hook that refuses the call writes its own ledger record and raises a
`GatewayError` carrying the answer. A request hook that holds the call (the
approval stage) returns an async iterator of what the client should see while
it waits; if that ends with an answer (a message without a method), the call is
answered there and not forwarded. A response hook returns the answer (the same
or a changed one) and may set `call.answered` after writing its record, when it
replaced the answer with its own. Stages know nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from ledgergate.gateway.call import Call
from ledgergate.policy.decision import Decision
from ledgergate.principal import Principal
from ledgergate.upstream.base import Message


class RequestStage(Protocol):
    async def on_request(self, call: Call) -> AsyncGenerator[Message, None] | None:
        """Let the call on (None), hold it (messages for the client meanwhile), or record why not and
        raise errors.GatewayError."""


class ResponseStage(Protocol):
    async def on_response(self, call: Call, response: Message) -> Message:
        """The answer as the next stage (finally the client) should see it."""


# ── ports: what the stages need from the packages below the gateway ─────────
class IdentityPort(Protocol):
    async def authenticate(self, credential: str | None) -> Principal:
        """The principal for a bearer credential; raises errors.AuthError."""


class PolicyPort(Protocol):
    def decide(self, principal: Principal, server: str, method: str, target: str | None,
               arguments: Mapping[str, Any] | None, now: float, notification: bool = False) -> Decision:
        """`notification`: the message has no `id` (only then is `notifications/*` housekeeping)."""

    def filter_list(self, principal: Principal, server: str, method: str, items: list[dict[str, Any]],
                    now: float) -> list[dict[str, Any]]:
        """The items of a list answer (tools, resources, templates, prompts) the caller may use."""


class MaskingPort(Protocol):
    def mask(self, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
        """A masked deep copy of a JSON value and counts of what was masked, by detector."""

    def mask_for_ledger(self, value: Any) -> tuple[Any, dict[str, int]]:
        """The ledger's profile: every detector, redacted — never weaker than any caller's."""

    def mask_for_approvers(self, value: Any, key: bytes) -> tuple[Any, dict[str, int]]:
        """Every detector, as pseudonyms keyed with `key`: tells values apart without showing them."""


class AuditPort(Protocol):
    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        """Make one record durable; returns its leaf index. Raises errors.LedgerUnavailable."""
