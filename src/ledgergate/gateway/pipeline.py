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

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ledgergate.approvals.model import Approval
from ledgergate.approvals.service import ApprovalService
from ledgergate.errors import (
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    CallCancelled,
    GatewayError,
    LedgerUnavailable,
    UpstreamError,
)
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
from ledgergate.gateway.tasks import TASK_METHODS, GatewayTasks, TaskOwners
from ledgergate.policy.toolnames import RuleToolNames
from ledgergate.principal import Principal
from ledgergate.requestlog import REQUEST_ID
from ledgergate.upstream.base import CANCELLED, Message, UpstreamSession, mask_quoted

if TYPE_CHECKING:
    from ledgergate.gateway.telemetry import Tracing

log = logging.getLogger("ledgergate.pipeline")

#: the most of an upstream's failure (masked) a client, the log and the record quote
SHOWN_ERROR_CHARS = 300

#: what the ledger and the client are told about a forwarded call the shutdown cut off
CUT_OFF = "the gateway shut down before the call's answer; it may have run upstream"


class ShuttingDown(GatewayError):
    """The gateway is shutting down (SIGTERM, `app.Gateway.drain`): a new call is refused with nothing
    forwarded, or a call still running when the drain ends is cut off. 503, and the connection is closed,
    so the client's next attempt opens a new one, which the Service sends to a replica that serves."""

    http_status = 503
    rpc_code = SHUTTING_DOWN
    headers = ((b"connection", b"close"),)


# where a call in flight stands, for the shutdown: what its cut-off record says
_DECIDING, _FORWARDED, _ANSWERING = 0, 1, 2

#: why a call was cut off (`Flight.cut`): the shutdown's drain ended, or its client hung up
SHUTDOWN, HUNG_UP = "shutdown", "client_disconnected"
#: how long the upstream's being told of a hung-up call may hold up its end (as a client's own cancellation)
CANCEL_GRACE = 1.0
#: the tasks telling upstreams of hung-up calls (a strong reference, so none is collected half way)
_telling: set[asyncio.Task[None]] = set()


class Flight:
    """One call the pipeline is carrying, as the shutdown (and a client hanging up) sees it: the task that
    last ran it and whether it is `parked` at a `yield` (then nothing of ours runs inside it, and cancelling
    that task would hit its consumer instead), how far it got, the upstream session it goes to, and whether
    it was cut off and why (`SHUTDOWN`, `HUNG_UP`; then `settled` is the task recording that, whose result
    is the error its client is answered with)."""

    __slots__ = ("call", "cut", "holds", "parked", "phase", "pipeline", "settled", "task", "told", "upstream")

    def __init__(self, call: Call, pipeline: Pipeline, upstream: UpstreamSession | None = None) -> None:
        self.call = call
        self.pipeline = pipeline
        self.upstream = upstream
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.phase = _DECIDING
        self.parked = False
        self.cut: str | None = None
        self.told = False
        self.settled: asyncio.Task[GatewayError] | None = None
        #: a subscription is a stream that ends only with its client: it does not hold up the drain
        self.holds = call.method != "subscriptions/listen"

    def resumed(self) -> None:
        self.parked = False
        self.task = asyncio.current_task()

    def settle(self) -> asyncio.Task[GatewayError]:
        """Record how the shutdown (or the client's hanging up) ended this call (once, in a task of its own, so
        a second cancellation of the call's task cannot abandon the record); its result is the error the client
        is answered with."""
        if self.settled is None:
            ending = self.pipeline.hung_up(self) if self.cut == HUNG_UP else self.pipeline.cut_off(self)
            self.settled = asyncio.get_running_loop().create_task(ending)
        return self.settled

    def hang_up(self) -> None:
        """The client of this (stateless) call hung up, which is how a 2026-07-28 client cancels: the call ends
        as a handshake client's `notifications/cancelled` ends one (`Bridge._client_cancel`). Forwarded, the
        upstream is told (`notifications/cancelled` with the upstream's id for it; a stateless upstream is told
        by the closing of the gateway's request), then the call is interrupted where it waits; not forwarded
        yet, it is interrupted at once, so nothing is forwarded for a client that is gone. Either way it records
        its outcome on its way out (`Pipeline.hung_up`). A call whose answer is being recorded keeps it."""
        if self.cut is not None or self.phase == _ANSWERING:
            return
        self.cut = HUNG_UP
        upstream = self.upstream
        if self.phase == _FORWARDED and upstream is not None and upstream.alive:
            cancel = {"jsonrpc": "2.0", "method": CANCELLED,
                      "params": {"requestId": self.call.message.get("id"), "reason": "the client disconnected"}}
            owner = self.call.caller
            if upstream.outbound(cancel, owner) is not None:  # the upstream has it in flight under that id now
                task = asyncio.get_running_loop().create_task(self._tell(upstream, cancel, owner))
                _telling.add(task)
                task.add_done_callback(_telling.discard)
                return
        self._interrupt()

    async def _tell(self, upstream: UpstreamSession, cancel: Message, owner: str | None) -> None:
        """Tell the upstream, then end the call: told first, while the call still holds its upstream id (the
        interruption releases it), within the grace a client's own cancellation has."""
        try:
            async with asyncio.timeout(CANCEL_GRACE):
                self.told = await upstream.notify(cancel, owner)
        except Exception as exc:  # noqa: BLE001 - a call its client left ends whether or not the upstream heard
            log.warning("the upstream of a call whose client hung up could not be told to cancel it: %s",
                        type(exc).__name__)
        finally:
            self._interrupt()

    def _interrupt(self) -> None:
        """Cancel the call's task where it waits, unless it is parked (it sees `cut` when it resumes) or has left."""
        task = self.task
        if not self.parked and self.settled is None and task is not None and not task.done():
            task.cancel()


