"""approval: a call whose decision is `approve` waits for a human."""

from __future__ import annotations

from ledgergate.errors import ApprovalPending
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence


class ApprovalGate:
    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        decision = call.decision
        if decision is None or decision.effect != "approve":
            return
        await self.evidence.record("approval.requested", call, with_args=True, rule=decision.rule)
        raise ApprovalPending(
            f"this call needs approval under rule {decision.rule!r}; approvals are not available yet, "
            f"so it is refused (request id {call.request_id})",
            data={"rule": decision.rule, "requestId": call.request_id},
        )
