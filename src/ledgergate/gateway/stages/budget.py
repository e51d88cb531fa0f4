"""budget: per-principal call rates (token buckets); an exhausted budget ends the call with a retry hint."""

from __future__ import annotations

import time

from ledgergate.errors import RateLimited
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.policy.budgets import Budgets


class BudgetCheck:
    def __init__(self, budgets: Budgets, evidence: Evidence) -> None:
        self.budgets = budgets
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        verdict = self.budgets.check_call(call.principal, call.server, call.method, time.time())
        if verdict.allowed:
            return
        retry_after = round(verdict.retry_after, 3)
        await self.evidence.record("budget.exceeded", call, budget=verdict.budget, retry_after_s=retry_after)
        raise RateLimited(
            f"call budget {verdict.budget!r} exhausted; retry after {verdict.retry_after:.1f}s "
            f"(request id {call.request_id})",
            data={"retryAfter": retry_after, "requestId": call.request_id},
        )
