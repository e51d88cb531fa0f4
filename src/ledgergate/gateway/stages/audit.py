"""audit(request) and audit(response): the write-ahead records, and the `Evidence` every stage records with.

A request is not forwarded before its `rpc.request` record is durable, and an
answer is not returned before its `rpc.response` record is; if the ledger
cannot write, `append` raises LedgerUnavailable and nothing moves (fail closed).
Everything that enters a record is masked with the ledger's own profile
(every detector, redacted) and raw arguments only as a keyed digest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.base import AuditPort, MaskingPort
from ledgergate.upstream.base import Message


class Evidence:
    """How stages write records: the call's common fields, masked arguments and their digest."""

    def __init__(self, ledger: AuditPort, masker: MaskingPort, digest: Callable[[Any], str]) -> None:
        self.ledger = ledger
        self.masker = masker
        self.digest = digest

    def mask(self, value: Any) -> tuple[Any, dict[str, int]]:
        return self.masker.mask_for_ledger(value)

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        return await self.ledger.append(event, fields)

    async def record(self, event: str, call: Call, *, method: str | None = None, with_args: bool = False,
                     **fields: Any) -> int:
        """One record about `call`: its ids, principal, server, method and target, then `fields`."""
        base = self.base(call, method)
        if with_args:
            base.update(self.args(call.arguments))
        base.update(fields)
        return await self.ledger.append(event, base)

    @staticmethod
    def base(call: Call, method: str | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"request_id": call.request_id, "session": call.session_id,
                                  "principal": call.principal.summary(), "server": call.server,
                                  "method": method or call.method}
        if method is None and call.target is not None:
            fields["target"] = call.target
        return fields

    def args(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        if arguments is None:
            return {}
        masked, counts = self.mask(arguments)
        return {"args": masked, "args_hmac": self.digest(arguments), "args_masked": counts}


class AuditRequest:
    """The last request stage: the call is recorded as decided before anything is forwarded."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        decision = call.decision
        released = {"approval": call.approval_id} if call.approval_id is not None else {}
        await self.evidence.record("rpc.request", call, with_args=True,
                                   rule=decision.rule if decision else None,
                                   decision=decision.effect if decision else None, **released)


class AuditResponse:
    """The last response stage: what the caller is about to see is recorded before it is sent."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    async def on_response(self, call: Call, response: Message) -> Message:
        clear = call.clear_response if call.clear_response is not None else response
        ledger_view, _ = self.evidence.mask(clear.get("result", clear.get("error")))
        outcome = "error" if "error" in clear else "response"
        await self.evidence.record("rpc.response", call, latency_ms=call.latency_ms(), masked=call.masked,
                                   **{outcome: ledger_view})
        return response
