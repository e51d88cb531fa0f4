"""approval: a call whose decision is `approve` waits for a human, and runs exactly once.

The approval is bound to the exact call (principal, server, method and target,
the SHA-256 of the canonical arguments — with the caller's own `_meta` keys and,
for a method whose params `_BOUND` does not name, every param: `_bound` — the
rule, the policy version); the
approvals service keeps it and records every step. This stage decides what the
client sees while it waits, since clients commonly tear a call down after
60–120 s:

* first, a grant already open for this exact call is claimed (approved →
  executed, once across every replica) and the call goes on;
* otherwise the call is held for up to `approvals.hold`, with a progress and a
  log notification every few seconds naming the approval, who may decide and
  where; a decision releases it at once;
* when the hold runs out, a handshake-era client gets an error naming the
  approval, its URL and expiry (the identical call passes once after approval,
  within `approvals.grant_window`); a 2026-07-28 client gets an input-required
  result whose sealed `requestState` names the approval, so its retry, on any
  replica, is held again and answered once the approval is decided.

A rule may require a justification: taken from the call's `_meta`
(`io.ledgergate/justification`), else asked with an elicitation where the client
can answer one, else the call is refused saying how to give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from ledgergate.approvals import model
from ledgergate.approvals.model import Approval, Binding, describe_approvers, rfc3339
from ledgergate.approvals.service import ApprovalService
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.approvals.state import HeldState, StateRefused, is_ours, seal, unseal
from ledgergate.errors import (
    INVALID_PARAMS,
    ApprovalDenied,
    ApprovalPending,
    GatewayError,
)
from ledgergate.gateway.call import Call, caller_meta
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.tasks import (
    GATEWAY_TASK_PREFIX,
    TASK_ENDED,
    TASK_METHODS,
    GatewayTasks,
    TaskOwners,
    wants_tasks,
)
from ledgergate.policy.decision import ApproverSpec
from ledgergate.upstream.base import Message
from ledgergate.wire import jsonrpc

JUSTIFICATION_META = "io.ledgergate/justification"
INPUT_REQUIRED = "input_required"
_JUSTIFY_KEY = "justification"
_ENDED = ("denied", "expired", "cancelled")
#: the params an approval binds (target and arguments, `approvals/model.py` Binding), per method; an approved
#: call carrying any other param (beyond the protocol's envelope) would run with something nobody approved.
#: For any other method (`completion/complete`: `ref`, `argument` and `context`; a method a rule's `methods`
#: names) the approval binds every param but the envelope (`_bound`)
_BOUND = {"tools/call": {"name", "arguments"}, "prompts/get": {"name", "arguments"}, "resources/read": {"uri"}}
_ENVELOPE = {"_meta", "task", "requestState", "inputResponses"}
#: heads what an approval digests when it binds more than the arguments: a list, which no call's arguments
#: (an object, or none) can be, so a call cannot pass its `_meta` off as arguments or the reverse
_MORE_THAN_ARGUMENTS = "io.ledgergate/bound"
_ENDED_WORDS = {"denied": "was denied", "expired": "expired undecided", "cancelled": "was cancelled"}


log = logging.getLogger("ledgergate.approvals")


def _bound(call: Call) -> tuple[Any, Any]:
    """(what an approval digests besides principal, server, method and target; what approvers are shown of it).
    A typical call: its arguments, as always. The caller's own `_meta` (beyond the protocol's keys, which vary
    per attempt) is bound too: SDK servers hand it to tool code, so a call whose `_meta` differs is another
    call; and for a method whose params `_BOUND` does not name, every param but the envelope (a completion's
    `context.arguments` steer what it suggests, and were free to change between approval and run)."""
    more: dict[str, Any] = {}
    if call.method not in _BOUND:
        more = {k: v for k, v in call.params.items() if k not in _ENVELOPE}
    meta = caller_meta(call.params)
    if isinstance(meta, Mapping) and JUSTIFICATION_META in meta:
        # the gateway's own key: approvers read it as the justification, and a retry need not repeat it
        meta = {k: v for k, v in meta.items() if k != JUSTIFICATION_META} or None
    if meta is not None:
        more["_meta"] = meta
    arguments = call.arguments
    if not more:
        return arguments, arguments if arguments is not None else {}
    shown = {"arguments": arguments if arguments is not None else {}, **more} if call.method in _BOUND else more
    return [_MORE_THAN_ARGUMENTS, arguments, more], shown


class ApprovalGate:
    def __init__(self, approvals: ApprovalService | None, evidence: Evidence, settings: ApprovalsSettings,
                 policy_version: str, state_key: bytes, public_url: str | None,
                 notice_interval: float = 5.0, tasks: GatewayTasks | None = None,
                 owners: TaskOwners | None = None, recheck: Callable[[Call], str | None] | None = None,
                 preview_key: bytes = b"") -> None:
        self.approvals = approvals
        self.preview_key = preview_key
        self.tasks = tasks if tasks is not None else GatewayTasks()
        self.owners = owners if owners is not None else TaskOwners()
        self.evidence = evidence
        self.settings = settings
        self.policy_version = policy_version
        self.state_key = state_key
        self.public_url = (public_url or "").rstrip("/")
        self.notice_interval = notice_interval
        self.recheck = recheck

    def _preview(self, value: Any) -> Any:
        """What approvers are shown of a value: every detector's finding as a keyed pseudonym, so two calls
        that differ only in a masked value (the destination IBAN) look different, and the same value looks
        the same in every approval (`Masker.mask_for_approvers`); redacted when there is no key."""
        if self.preview_key:
            return self.evidence.masker.mask_for_approvers(value, self.preview_key)[0]
        return self.evidence.mask(value)[0]

    async def on_request(self, call: Call) -> AsyncGenerator[Message, None] | None:
        task_id = call.params.get("taskId")
        if call.method in TASK_METHODS and isinstance(task_id, str) and task_id.startswith(GATEWAY_TASK_PREFIX):
            return self._task_answer(call, task_id)  # a task of ours (ownership was checked before)
        state = call.params.get("requestState")
        responses: Mapping[str, Any] = {}
        if is_ours(state):
            # Ours to read, never the upstream's: the call goes on without it.
            responses = call.params.get("inputResponses") or {}
            params = {k: v for k, v in call.params.items() if k not in ("requestState", "inputResponses")}
            call.message = {**call.message, "params": params}
        decision = call.decision
        if decision is None or decision.effect != "approve":
            return None
        return self._hold(call, state if is_ours(state) else None, responses)

    def url_for(self, approval_id: str) -> str:
        if self.settings.console_url:
            return f"{self.settings.console_url.rstrip('/')}/{approval_id}"
        return f"{self.public_url}/api/v1/approvals/{approval_id}"

    # ── the hold ────────────────────────────────────────────────────────────
    async def _hold(self, call: Call, token: str | None, responses: Mapping[str, Any]) -> AsyncGenerator[Message, None]:
        if self.approvals is None:
            raise ApprovalPending("this call needs approval, and approvals are not available on this gateway; "
                                  f"it is refused (request id {call.request_id})")
        decision = call.decision
        assert decision is not None and decision.rule is not None
        spec = decision.approvers or ApproverSpec()
        unbound = sorted(set(call.params) - _BOUND.get(call.method, set(call.params)) - _ENVELOPE)
        if unbound:
            await self.evidence.record("approval.refused", call, reason="params outside the approval's binding",
                                       params=unbound)
            raise GatewayError(f"Invalid params: {', '.join(map(repr, unbound[:5]))} would reach the server without "
                               f"being part of what an approver approves; send the call without them "
                               f"(request id {call.request_id})", rpc_code=INVALID_PARAMS,
                               data={"reason": "unbound_params", "requestId": call.request_id})
        bound, shown = _bound(call)
        binding = self.approvals.binding_for(call.principal, call.server, call.method, call.target, bound,
                                             decision.rule, self.policy_version)
        held = await self._open_state(call, token, binding) if token else None

        claimed = await self.approvals.claim_grant(binding, call.request_id)
        if claimed is not None:
            call.approval_id = claimed.id
            return

        approval: Approval | None = None
        if held is not None and held.kind == "approval":
            approval = await self.approvals.get(held.ref)
            if approval.status == "executed":
                await self._refused(call, approval, "its call already ran")
                raise ApprovalDenied(f"approval {approval.id} already ran its call once; the same call again needs "
                                     f"a new approval (request id {call.request_id})",
                                     data={"approvalId": approval.id, "status": approval.status})
        if approval is None:
            justification = self._justification(call, responses if held is not None else {})
            if justification is None and spec.justification == "required":
                async for message in self._ask_justification(call, binding):
                    yield message
                    if "method" not in message:
                        return
                justification = call.justification
            masked_args = self._preview(shown)
            masked_reason = self._preview(justification) if justification is not None else None
            try:
                approval = await self.approvals.request(
                    principal=call.principal, server=call.server, method=call.method, target=call.target,
                    arguments=bound, masked_args=masked_args, rule=decision.rule,
                    policy_version=self.policy_version, approvers=spec, justification=masked_reason,
                    session=call.session_id, request_id=call.request_id)
            except model.TooManyPending as exc:
                await self.evidence.record("approval.refused", call, reason="too many pending approvals")
                exc.message = f"{exc.message} (request id {call.request_id})"
                raise

        if call.era == "modern" and wants_tasks(call.client_capabilities) and approval.status == "pending":
            yield self._as_task(call, approval, spec, binding)
            return

        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.hold
        while True:
            if approval.status == "approved":
                await self._still_may_run(call, approval)
                claimed = await self.approvals.claim_grant(binding, call.request_id)
                if claimed is not None:
                    call.approval_id = claimed.id
                    return
                approval = await self.approvals.get(approval.id)  # used meanwhile by an identical call
                if approval.status == "approved":
                    raise ApprovalDenied(f"approval {approval.id} is no longer usable for this call "
                                         f"(request id {call.request_id})", data={"approvalId": approval.id})
            if approval.status == "executed":
                await self._refused(call, approval, "its call already ran")
                raise ApprovalDenied(f"approval {approval.id} was used by an identical call; this one needs a new "
                                     f"approval (request id {call.request_id})",
                                     data={"approvalId": approval.id, "status": approval.status})
            if approval.status in _ENDED:
                await self._refused(call, approval, approval.close_reason or approval.status)
                raise ApprovalDenied(
                    f"approval {approval.id} {_ENDED_WORDS[approval.status]}"
                    f"{': ' + approval.close_reason if approval.close_reason else ''} (request id {call.request_id})",
                    data={"approvalId": approval.id, "status": approval.status, "reason": approval.close_reason})
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            for notice in self._notices(call, approval, spec, loop.time() - started):
                yield notice
            approval = await self.approvals.wait(approval.id, min(self.notice_interval, remaining))

        await self.evidence.record("approval.held", call, approval=approval.id, held_s=self.settings.hold,
                                   expires=rfc3339(approval.expires))
        if call.era == "modern":
            yield self._input_required(call, approval)
            return
        raise ApprovalPending(
            f"waiting for approval {approval.id} ({describe_approvers(spec)}) at {self.url_for(approval.id)}; "
            f"it expires at {rfc3339(approval.expires)}. Once approved, send the identical call again "
            f"(request id {call.request_id})",
            data={"approvalId": approval.id, "url": self.url_for(approval.id), "expires": rfc3339(approval.expires),
                  "rule": decision.rule, "requestId": call.request_id})

    async def releases(self, call: Call, approval_id: str) -> bool:
        """Whether approval `approval_id` released an earlier round of this very call, so that the call's next
        round (a 2026-07-28 upstream asked for input, `Bridge._released_round`) runs under it: the approval
        ran its call (executed), it binds this call (principal, server, method, target, arguments, rule, policy
        version) with the approvers the policy names now, and the call still may run under the config in force
        (`_still_may_run`'s re-check). The caller checked the round is this principal's, for this request, and
        unused. False: the call is decided afresh."""
        decision = call.decision
        if self.approvals is None or decision is None or decision.effect != "approve" or decision.rule is None:
            return False
        if set(call.params) - _BOUND.get(call.method, set(call.params)) - _ENVELOPE:
            return False  # a param no approval binds: `_hold` refuses it
        try:
            approval = await self.approvals.get(approval_id)
        except GatewayError:
            return False
        bound, _ = _bound(call)
        binding = self.approvals.binding_for(call.principal, call.server, call.method, call.target, bound,
                                             decision.rule, self.policy_version)
        if approval.status != "executed" or approval.binding != binding \
                or approval.approvers != (decision.approvers or ApproverSpec()):
            return False
        return self.recheck is None or self.recheck(call) is None

    async def _open_state(self, call: Call, token: str, binding: Binding) -> HeldState:
        """The state a retry carries, checked; a refusal changes nothing (the approval stays as it is)."""
        try:
            held = unseal(self.state_key, token, call.principal.key, time.time())
        except StateRefused as exc:
            await self.evidence.record("approval.state_refused", call, reason=str(exc))
            raise GatewayError(f"{exc} (request id {call.request_id})", rpc_code=INVALID_PARAMS) from None
        if held.kind == "approval":
            approval = await self.approvals.get(held.ref) if self.approvals else None
            if approval is None or approval.binding != binding:
                await self.evidence.record("approval.state_refused", call, reason="another call's approval",
                                           approval=held.ref)
                raise GatewayError("requestState names the approval of a different call (a changed call needs a new "
                                   f"approval); send it again without requestState (request id {call.request_id})",
                                   rpc_code=INVALID_PARAMS)
        elif held.kind != "justify" or held.ref != binding.key:
            raise GatewayError("requestState does not belong to this call; send it again without requestState",
                               rpc_code=INVALID_PARAMS)
        return held

    # ── justification ───────────────────────────────────────────────────────
    def _justification(self, call: Call, responses: Mapping[str, Any]) -> str | None:
        meta = call.params.get("_meta")
        given = meta.get(JUSTIFICATION_META) if isinstance(meta, Mapping) else None
        if given is None:
            answer = responses.get(_JUSTIFY_KEY)
            if isinstance(answer, Mapping) and answer.get("action") == "accept":
                given = (answer.get("content") or {}).get(_JUSTIFY_KEY)
        if given is None:
            return None
        return model.check_reason(given, what="justification", limit=model.MAX_JUSTIFICATION)

    def _form(self, call: Call) -> dict[str, Any]:
        return {"mode": "form",
                "message": f"Calling {call.target or call.method} on {call.server} needs a human's approval. "
                           "Why is this call needed? Approvers will read your answer.",
                "requestedSchema": {"type": "object", "required": [_JUSTIFY_KEY], "properties": {
                    _JUSTIFY_KEY: {"type": "string", "title": "Justification", "minLength": 3,
                                   "maxLength": model.MAX_JUSTIFICATION}}}}

    async def _ask_justification(self, call: Call, binding: Binding) -> AsyncGenerator[Message, None]:
        """Ask the caller why; sets `call.justification`, or answers/refuses in the upstream's place."""
        can_elicit = "elicitation" in call.client_capabilities
        if call.era == "handshake" and can_elicit and call.ask_client is not None:
            request, answer = call.ask_client("elicitation/create", self._form(call))
            yield request
            try:
                reply = await asyncio.wait_for(answer, self.settings.hold)
            except asyncio.TimeoutError:
                raise ApprovalPending(f"no justification was given in time (request id {call.request_id})") from None
            call.justification = self._justification(call, {_JUSTIFY_KEY: reply.get("result") or {}})
            if call.justification is None:
                raise ApprovalDenied(f"this call needs a justification and none was given "
                                     f"(request id {call.request_id})")
            return
        if call.era == "modern" and can_elicit:
            token = seal(self.state_key, HeldState("justify", binding.key, time.time() + self.settings.timeout),
                         call.principal.key)
            yield jsonrpc.result(call.message["id"], {
                "resultType": INPUT_REQUIRED, "requestState": token,
                "inputRequests": {_JUSTIFY_KEY: {"method": "elicitation/create", "params": self._form(call)}}})
            return
        await self.evidence.record("approval.refused", call, reason="justification required")
        raise ApprovalDenied(f"rule {call.decision.rule if call.decision else None!r} needs a justification: send it "
                             f"in the call's _meta as {JUSTIFICATION_META!r} (request id {call.request_id})",
                             data={"reason": "justification_required", "meta": JUSTIFICATION_META})

    # ── what the waiting client sees ────────────────────────────────────────
    def _notices(self, call: Call, approval: Approval, spec: ApproverSpec, waited: float) -> list[Message]:
        text = (f"waiting for approval {approval.id}: {describe_approvers(spec)} may decide at "
                f"{self.url_for(approval.id)}; it expires at {rfc3339(approval.expires)}")
        notices = [jsonrpc.notification("notifications/message", {
            "level": "info", "logger": "ledgergate.approvals",
            "data": {"message": text, "approvalId": approval.id, "url": self.url_for(approval.id),
                     "approvers": describe_approvers(spec), "expires": rfc3339(approval.expires)}})]
        meta = call.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, Mapping) else None
        if token is not None:
            notices.insert(0, jsonrpc.notification("notifications/progress", {
                "progressToken": token, "progress": round(waited, 1), "message": text}))
        return notices

    def _input_required(self, call: Call, approval: Approval) -> Message:
        # the state outlives the approval's own expiry, so a late retry learns that it expired
        until = approval.expires + self.settings.grant_window
        token = seal(self.state_key, HeldState("approval", approval.id, until), call.principal.key)
        result: dict[str, Any] = {"resultType": INPUT_REQUIRED, "requestState": token}
        elicitation = call.client_capabilities.get("elicitation")
        if isinstance(elicitation, Mapping) and "url" in elicitation:
            result["inputRequests"] = {"approval": {"method": "elicitation/create", "params": {
                "mode": "url", "elicitationId": approval.id, "url": self.url_for(approval.id),
                "message": f"This call waits for approval {approval.id}; it runs once approved."}}}
        return jsonrpc.result(call.message["id"], result)

    # ── a client that polls a task (the Tasks extension) ────────────────────
    def _as_task(self, call: Call, approval: Approval, spec: ApproverSpec, binding: Binding) -> Message:
        """Answer now with a task; the call runs in the background once approved, exactly once."""
        task_id = GATEWAY_TASK_PREFIX + secrets.token_hex(16)
        text = (f"waiting for approval {approval.id}: {describe_approvers(spec)} may decide at "
                f"{self.url_for(approval.id)}; it expires at {rfc3339(approval.expires)}")
        task = self.tasks.create(task_id, text, int(self.notice_interval * 1000), approval.id)
        self.owners.record(call.server, call.principal.key, {"task": task}, call.mask_profile)
        self.tasks.track(asyncio.get_running_loop().create_task(self._run_when_approved(call, approval, binding,
                                                                                        task_id)))
        return jsonrpc.result(call.message["id"], {"resultType": "task", **task})

    async def _run_when_approved(self, call: Call, approval: Approval, binding: Binding, task_id: str) -> None:
        assert self.approvals is not None and call.resume is not None
        resume = call.resume
        try:
            try:
                while approval.status == "pending":
                    approval = await self.approvals.wait(approval.id, max(1.0, approval.expires - time.time() + 1))
                    if approval.status == "pending" and approval.expires + 5 < time.time():
                        break
            except asyncio.CancelledError:
                await self._released_at_shutdown(call, approval, task_id)
                raise
            if approval.status == "approved":
                await self._still_may_run(call, approval)
            claimed = await self.approvals.claim_grant(binding, call.request_id) \
                if approval.status == "approved" else None
            if claimed is None:
                approval = await self.approvals.get(approval.id)
                await self._refused(call, approval, approval.close_reason or approval.status)
                self.tasks.finish(task_id, "failed", f"approval {approval.id} {_ENDED_WORDS.get(approval.status, 'ended')}",
                                  {"error": {"code": ApprovalDenied.rpc_code,
                                             "message": f"approval {approval.id} {_ENDED_WORDS.get(approval.status, 'ended')}"
                                                        f"{': ' + approval.close_reason if approval.close_reason else ''}",
                                             "data": {"approvalId": approval.id, "status": approval.status}}})
                return
            call.approval_id = claimed.id
            answer = await resume(call)
            if "error" in answer:
                self.tasks.finish(task_id, "failed", "the call failed", {"error": answer["error"]})
            else:
                self.tasks.finish(task_id, "completed", f"approved ({approval.id}) and run",
                                  {"result": answer.get("result")})
        except GatewayError as exc:
            self.tasks.finish(task_id, "failed", exc.message,
                              {"error": {"code": exc.rpc_code, "message": exc.message, "data": exc.data}})

    async def _released_at_shutdown(self, call: Call, approval: Approval, task_id: str) -> None:
        """A task waiting for its approval when the gateway shuts down ends with the process that holds it
        (tasks live in memory, on the replica that took the call). Its end is recorded, as a held call's is at
        the drain (`approval.held`, reason `shutdown`), and its approval stays pending: once approved, the
        identical call sent again claims it and runs once."""
        self.tasks.finish(task_id, "failed", f"the gateway shut down while the call waited for approval {approval.id}",
                          {"error": {"code": INVALID_PARAMS, "message": TASK_ENDED, "data": {"approvalId": approval.id}}})
        try:
            await asyncio.shield(self.evidence.record("approval.held", call, approval=approval.id, task=task_id,
                                                      reason="shutdown", held_s=round(call.latency_ms() / 1000, 3)))
        except Exception as exc:  # noqa: BLE001 - the shutdown goes on; the log says what the ledger lacks
            log.error("a task released at shutdown could not be recorded: %s", getattr(exc, "message", exc))

    async def _task_answer(self, call: Call, task_id: str) -> AsyncGenerator[Message, None]:
        entry = self.tasks.get(task_id)
        if entry is None:
            raise GatewayError(f"unknown task {task_id[:40]!r}: {TASK_ENDED} (request id {call.request_id})",
                               rpc_code=INVALID_PARAMS, data={"requestId": call.request_id, "reason": "unknown_task"})
        task = entry["task"]
        if call.method == "tasks/cancel":
            if task["status"] == "working" and self.approvals is not None:
                with contextlib.suppress(GatewayError):
                    await self.approvals.cancel(entry["approval"], "the requester cancelled the task")
            yield jsonrpc.result(call.message["id"], {**self.tasks.get(task_id)["task"],  # type: ignore[index]
                                                      "resultType": "complete"})
            return
        if call.method == "tasks/result":
            if task["status"] == "working":
                raise GatewayError("the task is still waiting for approval; poll tasks/get",
                                   rpc_code=INVALID_PARAMS)
            if "error" in entry:
                yield {"jsonrpc": "2.0", "id": call.message["id"], "error": entry["error"]}
            else:
                yield jsonrpc.result(call.message["id"], entry["result"])
            return
        outcome = {k: entry[k] for k in ("result", "error") if k in entry}
        yield jsonrpc.result(call.message["id"], {"resultType": "complete", **task, **outcome})

    async def _still_may_run(self, call: Call, approval: Approval) -> None:
        """A call that waited for a human runs under the config in force when it is approved, not the one
        it was made under: a requester off-boarded meanwhile (`identity.disabled_subjects`), or a policy
        that now refuses the call or hands it to another rule, stops it (recorded; the grant is left
        unused, and an identical call sent again meets the current config at the door). A held call
        waits at most `approvals.hold`, a task up to `approvals.timeout`: both had run regardless."""
        why = self.recheck(call) if self.recheck is not None else None
        if why is None:
            return
        await self._refused(call, approval, why)
        raise ApprovalDenied(f"approval {approval.id} was granted, but the call no longer runs: {why} "
                             f"(request id {call.request_id})",
                             data={"approvalId": approval.id, "status": approval.status, "reason": why})

    async def _refused(self, call: Call, approval: Approval, reason: str) -> None:
        await self.evidence.record("approval.refused", call, approval=approval.id, status=approval.status,
                                   reason=reason)
