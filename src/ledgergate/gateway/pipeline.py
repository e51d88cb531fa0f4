"""The data path for one client request, as an ordered chain of stages (DESIGN.md, "The data path").

    request:  target ─▶ policy ─▶ budget ─▶ tool drift ─▶ task ownership ─▶ approval ─▶ audit(request, durable)
                                                                                        │
                                                                                    upstream
                                                                                        │
    response: audit(response, durable) ◀─ masking ◀─ input requests ◀─ list filtering ◀─ result size limit ◀─ task records ◀─ drift observation

The transport (HTTP, both protocol eras), identity (`auth.py`) and sessions run
before the chain. A pipeline is built from one config snapshot: a reload builds
a new one, and a request keeps the pipeline it started with until its answer is
out, so one call is never decided by one policy and masked by another.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from functools import partial
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ledgergate.approvals.service import ApprovalService
from ledgergate.errors import INTERNAL_ERROR, GatewayError, LedgerUnavailable, UpstreamError
from ledgergate.gateway.call import Call
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.stages.approval import ApprovalGate
from ledgergate.gateway.stages.audit import AuditRequest, AuditResponse, Evidence
from ledgergate.gateway.stages.base import AuditPort, RequestStage, ResponseStage
from ledgergate.gateway.stages.budget import BudgetCheck
from ledgergate.gateway.stages.drift import DriftCheck, DriftObserve
from ledgergate.gateway.stages.masking import MaskResponse
from ledgergate.gateway.stages.messages import InputRequests, Messages
from ledgergate.gateway.stages.policy import PolicyCheck
from ledgergate.gateway.stages.results import ListFilter, ResultLimit
from ledgergate.gateway.stages.target import TargetCheck
from ledgergate.gateway.stages.tasks import TaskOwnership, TaskRecords
from ledgergate.gateway.tasks import GatewayTasks, TaskOwners
from ledgergate.principal import Principal
from ledgergate.requestlog import REQUEST_ID
from ledgergate.upstream.base import Message, UpstreamSession, mask_quoted

if TYPE_CHECKING:
    from ledgergate.gateway.telemetry import Tracing

log = logging.getLogger("ledgergate.pipeline")

#: the most of an upstream's failure (masked) a client, the log and the record quote
SHOWN_ERROR_CHARS = 300


@dataclass(frozen=True)
class Lasting:
    """What outlives a config reload: the ledger, the drift guard's store, who owns which task,
    the approvals service and the key that seals a waiting client's state."""

    ledger: AuditPort
    digest: Callable[[Any], str]
    drift: DriftGuard
    tasks: TaskOwners
    approvals: ApprovalService | None = None
    state_key: bytes = b""
    gateway_tasks: GatewayTasks = field(default_factory=GatewayTasks)
    #: OpenTelemetry tracing (`gateway/telemetry.py`), None when not configured
    tracing: Tracing | None = None
    #: why a call that waited for a human may no longer run under the config in force now (None: it may);
    #: the app's, which reads the current snapshot (`app.Gateway._may_still_run`)
    recheck: Callable[[Call], str | None] | None = None