class InFlight:
    """The calls in flight across config reloads, for an orderly shutdown (`app.Gateway.drain`).

    While `accepting`, every call enters; once the drain starts, a new call is refused (`ShuttingDown`,
    recorded) and those in flight may finish: `holding` counts the ones the drain waits for. When the drain
    ends, `cut_off` ends the rest: each is cancelled where it waits (on the upstream, on an approval) and
    answered with an error naming its request id, and its outcome is recorded before the ledger closes.
    A call already writing its answer's record is let finish it, so no call gets two outcomes."""

    def __init__(self) -> None:
        self._flights: set[Flight] = set()
        self.accepting = True
        #: the drain is over: not even a call the gateway accepted earlier (a task approved now) starts
        self.ended = False

    def enter(self, call: Call, pipeline: Pipeline, upstream: UpstreamSession | None = None) -> Flight:
        flight = Flight(call, pipeline, upstream)
        self._flights.add(flight)
        return flight

    def leave(self, flight: Flight) -> None:
        self._flights.discard(flight)
        flight.task = None  # nothing of ours runs it any more: a late interruption must not hit its consumer

    def hang_up(self, call: Call) -> int:
        """The client of `call` hung up: end it where the pipeline carries it (`Flight.hang_up`); how many
        flights that was (0: not in the pipeline now). A walk of the calls in flight, made when a client hangs
        up, never per call."""
        ended = [flight for flight in self._flights if flight.call is call]
        for flight in ended:
            flight.hang_up()
        return len(ended)

    def __len__(self) -> int:
        return len(self._flights)

    def holding(self) -> int:
        """Calls in flight the drain waits for (subscription streams are not among them)."""
        return sum(1 for flight in self._flights if flight.holds)

    def close(self) -> None:
        """No new call from now on (the drain began)."""
        self.accepting = False

    async def cut_off(self, patience: float) -> list[Flight]:
        """End every call still in flight; return them once each one's outcome is recorded (or `patience`
        seconds passed for a record the ledger would not take)."""
        self.accepting, self.ended = False, True
        flights = list(self._flights)
        for flight in flights:
            if flight.cut is not None:
                continue  # its client hung up: it is ending, and records that on its way out
            flight.cut = SHUTDOWN
            task = flight.task
            if flight.phase != _ANSWERING and not flight.parked and task is not None and not task.done():
                task.cancel()  # the call records its cut-off on its way out (`Pipeline._handle`)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while loop.time() < deadline and any(f.settled is None and f in self._flights for f in flights):
            await asyncio.sleep(0.01)
        for flight in flights:
            if flight.settled is None and flight in self._flights:
                flight.settle()  # parked (nothing of ours runs in it), or it did not come out in time
        pending = [f.settled for f in flights if f.settled is not None]
        if pending:
            await asyncio.wait(pending, timeout=patience)
            # Each call now raises its error to its transport, which writes it (into an event stream, for a
            # legacy SSE client the session's GET stream): let that happen before the server, closing
            # connections, ends those streams.
            for _ in range(100):
                if not any(f in self._flights for f in flights):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
        return flights


