"""result size limit and list filtering (response side)."""

from __future__ import annotations

import time

from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.base import PolicyPort
from ledgergate.policy.budgets import Budgets
from ledgergate.upstream.base import Message
from ledgergate.wire import jsonrpc

LIST_ITEMS = {"tools/list": "tools", "resources/list": "resources",
              "resources/templates/list": "resourceTemplates", "prompts/list": "prompts"}


class ResultLimit:
    """A result larger than the caller's `max_result_bytes` is replaced by an error (and recorded so)."""

    def __init__(self, budgets: Budgets, evidence: Evidence) -> None:
        self.budgets = budgets
        self.evidence = evidence

    async def on_response(self, call: Call, response: Message) -> Message:
        if "result" not in response or self.budgets.max_result_bytes(call.principal, call.server) is None:
            return response
        size = len(jsonrpc.dumps(response["result"]))
        if self.budgets.check_result_size(call.principal, call.server, size):
            return response
        await self.evidence.record("rpc.response", call, error="result too large", result_bytes=size,
                                   latency_ms=call.latency_ms())
        call.answered = True
        return jsonrpc.error(response.get("id"), -32015,
                             f"the result ({size} bytes) exceeds this caller's limit; request id {call.request_id}")


class ListFilter:
    """The four list answers show only what the caller may use."""

    def __init__(self, policy: PolicyPort) -> None:
        self.policy = policy

    async def on_response(self, call: Call, response: Message) -> Message:
        key = LIST_ITEMS.get(call.method)
        result = response.get("result")
        if key is None or not isinstance(result, dict) or not isinstance(result.get(key), list):
            return response
        allowed = self.policy.filter_list(call.principal, call.server, call.method, result[key], time.time())
        return {**response, "result": {**result, key: allowed}}
