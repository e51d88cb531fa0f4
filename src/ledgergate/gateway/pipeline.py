"""The data path for one client request, as an ordered list of stages (DESIGN.md, "The data path").

    transport ─▶ identity ─▶ session ─▶ policy ─▶ approval ─▶ audit(request, durable)
                                                                      │
    transport ◀─ audit(response, durable) ◀─ masking ◀─ upstream ◀────┘

`transport` (HTTP, both protocol eras) and `session` live in transport.py and
sessions.py; this module orders everything from identity on. Each stage is an
object with one job (see stages.py). Anything a stage cannot decide or record
ends the request with a clear error and nothing is forwarded.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ledgergate.errors import (
    ApprovalPending,
    AuthError,
    GatewayError,
    LedgerUnavailable,
    PolicyDenied,
    RateLimited,
    UpstreamError,
)
from ledgergate.wire import jsonrpc
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.stages import (
    AuditStage,
    IdentityStage,
    MaskingStage,
    PolicyStage,
)
from ledgergate.gateway.tasks import TASK_METHODS, TaskOwners
from ledgergate.principal import Principal
from ledgergate.policy.budgets import Budgets
from ledgergate.policy.decision import Decision
from ledgergate.policy.rules import request_target
from ledgergate.upstream.base import Message, UpstreamSession

log = logging.getLogger("ledgergate.pipeline")

LIST_ITEMS = {"tools/list": "tools", "resources/list": "resources",
              "resources/templates/list": "resourceTemplates", "prompts/list": "prompts"}
SERVER_REQUESTS = ("sampling/createMessage", "elicitation/create", "roots/list")
#: where data lives in a result; definitions (tool schemas, list entries) are never masked
RESULT_DATA = {"tools/call": ("content", "structuredContent"), "resources/read": ("contents",),
               "prompts/get": ("messages",), "completion/complete": ("completion",)}


def arguments_of(method: str, params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not params:
        return None
    if method in ("tools/call", "prompts/get"):
        args = params.get("arguments")
        return args if isinstance(args, Mapping) else None
    if method == "completion/complete":
        return params.get("argument")
    return None


_REQUEST_PREFIX = "req_" + secrets.token_hex(4)
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """A short id the caller can quote to support; it names the ledger records of this request.
    Unique per process (random prefix) without a system call per request."""
    return f"{_REQUEST_PREFIX}{next(_request_counter):x}"


@dataclass
class Call:
    """One client request on its way through the stages."""

    server: str
    principal: Principal
    message: Message
    session_id: str | None = None
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)

    @property
    def method(self) -> str:
        return self.message["method"]

    @property
    def params(self) -> dict[str, Any]:
        return self.message.get("params") or {}


class Pipeline:
    def __init__(self, identity: Callable[[], IdentityStage], policy: Callable[[], PolicyStage],
                 masking: Callable[[], MaskingStage], audit: AuditStage,
                 digest: Callable[[Any], str], budgets: Callable[[], Budgets], drift: DriftGuard) -> None:
        # Stages that a config reload may replace are held as getters, so a reload swaps each in
        # one assignment and a request sees the old or the new stage, never half of each.
        self._identity = identity
        self._policy = policy
        self._masking = masking
        self._budgets = budgets
        self.audit = audit
        self.digest = digest
        self.drift = drift
        self.tasks = TaskOwners()

    @property
    def identity(self) -> IdentityStage:
        return self._identity()

    @property
    def policy(self) -> PolicyStage:
        return self._policy()

    @property
    def masking(self) -> MaskingStage:
        return self._masking()

    def ledger_mask(self, value: Any) -> tuple[Any, dict[str, int]]:
        """The ledger's own profile: every detector, redacted — never weaker than any caller's."""
        return self._masking().mask_for_ledger(value)

    # ── identity ────────────────────────────────────────────────────────────
    async def authenticate(self, credential: str | None, server: str, remote: str | None) -> Principal:
        try:
            return await self.identity.authenticate(credential)
        except AuthError as exc:
            await self.audit.append("auth.denied", {"server": server, "reason": exc.reason,
                                                    "detail": exc.message, "remote": remote})
            raise

    # ── the request path ───────────────────────────────────────────────────
    async def handle(self, call: Call, upstream: UpstreamSession) -> AsyncGenerator[Message, None]:
        """Yield what the client should see: notifications and server requests, then the response."""
        method, params = call.method, call.params
        target = request_target(method, params)
        arguments = arguments_of(method, params)
        now = time.time()
        decision = self.policy.decide(call.principal, call.server, method, target, arguments, now)
        base = self._base_fields(call, method, target)

        if decision.effect == "deny":
            await self.audit.append("policy.denied", {**base, "rule": decision.rule, "reason": decision.reason,
                                                      **self._args_fields(arguments)})
            raise PolicyDenied(
                f"denied by policy{' rule ' + repr(decision.rule) if decision.rule else ' (no rule allows it)'}; "
                f"quote request id {call.request_id} to support",
                data={"rule": decision.rule, "requestId": call.request_id},
            )
        budget = self._budgets().check_call(call.principal, call.server, method, now)
        if not budget.allowed:
            await self.audit.append("budget.exceeded", {**base, "budget": budget.budget,
                                                        "retry_after_s": round(budget.retry_after, 3)})
            raise RateLimited(
                f"call budget {budget.budget!r} exhausted; retry after {budget.retry_after:.1f}s "
                f"(request id {call.request_id})",
                data={"retryAfter": round(budget.retry_after, 3), "requestId": call.request_id},
            )
        if method == "tools/call" and await self.drift.is_blocked(call.server, target):
            await self.audit.append("tool.drift_blocked", {**base, **self._args_fields(arguments)})
            raise PolicyDenied(
                f"tool {target!r} changed its definition since it was accepted; an operator must run "
                f"`ledgergate tools accept {call.server} {target}` (request id {call.request_id})",
                data={"requestId": call.request_id, "reason": "tool_drift"},
            )
        if method in TASK_METHODS and not self.tasks.owns(call.server, call.principal.key, params.get("taskId")):
            await self.audit.append("policy.denied", {**base, "reason": "task not owned", "task": params.get("taskId")})
            raise PolicyDenied(f"unknown task for this identity (request id {call.request_id})",
                               data={"requestId": call.request_id, "reason": "task_not_owned"})
        if decision.effect == "approve":
            await self.audit.append("approval.requested", {**base, "rule": decision.rule,
                                                           **self._args_fields(arguments)})
            raise ApprovalPending(
                f"this call needs approval under rule {decision.rule!r}; approvals are not available yet, "
                f"so it is refused (request id {call.request_id})",
                data={"rule": decision.rule, "requestId": call.request_id},
            )

        await self.audit.append("rpc.request", {**base, "rule": decision.rule, "decision": decision.effect,
                                                **self._args_fields(arguments)})
        try:
            async with aclosing(upstream.call(call.message)) as messages:
                async for message in messages:
                    if "method" in message:
                        outbound = await self._server_message(call, decision, message, upstream)
                        if outbound is not None:
                            yield outbound
                        continue
                    yield await self._response(call, decision, message, base)
                    return
        except UpstreamError as exc:
            await self.audit.append("rpc.response", {**base, "error": exc.message,
                                                     "latency_ms": self._latency(call)})
            raise

    async def _server_message(self, call: Call, decision: Decision, message: Message,
                              upstream: UpstreamSession) -> Message | None:
        """A notification or server-to-client request arriving during the call."""
        method = message["method"]
        if "id" in message and method in SERVER_REQUESTS:
            verdict = self.policy.decide(call.principal, call.server, method, None, None, time.time())
            if verdict.effect != "allow":
                await self.audit.append("policy.denied", {**self._base_fields(call, method, None),
                                                          "direction": "server-to-client", "rule": verdict.rule})
                await upstream.reply(jsonrpc.error(message["id"], -32003,
                                                   f"the gateway's policy refuses {method} for this caller"))
                return None
        masked, counts = self._mask_params(message, decision.mask)
        ledger_view, _ = self.ledger_mask(message)
        await self.audit.append("rpc.server_message", {
            **self._base_fields(call, call.method, None), "message_method": method,
            "message": ledger_view, "masked": counts,
        })
        return masked

    async def _response(self, call: Call, decision: Decision, response: Message, base: dict[str, Any]) -> Message:
        result = response.get("result")
        if call.method == "tools/list" and isinstance(result, dict) and isinstance(result.get("tools"), list):
            report = await self.drift.observe(call.server, result["tools"])
            for name, verdict in report.changed.items():
                await self.audit.append("tool.drift", {"server": call.server, "tool": name, "mode": report.mode,
                                                       "blocked": verdict.blocked, "seen": verdict.seen,
                                                       "accepted": verdict.accepted, "request_id": call.request_id})
            if report.blocked:
                result = {**result, "tools": report.filter_tools(result["tools"])}
                response = {**response, "result": result}
        if isinstance(result, dict):
            if "task" in result:
                self.tasks.record(call.server, call.principal.key, result)
            elif call.method == "tasks/list":
                result = self.tasks.filter_list(call.server, call.principal.key, result)
                response = {**response, "result": result}
        limit_check = self._budgets()
        if limit_check.max_result_bytes(call.principal, call.server) is not None and "result" in response:
            size = len(jsonrpc.dumps(response["result"]))
            if not limit_check.check_result_size(call.principal, call.server, size):
                await self.audit.append("rpc.response", {**base, "error": "result too large", "result_bytes": size,
                                                         "latency_ms": self._latency(call)})
                return jsonrpc.error(response.get("id"), -32015,
                                     f"the result ({size} bytes) exceeds this caller's limit; "
                                     f"request id {call.request_id}")
        if isinstance(result, dict) and call.method in LIST_ITEMS:
            key = LIST_ITEMS[call.method]
            items = result.get(key)
            if isinstance(items, list):
                allowed = self.policy.filter_list(call.principal, call.server, call.method, items, time.time())
                result = {**result, key: allowed}
                response = {**response, "result": result}
        masked, counts = self._mask_response(call.method, response, decision.mask)
        ledger_view, _ = self.ledger_mask(response.get("result", response.get("error")))
        fields = {**base, "latency_ms": self._latency(call), "masked": counts}
        if "error" in response:
            fields["error"] = ledger_view
        else:
            fields["response"] = ledger_view
        await self.audit.append("rpc.response", fields)
        return masked

    # ── notifications and replies from the client ──────────────────────────
    async def client_message(self, server: str, principal: Principal, session_id: str | None,
                             message: Message) -> None:
        """Record a client notification or a client's answer to a server request before it is forwarded."""
        ledger_view, _ = self.ledger_mask(message)
        kind = "rpc.notification" if "method" in message else "rpc.reply"
        await self.audit.append(kind, {"server": server, "session": session_id,
                                       "principal": principal.summary(), "message": ledger_view})

    async def unsolicited(self, server: str, principal: Principal, session_id: str | None,
                          message: Message) -> Message | None:
        """A message the server sent outside any call (standalone stream): authorise, mask, record."""
        method = message.get("method", "")
        decision = self.policy.decide(principal, server, method, None, None, time.time())
        if "id" in message and method in SERVER_REQUESTS and decision.effect != "allow":
            return None
        masked, counts = self._mask_params(message, decision.mask)
        ledger_view, _ = self.ledger_mask(message)
        await self.audit.append("rpc.server_message", {"server": server, "session": session_id,
                                                       "principal": principal.summary(), "message_method": method,
                                                       "message": ledger_view, "masked": counts})
        return masked

    # ── masking what goes back to the client ────────────────────────────────
    def _mask_response(self, method: str, response: Message, profile: str | None) -> tuple[Message, dict[str, int]]:
        """Mask the data a result carries (and error texts); tool and prompt definitions pass untouched."""
        if profile is None:
            return response, {}
        counts: dict[str, int] = {}
        if "error" in response:
            masked_error, counts = self.masking.mask(response["error"], profile)
            return {**response, "error": masked_error}, counts
        result = response.get("result")
        fields: tuple[str, ...] | None
        if method == "tasks/result" and isinstance(result, dict):
            # the payload of whatever call the task ran: everything but the envelope is data
            fields = tuple(k for k in result if k != "_meta")
        else:
            fields = RESULT_DATA.get(method)
        if not isinstance(result, dict) or not fields:
            return response, counts
        result = dict(result)
        for name in fields:
            if name in result:
                result[name], found = self.masking.mask(result[name], profile)
                for key, n in found.items():
                    counts[key] = counts.get(key, 0) + n
        return {**response, "result": result}, counts

    def _mask_params(self, message: Message, profile: str | None) -> tuple[Message, dict[str, int]]:
        if profile is None or "params" not in message:
            return message, {}
        params, counts = self.masking.mask(message["params"], profile)
        return {**message, "params": params}, counts

    # ── helpers ─────────────────────────────────────────────────────────────
    def _base_fields(self, call: Call, method: str, target: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"request_id": call.request_id, "session": call.session_id,
                                  "principal": call.principal.summary(), "server": call.server, "method": method}
        if target is not None:
            fields["target"] = target
        return fields

    def _args_fields(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        if arguments is None:
            return {}
        masked, counts = self.ledger_mask(arguments)
        return {"args": masked, "args_hmac": self.digest(arguments), "args_masked": counts}

    @staticmethod
    def _latency(call: Call) -> float:
        return round((time.perf_counter() - call.started) * 1000, 3)


__all__ = ["Call", "Pipeline", "GatewayError", "LedgerUnavailable"]