class Hangup:
    """One request whose client cancels by hanging up (a 2026-07-28 call): left in the request's ASGI scope
    (`serving.ON_HANGUP`), it is called from the server's `connection_lost` if the client leaves before its
    answer is complete, and ends the request's `call` wherever the pipeline carries it (`InFlight.hang_up`).
    `gone` tells the bridge about a call that has not been handed to the pipeline yet (`Bridge.modern_call`).
    Made per request, it costs a small object, and nothing runs for it unless the client hangs up."""

    __slots__ = ("call", "flights", "gone")

    def __init__(self, flights: InFlight) -> None:
        self.flights = flights
        self.call: Call | None = None
        self.gone = False

    def __call__(self) -> None:
        self.gone = True
        if self.call is not None:
            self.flights.hang_up(self.call)


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
    #: keys the pseudonyms an approver sees for masked values (`ApprovalGate`); empty: they are redacted
    preview_key: bytes = b""
    gateway_tasks: GatewayTasks = field(default_factory=GatewayTasks)
    #: OpenTelemetry tracing (`gateway/telemetry.py`), None when not configured
    tracing: Tracing | None = None
    #: why a call that waited for a human may no longer run under the config in force now (None: it may);
    #: the app's, which reads the current snapshot (`app.Gateway._may_still_run`)
    recheck: Callable[[Call], str | None] | None = None
    #: the calls in flight, whichever config snapshot each runs under (the shutdown drains them)
    flights: InFlight = field(default_factory=InFlight)


