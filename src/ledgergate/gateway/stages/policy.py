"""policy: the first deciding request stage. Decides allow, deny or approve; a denial ends the call here.

`admit` is the same question asked before anything is opened upstream (a session, a stdio
child, a stream): may this principal use this server at all? The engine answers it as it
answers protocol housekeeping (`policy/rules.py` `is_housekeeping`): allowed when some allow
rule lets the principal use the server and no deny rule matches the method."""

from __future__ import annotations

import time

from ledgergate.errors import ForbiddenError, PolicyDenied
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.base import PolicyPort
from ledgergate.principal import Principal


class ServerDenied(ForbiddenError):
    """No rule lets this principal use the server: refused before any upstream session is opened (403)."""


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

    async def admit(self, server: str, principal: Principal, method: str, session_id: str | None = None) -> None:
        """Raise ServerDenied (after its `policy.denied` record) unless `principal` may use `server` for
        `method`, a housekeeping method (`initialize`, `server/discover`, `subscriptions/listen`)."""
        decision = self.policy.decide(principal, server, method, None, None, time.time())
        if decision.effect == "allow":
            return
        call = Call(server=server, principal=principal, message={"jsonrpc": "2.0", "method": method},
                    session_id=session_id)
        await self.evidence.record("policy.denied", call, rule=decision.rule, reason=decision.reason, stage="admission")
        why = f"policy rule {decision.rule!r} denies it ({method})" if decision.rule else "no rule allows it"
        refusal = ServerDenied(
            f"Forbidden: this identity may not use server {server!r}: {why}; "
            f"quote request id {call.request_id} to support",
            data={"rule": decision.rule, "requestId": call.request_id})
        refusal.recorded = True
        raise refusal
