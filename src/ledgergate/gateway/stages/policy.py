"""policy: the first request stage. Decides allow, deny or approve; a denial ends the call here."""

from __future__ import annotations

import time

from ledgergate.errors import PolicyDenied
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.base import PolicyPort


class PolicyCheck:
    def __init__(self, policy: PolicyPort, evidence: Evidence) -> None:
        self.policy = policy
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        decision = self.policy.decide(call.principal, call.server, call.method, call.target, call.arguments,
                                      time.time())
        call.decision = decision
        if decision.effect != "deny":
            return
        await self.evidence.record("policy.denied", call, with_args=True, rule=decision.rule, reason=decision.reason)
        raise PolicyDenied(
            f"denied by policy{' rule ' + repr(decision.rule) if decision.rule else ' (no rule allows it)'}; "
            f"quote request id {call.request_id} to support",
            data={"rule": decision.rule, "requestId": call.request_id},
        )