class Pipeline:
    def __init__(self, snapshot: Snapshot, request: Sequence[RequestStage], response: Sequence[ResponseStage],
                 evidence: Evidence, messages: Messages, policy: PolicyCheck | None = None,
                 target: RequestStage | None = None, tracing: Tracing | None = None,
                 flights: InFlight | None = None) -> None:
        self.snapshot = snapshot
        self.flights = flights if flights is not None else InFlight()
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
                         owners=lasting.tasks, recheck=lasting.recheck, preview_key=lasting.preview_key),
            AuditRequest(evidence),
        ]
        response: list[ResponseStage] = [
            DriftObserve(lasting.drift, evidence, RuleToolNames.build(snapshot.policy.rules, snapshot.settings.servers,
                                                                      snapshot.policy_version)),
            TaskRecords(lasting.tasks),
            ResultLimit(snapshot.budgets, evidence),
            ListFilter(snapshot.policy),
            InputRequests(snapshot.policy, evidence),
            MaskResponse(snapshot.masker),
            AuditResponse(evidence),
        ]
        return cls(snapshot, request, response, evidence,
                   Messages(snapshot.policy, snapshot.masker, evidence), policy, request[0], lasting.tracing,
                   lasting.flights)

    async def admit(self, server: str, principal: Principal, method: str, session_id: str | None = None) -> None:
        """Before anything is opened upstream for `principal`: may it use `server` at all? Raises
        stages.policy.ServerDenied (recorded as `policy.denied`) when not; `ShuttingDown` (recorded) once
        the gateway drains: nothing new is opened upstream then."""
        if not self.flights.accepting:
            raise await self._refuse_opening(server, principal, method, session_id)
        await self.policy.admit(server, principal, method, session_id)

    async def precheck(self, call: Call) -> None:
        """The call's target and policy stages alone, before an upstream session is opened for it: a call
        policy refuses opens nothing (the chain runs them again, to the same effect)."""
        if not self.flights.accepting and call.method not in TASK_METHODS:
            raise await self._refuse_new(call)
        try:
            await self.target.on_request(call)
            await self.policy.on_request(call)
        except GatewayError as exc:
            # the stage contract, as in `_handle`: the refusal is recorded (a second `request.refused` from the
            # transport would count one denial twice)
            exc.recorded = not isinstance(exc, LedgerUnavailable)
            raise

    def handle(self, call: Call, upstream: UpstreamSession, start: int = 0) -> AsyncGenerator[Message, None]:
        """What the client should see: notifications and server requests, then the answer (in a span
        when tracing is on; untouched when it is off)."""
        if self.tracing is None or start:
            return self._handle(call, upstream, start)
        return self.tracing.traced(call, self._handle(call, upstream, start), self._shown)

    def _shown(self, text: str) -> str:
        """`text` as the ledger keeps it (every detector, redacted), for a trace."""
        return str(self.evidence.seal({"text": text})["text"])

    async def _handle(self, call: Call, upstream: UpstreamSession, start: int = 0) -> AsyncGenerator[Message, None]:
        # the call is an argument, not bound in: a partial holding the call it is stored on would be a
        # reference cycle, keeping every call's objects for the cyclic collector instead of freeing
        # them when the call ends (tests/integration/test_call_garbage.py)
        call.resume = partial(self._finish, upstream)
        REQUEST_ID.set(call.request_id)  # every log line of this call names it (app.configure_logging)
        flights = self.flights
        # Draining: nothing new starts. A task's poll reads what already ran, and a call accepted earlier
        # that a decision lets go on now (`start`) was let in before the drain; both pass until it ends.
        if not flights.accepting and (flights.ended or (start == 0 and call.method not in TASK_METHODS)):
            raise await self._refuse_new(call)
        flight = flights.enter(call, self, upstream)
        try:
            try:
                for index in range(start, len(self.request_stages)):
                    call.next_stage = index + 1
                    held = await self.request_stages[index].on_request(call)  # a refusal raises, after its record
                    if held is not None:
                        async with aclosing(held) as waiting:
                            async for message in waiting:  # what the client sees while a stage holds the call
                                if "method" not in message:
                                    flights.leave(flight)  # the stage answered in the upstream's place
                                    yield message
                                    return
                                flight.parked = True
                                yield message
                                flight.resumed()
                                if flight.cut:
                                    raise await asyncio.shield(flight.settle())
            except GatewayError as exc:
                # the stage contract: a stage records its refusal before raising it (unless the ledger failed)
                exc.recorded = not isinstance(exc, LedgerUnavailable)
                raise
            flight.phase = _FORWARDED  # its rpc.request record is durable: from here on it may run upstream
            try:
                async with aclosing(upstream.call(call.message)) as messages:
                    async for message in messages:
                        if "method" in message:
                            outbound = await self.messages.during_call(call, message, upstream)
                            if outbound is not None:
                                flight.parked = True
                                yield outbound
                                flight.resumed()
                                if flight.cut:
                                    raise await asyncio.shield(flight.settle())
                            continue
                        if flight.cut:  # its outcome is the shutdown's (or its client's), recorded already or being so
                            raise await asyncio.shield(flight.settle())
                        flight.phase = _ANSWERING
                        answer = await self.answer(call, message)
                        flights.leave(flight)  # its outcome is recorded: the drain need not wait for it
                        yield answer
                        return
            except UpstreamError as exc:
                if flight.cut:  # the upstream connector turned the cut-off's cancellation into a failure
                    raise await asyncio.shield(flight.settle()) from None
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
                if flight.cut:
                    raise await asyncio.shield(flight.settle()) from None
                # The rpc.request record says the call was forwarded; without this one the ledger would show an
                # allowed call whose outcome nobody can find. The traceback goes to the log, never to the client.
                log.exception("internal error relaying %s to %s", call.method, call.server)
                await self.evidence.record("rpc.response", call, error="internal gateway error",
                                           latency_ms=call.latency_ms())
                fault = GatewayError(f"internal gateway error; quote request id {call.request_id} to support",
                                     data={"requestId": call.request_id}, http_status=500, rpc_code=INTERNAL_ERROR)
                fault.recorded = True
                raise fault from None
        except asyncio.CancelledError:
            if not flight.cut:
                raise  # the call was cancelled, not by the shutdown or its client's hanging up
            # The drain ended with this call still running (`InFlight.cut_off`), or its client hung up
            # (`Flight.hang_up`): it is answered (if anyone still reads) and recorded, not dropped.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise await asyncio.shield(flight.settle()) from None
        finally:
            flights.leave(flight)

    # ── shutdown ────────────────────────────────────────────────────────────
    async def _refuse_new(self, call: Call) -> ShuttingDown:
        """A call that arrives while the gateway drains: refused with nothing forwarded, and recorded."""
        refusal = ShuttingDown(f"the gateway is shutting down and takes no new calls; nothing was forwarded: "
                               f"send the call again, another replica will take it (request id {call.request_id})",
                               data={"requestId": call.request_id, "reason": "shutting_down", "forwarded": False})
        await self._record_refusal("request.refused", call, refusal)
        return refusal

    async def _refuse_opening(self, server: str, principal: Principal, method: str,
                              session_id: str | None) -> ShuttingDown:
        """A session, stream or discovery asked for while the gateway drains: nothing is opened upstream."""
        refusal = ShuttingDown("the gateway is shutting down and opens no new sessions or streams; nothing was "
                               "opened upstream: connect again, another replica will take it",
                               data={"reason": "shutting_down", "forwarded": False})
        try:
            await self.evidence.append("request.refused", {
                "principal": principal.summary(), "server": server, "session": session_id, "method": method,
                "status": refusal.http_status, "code": refusal.rpc_code, "error": refusal.message})
            refusal.recorded = True
        except (LedgerUnavailable, ValueError) as exc:
            log.error("a refusal while shutting down could not be recorded: %s", getattr(exc, "message", exc))
        return refusal

    async def _record_refusal(self, event: str, call: Call, refusal: ShuttingDown, **fields: Any) -> None:
        try:
            await self.evidence.record(event, call, status=refusal.http_status, code=refusal.rpc_code,
                                       error=refusal.message, **fields)
            refusal.recorded = True
        except (LedgerUnavailable, ValueError) as exc:
            log.error("a refusal while shutting down could not be recorded: %s", getattr(exc, "message", exc))

    async def cut_off(self, flight: Flight) -> ShuttingDown:
        """Record how the shutdown ended `flight`'s call, and the error its client is answered with.

        Forwarded (its rpc.request is durable): an `rpc.response` with the error, as for an upstream that
        failed, since it may have run upstream. Held for approval: an `approval.held` record (reason
        shutdown) naming the approval, which stays in the store, so the identical call sent again (to any
        replica, or this one restarted) runs once it is approved. Not yet forwarded: `request.refused`."""
        call = flight.call
        rid = call.request_id
        if flight.phase != _DECIDING:
            if call.method == "subscriptions/listen":
                recorded = "the gateway shut down; the subscription ended"
                told = f"{recorded}: listen again, another replica will take it (request id {rid})"
            else:
                recorded = CUT_OFF
                told = f"{CUT_OFF}: check its effect before repeating a call that changes anything (request id {rid})"
            error = ShuttingDown(told, data={"requestId": rid, "reason": "shutdown", "forwarded": True})
            try:
                await self.evidence.record("rpc.response", call, error=recorded, reason="shutdown",
                                           latency_ms=call.latency_ms())
                error.recorded = True
            except (LedgerUnavailable, ValueError) as exc:
                error.recorded = True  # a request.refused would misstate it: the call was forwarded
                log.error("the outcome of a call cut off by the shutdown could not be recorded: %s",
                          getattr(exc, "message", exc))
            log.warning("%s %s on %s was still running when the drain ended: cut off, answered with an error and "
                        "recorded", call.method, call.target or "", call.server)
            return error
        gate = self._holding_gate(call)
        if gate is None:
            error = ShuttingDown(f"the gateway shut down before the call was forwarded; nothing was sent upstream: "
                                 f"send it again, another replica will take it (request id {rid})",
                                 data={"requestId": rid, "reason": "shutdown", "forwarded": False})
            await self._record_refusal("request.refused", call, error)
            return error
        approval = await self._held_approval(gate, call)
        named = f"approval {approval.id}" if approval is not None else "its approval"
        where = f" at {gate.url_for(approval.id)}" if approval is not None else ""
        data: dict[str, Any] = {"requestId": rid, "reason": "shutdown", "forwarded": False}
        if approval is not None:
            data.update(approvalId=approval.id, url=gate.url_for(approval.id), status=approval.status)
        error = ShuttingDown(f"the gateway shut down while the call waited for {named}; nothing was forwarded, and "
                             f"the approval stays{where}: once it is approved, send the identical call again "
                             f"(request id {rid})", data=data)
        try:
            await self.evidence.record("approval.held", call, approval=approval.id if approval is not None else None,
                                       reason="shutdown", held_s=round(call.latency_ms() / 1000, 3))
            error.recorded = True
        except (LedgerUnavailable, ValueError) as exc:
            log.error("a held call released by the shutdown could not be recorded: %s", getattr(exc, "message", exc))
        log.warning("%s %s on %s was waiting for %s when the drain ended: released, the approval stays",
                    call.method, call.target or "", call.server, named)
        return error

    async def hung_up(self, flight: Flight) -> GatewayError:
        """Record how its client's hanging up ended `flight`'s call (`Flight.hang_up`), and the error it is
        answered with (nobody reads it: the connection is gone).

        Forwarded (its rpc.request is durable): an `rpc.response` with `cancelled: true` and reason
        `client_disconnected`, as for a client's own cancellation, naming whether a `notifications/cancelled`
        went upstream. Held for approval: `approval.held` (reason `client_disconnected`), and the approval stays
        pending, as at a shutdown: the client sends the identical call again, which is held on that approval
        and runs once it is approved; nothing ran for a client that was gone. Not yet forwarded otherwise: an
        `rpc.response` as well, with `forwarded: false` (nothing was sent upstream)."""
        call = flight.call
        rid = call.request_id
        forwarded = flight.phase != _DECIDING
        gate = None if forwarded else self._holding_gate(call)
        fields: dict[str, Any]
        if gate is not None:
            approval = await self._held_approval(gate, call)
            named = f"approval {approval.id}" if approval is not None else "its approval"
            error = CallCancelled(f"Request cancelled: the client disconnected while the call waited for {named}; "
                                  f"nothing was forwarded, and the approval stays (request id {rid})",
                                  data={"requestId": rid, "reason": HUNG_UP, "forwarded": False})
            event, fields = "approval.held", {"approval": approval.id if approval is not None else None,
                                              "reason": HUNG_UP, "held_s": round(call.latency_ms() / 1000, 3)}
        else:
            said = "the client disconnected before the answer" if forwarded else \
                "the client disconnected before the call was forwarded; nothing was sent upstream"
            error = CallCancelled(f"Request cancelled: {said} (request id {rid})",
                                  data={"requestId": rid, "reason": HUNG_UP, "forwarded": forwarded})
            event, fields = "rpc.response", {"error": f"cancelled: {said}", "cancelled": True, "reason": HUNG_UP,
                                             "forwarded": forwarded, "cancel_sent": flight.told,
                                             "latency_ms": call.latency_ms()}
        error.recorded = True  # a request.refused from the transport would misstate it
        try:
            await self.evidence.record(event, call, **fields)
        except (LedgerUnavailable, ValueError) as exc:
            log.error("the outcome of a call whose client hung up could not be recorded: %s",
                      getattr(exc, "message", exc))
        log.info("%s %s on %s: the client hung up %s; cancelled and recorded", call.method, call.target or "",
                 call.server, "while it waited for approval" if gate is not None else
                 "before its answer" if forwarded else "before it was forwarded")
        return error

    def _holding_gate(self, call: Call) -> ApprovalGate | None:
        """The approval stage, when `call` (not yet forwarded) stands in it under an `approve` decision."""
        if not 0 < call.next_stage <= len(self.request_stages):
            return None
        stage = self.request_stages[call.next_stage - 1]
        decision = call.decision
        if isinstance(stage, ApprovalGate) and decision is not None and decision.effect == "approve":
            return stage
        return None

    @staticmethod
    async def _held_approval(gate: ApprovalGate, call: Call) -> Approval | None:
        """The approval `call` waits for (the newest of its exact binding), or None when there is none yet."""
        decision = call.decision
        if gate.approvals is None or decision is None or decision.rule is None:
            return None
        binding = gate.approvals.binding_for(call.principal, call.server, call.method, call.target,
                                             call.arguments, decision.rule, gate.policy_version)
        try:
            return await gate.approvals.latest(binding)
        except Exception as exc:  # noqa: BLE001 - the store is down: the record names no approval, says so
            log.error("the approval of a held call could not be read at shutdown: %s: %s", type(exc).__name__, exc)
            return None

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
