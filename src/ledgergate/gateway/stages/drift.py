"""tool drift: a call of a tool whose definition changed since it was accepted is refused (request side);
every upstream `tools/list` is compared with the accepted fingerprints and drifted tools are hidden
(response side), and a rule naming an exact tool no server it covers lists is logged once (a typo such as
`transfer_fund` leaves the rule inert). The judgement and the store I/O are `gateway/drift.py`'s."""

from __future__ import annotations

from ledgergate.errors import PolicyDenied
from ledgergate.gateway.call import Call
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.masking import mask_definitions
from ledgergate.policy.toolnames import RuleToolNames
from ledgergate.upstream.base import Message


class DriftCheck:
    def __init__(self, guard: DriftGuard, evidence: Evidence) -> None:
        self.guard = guard
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        if call.method != "tools/call" or not await self.guard.is_blocked(call.server, call.target):
            return
        await self.evidence.record("tool.drift_blocked", call, with_args=True)
        raise PolicyDenied(
            f"tool {call.target!r} changed its definition since it was accepted; an operator must run "
            f"`ledgergate tools accept {call.server} {call.target}` (request id {call.request_id})",
            data={"requestId": call.request_id, "reason": "tool_drift"},
        )


class DriftObserve:
    def __init__(self, guard: DriftGuard, evidence: Evidence, rule_tools: RuleToolNames | None = None) -> None:
        self.guard = guard
        self.evidence = evidence
        #: the policy's exact tool names (built once per config snapshot), compared with complete listings
        self.rule_tools = rule_tools

    async def on_response(self, call: Call, response: Message) -> Message:
        result = response.get("result")
        if call.method != "tools/list" or not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return response
        masker = self.evidence.masker  # the ledger's profile, by value (a schema naming `ssn` stays a schema)
        report = await self.guard.observe(call.server, result["tools"],
                                          lambda definition: mask_definitions(masker, definition, None)[0])
        if self.rule_tools is not None and result.get("nextCursor") is None:
            # only once the listing is complete: a rule naming a tool of a later page is not a typo
            self.guard.warn_unlisted(call.server, self.rule_tools)
        for name, verdict in report.changed.items():
            await self.evidence.append("tool.drift", {
                "server": call.server, "tool": name, "mode": report.mode, "blocked": verdict.blocked,
                "seen": verdict.seen, "accepted": verdict.accepted, "request_id": call.request_id})
        if not report.blocked:
            return response
        return {**response, "result": {**result, "tools": report.filter_tools(result["tools"])}}