class Pipeline:
    def __init__(self, snapshot: Snapshot, request: Sequence[RequestStage], response: Sequence[ResponseStage],
                 evidence: Evidence, messages: Messages, policy: PolicyCheck | None = None,
                 target: RequestStage | None = None, tracing: Tracing | None = None) -> None:
        self.snapshot = snapshot
        self.policy = policy if policy is not None else PolicyCheck(snapshot.policy, evidence)
        self.target = target if target is not None else TargetCheck(evidence)
        self.tracing = tracing
        self.request_stages = tuple(request)
        self.response_stages = tuple(response)
        self.evidence = evidence
        self.messages = messages

    @classmethod
    def build(cls, snapshot: Snapshot, lasting: Lasting) -> Pipeline:
        evidence = Evidence(lasting.ledger, snapshot.masker, lasting.digest)
        policy = PolicyCheck(snapshot.policy, evidence)
        request: list[RequestStage] = [
            TargetCheck(evidence),
            policy,
            BudgetCheck(snapshot.budgets, evidence),
            DriftCheck(lasting.drift, evidence),
            TaskOwnership(lasting.tasks, evidence),
            ApprovalGate(lasting.approvals, evidence, snapshot.settings.approvals, snapshot.policy_version,
                         lasting.state_key, snapshot.settings.public_url, tasks=lasting.gateway_tasks,
                         owners=lasting.tasks, recheck=lasting.recheck),
            AuditRequest(evidence),
        ]
        response: list[ResponseStage] = [
            DriftObserve(lasting.drift, evidence),
            TaskRecords(lasting.tasks),
            ResultLimit(snapshot.budgets, evidence),
            ListFilter(snapshot.policy),
            InputRequests(snapshot.policy, evidence),
            MaskResponse(snapshot.masker),
            AuditResponse(evidence),
        ]
        return cls(snapshot, request, response, evidence,
                   Messages(snapshot.policy, snapshot.masker, evidence), policy, request[0], lasting.tracing)

    async def admit(self, server: str, principal: Principal, method: str, session_id: str | None = None) -> None:
        """Before anything is opened upstream for `principal`: may it use `server` at all? Raises
        stages.policy.ServerDenied (recorded as `policy.denied`) when not."""
        await self.policy.admit(server, principal, method, session_id)

    async def precheck(self, call: Call) -> None:
        """The call's target and policy stages alone, before an upstream session is opened for it: a call
        policy refuses opens nothing (the chain runs them again, to the same effect)."""
        await self.target.on_request(call)
        await self.policy.on_request(call)

    def handle(self, call: Call, upstream: UpstreamSession, start: int = 0) -> AsyncGenerator[Message, None]:
        """What the client should see: notifications and server requests, then the answer (in a span
        when tracing is on; untouched when it is off)."""
        if self.tracing is None or start:
            return self._handle(call, upstream, start)
        return self.tracing.traced(call, self._handle(call, upstream, start))

    async def _handle(self, call: Call, upstream: UpstreamSession, start: int = 0) -> AsyncGenerator[Message, None]:
        # the call is an argument, not bound in: a partial holding the call it is stored on would be a
        # reference cycle, keeping every call's objects for the cyclic collector instead of freeing
        # them when the call ends (tests/integration/test_call_garbage.py)
        call.resume = partial(self._finish, upstream)
        REQUEST_ID.set(call.request_id)  # every log line of this call names it (app.configure_logging)
        try:
            for index in range(start, len(self.request_stages)):
                call.next_stage = index + 1
                held = await self.request_stages[index].on_request(call)  # a refusal raises, after its record
                if held is not None:
                    async with aclosing(held) as waiting:
                        async for message in waiting:  # what the client sees while a stage holds the call
                            yield message
                            if "method" not in message:
                                return  # the stage answered in the upstream's place
        except GatewayError as exc:
            # the stage contract: a stage records its refusal before raising it (unless the ledger failed)
            exc.recorded = not isinstance(exc, LedgerUnavailable)
            raise
        try:
            async with aclosing(upstream.call(call.message)) as messages:
                async for message in messages:
                    if "method" in message:
                        outbound = await self.messages.during_call(call, message, upstream)
                        if outbound is not None:
                            yield outbound
                        continue
                    yield await self.answer(call, message)
                    return
        except UpstreamError as exc:
            shown = self.masked_error(exc)
            log.warning("upstream %s failed on %s: %s", call.server, call.method, shown.message)
            await self.evidence.record("rpc.response", call, error=shown.message, latency_ms=call.latency_ms())
            refusal = UpstreamError(f"{shown.message}; quote request id {call.request_id} to support",
                                    data={**(exc.data or {}), "requestId": call.request_id},
                                    http_status=exc.http_status, rpc_code=exc.rpc_code)
            refusal.recorded = refusal.masked = True
            raise refusal from None
        except GatewayError:
            raise  # a response stage's refusal (result too large, masking failed closed): recorded by the stage
        except Exception:  # a fault of ours while relaying: the forwarded call still gets its outcome recorded
            # The rpc.request record says the call was forwarded; without this one the ledger would show an
            # allowed call whose outcome nobody can find. The traceback goes to the log, never to the client.
            log.exception("internal error relaying %s to %s", call.method, call.server)
            await self.evidence.record("rpc.response", call, error="internal gateway error", latency_ms=call.latency_ms())
            fault = GatewayError(f"internal gateway error; quote request id {call.request_id} to support",
                                 data={"requestId": call.request_id}, http_status=500, rpc_code=INTERNAL_ERROR)
            fault.recorded = True
            raise fault from None

    def masked_error(self, exc: UpstreamError) -> UpstreamError:
        """`exc` as a client or a log line may see it. An upstream that answers a call with an HTTP error
        can put anything in its JSON-RPC message, account numbers included, and that message would reach
        the client without passing the response stages; so it is masked here, with the ledger's profile
        (never weaker than a caller's)."""
        if exc.masked:
            return exc
        # masked whole, then shortened (`mask_quoted`): a value cut first would pass masking
        text = mask_quoted(exc.message, lambda whole: str(self.evidence.mask(whole)[0]), SHOWN_ERROR_CHARS)
        shown = UpstreamError(text, data=exc.data, http_status=exc.http_status, rpc_code=exc.rpc_code,
                              headers=exc.headers)
        shown.recorded, shown.masked = exc.recorded, True
        return shown

    async def _finish(self, upstream: UpstreamSession, call: Call) -> Message:
        """The rest of the chain for a call a stage let go on later: its answer (notifications dropped)."""
        answer: Message | None = None
        async with aclosing(self.handle(call, upstream, call.next_stage)) as messages:
            async for message in messages:
                if "method" not in message:
                    answer = message
        if answer is None:
            raise UpstreamError("upstream ended the call without an answer")
        return answer

    async def answer(self, call: Call, response: Message) -> Message:
        """The upstream's answer through the response stages, until one of them answers instead."""
        for stage in self.response_stages:
            response = await stage.on_response(call, response)
            if call.answered:
                break
        return response
