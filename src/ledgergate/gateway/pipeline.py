"""The data path for one client request, as an ordered chain of stages (DESIGN.md, "The data path").

    request:  policy ─▶ budget ─▶ tool drift ─▶ task ownership ─▶ approval ─▶ audit(request, durable)
                                                                                        │
                                                                                    upstream
                                                                                        │
    response: audit(response, durable) ◀─ masking ◀─ list filtering ◀─ result size limit ◀─ task records ◀─ drift observation

The transport (HTTP, both protocol eras), identity (`auth.py`) and sessions run
before the chain. A pipeline is built from one config snapshot: a reload builds
a new one, and a request keeps the pipeline it started with until its answer is
out, so one call is never decided by one policy and masked by another.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ledgergate.errors import UpstreamError
from ledgergate.gateway.call import Call
from ledgergate.gateway.drift import DriftGuard
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.stages.approval import ApprovalGate
from ledgergate.gateway.stages.audit import AuditRequest, AuditResponse, Evidence
from ledgergate.gateway.stages.base import AuditPort, RequestStage, ResponseStage
from ledgergate.gateway.stages.budget import BudgetCheck
from ledgergate.gateway.stages.drift import DriftCheck, DriftObserve
from ledgergate.gateway.stages.masking import MaskResponse
from ledgergate.gateway.stages.messages import Messages
from ledgergate.gateway.stages.policy import PolicyCheck
from ledgergate.gateway.stages.results import ListFilter, ResultLimit
from ledgergate.gateway.stages.tasks import TaskOwnership, TaskRecords
from ledgergate.gateway.tasks import TaskOwners
from ledgergate.upstream.base import Message, UpstreamSession


@dataclass(frozen=True)
class Lasting:
    """What outlives a config reload: the ledger, the drift guard's store, who owns which task."""

    ledger: AuditPort
    digest: Callable[[Any], str]
    drift: DriftGuard
    tasks: TaskOwners


class Pipeline:
    def __init__(self, snapshot: Snapshot, request: Sequence[RequestStage], response: Sequence[ResponseStage],
                 evidence: Evidence, messages: Messages) -> None:
        self.snapshot = snapshot
        self.request_stages = tuple(request)
        self.response_stages = tuple(response)
        self.evidence = evidence
        self.messages = messages

    @classmethod
    def build(cls, snapshot: Snapshot, lasting: Lasting) -> Pipeline:
        evidence = Evidence(lasting.ledger, snapshot.masker, lasting.digest)
        request: list[RequestStage] = [
            PolicyCheck(snapshot.policy, evidence),
            BudgetCheck(snapshot.budgets, evidence),
            DriftCheck(lasting.drift, evidence),
            TaskOwnership(lasting.tasks, evidence),
            ApprovalGate(evidence),
            AuditRequest(evidence),
        ]
        response: list[ResponseStage] = [
            DriftObserve(lasting.drift, evidence),
            TaskRecords(lasting.tasks),
            ResultLimit(snapshot.budgets, evidence),
            ListFilter(snapshot.policy),
            MaskResponse(snapshot.masker),
            AuditResponse(evidence),
        ]
        return cls(snapshot, request, response, evidence,
                   Messages(snapshot.policy, snapshot.masker, evidence))

    async def handle(self, call: Call, upstream: UpstreamSession) -> AsyncGenerator[Message, None]:
        """Yield what the client should see: notifications and server requests, then the answer."""
        for stage in self.request_stages:
            await stage.on_request(call)  # a refusal raises, after the stage recorded it
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
            await self.evidence.record("rpc.response", call, error=exc.message, latency_ms=call.latency_ms())
            raise

    async def answer(self, call: Call, response: Message) -> Message:
        """The upstream's answer through the response stages, until one of them answers instead."""
        for stage in self.response_stages:
            response = await stage.on_response(call, response)
            if call.answered:
                break
        return response
