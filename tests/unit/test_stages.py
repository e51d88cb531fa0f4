"""The data path's stages, each alone, and the chain they form, with fakes in place of the ledger,
policy, masker and upstream (no HTTP): order, short-circuit, and the record each ending writes.

Fakes are used here on purpose: these tests pin the chain's contract; the integration tests
(test_data_path.py, test_policy_gateway.py) drive the same stages through real clients and servers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest

from ledgergate.approvals.model import TooManyPending
from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.config import parse_config
from ledgergate.errors import ApprovalDenied, ApprovalPending, GatewayError, PolicyDenied, RateLimited, UpstreamError
from ledgergate.gateway.call import Call
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.gateway.snapshot import Snapshot
from ledgergate.gateway.stages.approval import ApprovalGate
from ledgergate.gateway.stages.audit import AuditRequest, AuditResponse, Evidence
from ledgergate.gateway.stages.budget import BudgetCheck
from ledgergate.gateway.stages.masking import MaskResponse
from ledgergate.gateway.stages.messages import Messages
from ledgergate.gateway.stages.policy import PolicyCheck
from ledgergate.gateway.stages.results import ListFilter, ResultLimit
from ledgergate.gateway.stages.tasks import TaskOwnership, TaskRecords
from ledgergate.gateway.tasks import TaskOwners
from ledgergate.policy.budgets import Budgets
from ledgergate.policy.decision import ApproverSpec, Decision
from ledgergate.policy.settings import BudgetsSettings
from ledgergate.principal import Principal

ALICE = Principal("https://idp", "alice", "human", frozenset({"staff"}))
BOB = Principal("https://idp", "bob", "human", frozenset({"staff"}))


class Ledger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        self.records.append((event, dict(fields)))
        return len(self.records) - 1

    @property
    def events(self) -> list[str]:
        return [e for e, _ in self.records]


class Policy:
    def __init__(self, decision: Decision, allowed_items: set[str] | None = None) -> None:
        self.decision = decision
        self.allowed_items = allowed_items

    def decide(self, principal: Principal, server: str, method: str, target: str | None,
               arguments: Mapping[str, Any] | None, now: float, notification: bool = False) -> Decision:
        return self.decision

    def filter_list(self, principal: Principal, server: str, method: str, items: list[dict[str, Any]],
                    now: float) -> list[dict[str, Any]]:
        return [i for i in items if self.allowed_items is None or i.get("name") in self.allowed_items]


class Masker:
    """Replaces the word "secret" (caller profile "p") and, for the ledger, also "hidden"."""

    def _walk(self, value: Any, words: tuple[str, ...]) -> tuple[Any, int]:
        if isinstance(value, str):
            n = sum(value.count(w) for w in words)
            for w in words:
                value = value.replace(w, "[X]")
            return value, n
        if isinstance(value, dict):
            out, total = {}, 0
            for k, v in value.items():
                out[k], n = self._walk(v, words)
                total += n
            return out, total
        if isinstance(value, list):
            items = [self._walk(v, words) for v in value]
            return [i for i, _ in items], sum(n for _, n in items)
        return value, 0

    def mask(self, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
        if profile is None:
            return value, {}
        masked, n = self._walk(value, ("secret",))
        return masked, ({"WORD": n} if n else {})

    def mask_for_ledger(self, value: Any) -> tuple[Any, dict[str, int]]:
        masked, n = self._walk(value, ("secret", "hidden"))
        return masked, ({"WORD": n} if n else {})


class Upstream:
    def __init__(self, *messages: dict[str, Any], fail: bool = False) -> None:
        self.messages = messages
        self.fail = fail
        self.sent: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []

    async def call(self, message: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.sent.append(message)
        if self.fail:
            raise UpstreamError("upstream unreachable")
        for m in self.messages:
            yield m

    async def reply(self, message: dict[str, Any]) -> None:
        self.replies.append(message)


def call_of(method: str = "tools/call", params: dict[str, Any] | None = None, who: Principal = ALICE) -> Call:
    params = {"name": "echo", "arguments": {"text": "a secret, hidden"}} if params is None else params
    return Call(server="bank", principal=who, message={"jsonrpc": "2.0", "id": 7, "method": method, "params": params})


def evidence(ledger: Ledger) -> Evidence:
    return Evidence(ledger, Masker(), lambda value: "digest")


ALLOW = Decision("allow", "r-allow", mask="p")


# ── request stages alone ──────────────────────────────────────────────────────
async def test_policy_denial_records_the_rule_and_masked_arguments_then_refuses() -> None:
    ledger = Ledger()
    call = call_of()
    with pytest.raises(PolicyDenied) as refused:
        await PolicyCheck(Policy(Decision("deny", "r-deny", reason="no")), evidence(ledger)).on_request(call)
    assert "r-deny" in refused.value.message and call.request_id in refused.value.message
    [(event, fields)] = ledger.records
    assert event == "policy.denied" and fields["rule"] == "r-deny" and fields["target"] == "echo"
    assert fields["args"] == {"text": "a [X], [X]"} and fields["args_hmac"] == "digest"


async def test_policy_allow_sets_the_decision_and_records_nothing() -> None:
    ledger, call = Ledger(), call_of()
    await PolicyCheck(Policy(ALLOW), evidence(ledger)).on_request(call)
    assert call.decision == ALLOW and ledger.records == []


async def test_budget_refusal_carries_retry_after() -> None:
    ledger = Ledger()
    settings = BudgetsSettings.model_validate({"rate": {"per_second": 0.001, "burst": 1}})
    stage = BudgetCheck(Budgets.from_settings(settings), evidence(ledger))
    await stage.on_request(call_of())
    with pytest.raises(RateLimited) as refused:
        await stage.on_request(call_of())
    assert refused.value.data and refused.value.data["retryAfter"] > 0
    assert ledger.events == ["budget.exceeded"]


async def test_task_ownership_refuses_anothers_task_and_records_it() -> None:
    ledger, owners = Ledger(), TaskOwners()
    created = call_of()
    await TaskRecords(owners).on_response(created, {"id": 7, "result": {"task": {"taskId": "t1", "ttl": 60000}}})
    stage = TaskOwnership(owners, evidence(ledger))
    await stage.on_request(call_of("tasks/get", {"taskId": "t1"}))
    with pytest.raises(PolicyDenied):
        await stage.on_request(call_of("tasks/get", {"taskId": "t1"}, who=BOB))
    assert ledger.events == ["policy.denied"] and ledger.records[0][1]["task"] == "t1"


async def _gate(tmp_path: Any, ledger: Ledger, hold: float = 0.3,
                max_pending: int = 50) -> tuple[ApprovalGate, ApprovalService]:
    """The approval stage over a real approvals service on a real SQLite file (the ledger is a fake)."""
    settings = ApprovalsSettings(hold=hold, max_pending=max_pending)
    service = ApprovalService(open_store(f"sqlite:///{tmp_path / 'a.db'}"), ledger.append, settings,
                              args_key=b"approval-arguments key for tests")
    await service.start(background=False)
    gate = ApprovalGate(service, evidence(ledger), settings, "v1", b"k" * 32, "https://gw.example",
                        notice_interval=0.1)
    return gate, service


async def drain(held: Any) -> list[dict[str, Any]]:
    return [m async for m in held] if held is not None else []


NEEDS_BOB = Decision("approve", "r-approve", approvers=ApproverSpec(groups=("approvers",)))
BOB_APPROVER = Principal("https://idp", "bob", "human", frozenset({"approvers"}))


async def test_approval_gate_lets_allow_through_untouched(tmp_path: Any) -> None:
    ledger = Ledger()
    gate, service = await _gate(tmp_path, ledger)
    try:
        allowed = call_of()
        allowed.decision = ALLOW
        assert await gate.on_request(allowed) is None and ledger.records == []
    finally:
        await service.close()


async def test_approval_gate_holds_with_notices_then_names_the_approval(tmp_path: Any) -> None:
    ledger = Ledger()
    gate, service = await _gate(tmp_path, ledger)
    try:
        held = call_of()
        held.decision = NEEDS_BOB
        notices: list[dict[str, Any]] = []
        with pytest.raises(ApprovalPending) as waiting:
            async for message in await gate.on_request(held):  # type: ignore[union-attr]
                notices.append(message)
        approval_id = waiting.value.data["approvalId"]  # type: ignore[index]
        assert approval_id in waiting.value.message and "https://gw.example/api/v1/approvals/" in waiting.value.message
        assert notices and all(approval_id in str(n["params"]) for n in notices)
        assert ledger.events == ["approval.requested", "approval.held"]
        # approved by someone else: the identical call passes once, and only once
        await service.decide(approval_id, BOB_APPROVER, "approve", "looks right")
        again = call_of()
        again.decision = NEEDS_BOB
        assert await drain(await gate.on_request(again)) == [] and again.approval_id == approval_id
        third = call_of()
        third.decision = NEEDS_BOB
        with pytest.raises(ApprovalPending):
            await drain(await gate.on_request(third))
        assert (await service.get(approval_id)).status == "executed"
    finally:
        await service.close()


async def test_approval_gate_refuses_a_requester_past_max_pending_with_a_record(tmp_path: Any) -> None:
    ledger = Ledger()
    gate, service = await _gate(tmp_path, ledger, hold=0.05, max_pending=1)
    try:
        first = call_of()
        first.decision = NEEDS_BOB
        with pytest.raises(ApprovalPending):
            await drain(await gate.on_request(first))
        other = call_of(params={"name": "echo", "arguments": {"text": "another call"}})
        other.decision = NEEDS_BOB
        with pytest.raises(TooManyPending) as refused:
            await drain(await gate.on_request(other))
        assert refused.value.http_status == 429 and other.request_id in refused.value.message
        assert ledger.events[-1] == "approval.refused"
        assert ledger.records[-1][1]["reason"] == "too many pending approvals"
    finally:
        await service.close()


async def test_approval_gate_gives_a_modern_client_sealed_state_and_refuses_it_to_others(tmp_path: Any) -> None:
    ledger = Ledger()
    gate, service = await _gate(tmp_path, ledger, hold=0.1)
    try:
        first = call_of()
        first.era, first.decision = "modern", NEEDS_BOB
        *_, answer = await drain(await gate.on_request(first))
        state = answer["result"]["requestState"]
        assert answer["result"]["resultType"] == "input_required" and state.startswith("lga1.")
        stolen = call_of(params={**first.params, "requestState": state}, who=BOB)
        stolen.era, stolen.decision = "modern", NEEDS_BOB
        with pytest.raises(GatewayError, match="another caller"):
            await drain(await gate.on_request(stolen))
        [approval] = await service.list("pending")
        await service.decide(approval.id, BOB_APPROVER, "approve", "fine")
        retry = call_of(params={**first.params, "requestState": state, "inputResponses": {}})
        retry.era, retry.decision = "modern", NEEDS_BOB
        assert await drain(await gate.on_request(retry)) == [] and retry.approval_id == approval.id
        assert "requestState" not in retry.params, "the gateway's own state never goes upstream"
        replay = call_of(params={**first.params, "requestState": state})
        replay.era, replay.decision = "modern", NEEDS_BOB
        with pytest.raises(ApprovalDenied, match="already ran"):
            await drain(await gate.on_request(replay))
    finally:
        await service.close()


# ── response stages alone ────────────────────────────────────────────────────
async def test_result_limit_answers_instead_and_stops_the_chain() -> None:
    ledger = Ledger()
    settings = BudgetsSettings.model_validate({"max_result_bytes": 10})
    call = call_of()
    answer = await ResultLimit(Budgets.from_settings(settings), evidence(ledger)).on_response(
        call, {"jsonrpc": "2.0", "id": 7, "result": {"content": "x" * 100}})
    assert answer["error"]["code"] == -32015 and call.answered
    assert ledger.events == ["rpc.response"] and ledger.records[0][1]["error"] == "result too large"


async def test_list_filter_keeps_what_the_caller_may_use() -> None:
    response = {"id": 7, "result": {"tools": [{"name": "echo"}, {"name": "wire"}]}}
    out = await ListFilter(Policy(ALLOW, {"echo"})).on_response(call_of("tools/list", {}), response)
    assert out["result"]["tools"] == [{"name": "echo"}]
    assert response["result"]["tools"] == [{"name": "echo"}, {"name": "wire"}], "the upstream's answer is not mutated"


async def test_masking_masks_every_part_of_a_result_and_keeps_the_clear_answer_for_the_ledger() -> None:
    """`_meta` and fields of the server's own were passed in the clear (only `content` and
    `structuredContent` of a tools/call were masked)."""
    call = call_of()
    call.decision = ALLOW
    response = {"id": 7, "result": {"content": [{"type": "text", "text": "secret"}], "_meta": {"note": "secret"},
                                    "debug": ["a secret"]}}
    out = await MaskResponse(Masker()).on_response(call, response)
    assert out["result"] == {"content": [{"type": "text", "text": "[X]"}], "_meta": {"note": "[X]"},
                             "debug": ["a [X]"]}
    assert call.clear_response is response and call.masked == {"WORD": 3}


@pytest.mark.parametrize("method", ["tools/call", "resources/read", "prompts/get", "completion/complete", "ping",
                                    "logging/setLevel", "tasks/get", "tasks/list", "tasks/result", "vendor/thing"])
@pytest.mark.parametrize("result", [{"description": "secret"}, "a secret", ["secret"],
                                    {"task": {"taskId": "t1", "statusMessage": "secret"}}])
async def test_masking_covers_every_method_and_every_shape_of_result(method: str, result: Any) -> None:
    call = call_of(method, {})
    call.decision = ALLOW
    out = await MaskResponse(Masker()).on_response(call, {"jsonrpc": "2.0", "id": 7, "result": result})
    assert "secret" not in str(out["result"]) and "[X]" in str(out["result"])


async def test_an_answer_with_both_result_and_error_goes_out_as_its_error_masked() -> None:
    """JSON-RPC allows one of the two; the error was masked and the result passed in the clear beside it."""
    call = call_of()
    call.decision = ALLOW
    for error in ({"code": -1, "message": "failed: secret"}, {"code": -1, "message": "failed"}):
        out = await MaskResponse(Masker()).on_response(
            call, {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "secret"}]},
                   "error": error})
        assert "result" not in out and "secret" not in str(out) and out["error"]["code"] == -1


async def test_definitions_are_masked_by_value_not_by_what_a_key_names() -> None:
    """With the real engine: a tool whose schema names a field `ssn` keeps a usable schema, while an SSN
    in its description, a default or a key of its own is masked."""
    from ledgergate.masking.engine import Masker as RealMasker
    from ledgergate.masking.settings import MaskingSettings

    masker = RealMasker.from_settings(MaskingSettings())
    tool = {"name": "lookup", "description": "e.g. SSN 123-45-6789",
            "inputSchema": {"type": "object", "required": ["ssn"], "properties": {
                "ssn": {"type": "string", "maxLength": 11, "default": "123-45-6789"},
                "password": {"type": "string"}, "123-45-6789": {"type": "string"}}}}
    call = call_of("tools/list", {})
    call.decision = Decision("allow", "r", mask="ledger")
    out = await MaskResponse(masker).on_response(call, {"jsonrpc": "2.0", "id": 7, "result": {"tools": [tool]}})
    [shown] = out["result"]["tools"]
    props = shown["inputSchema"]["properties"]
    assert "123-45-6789" not in str(shown)
    assert props["ssn"]["type"] == "string" and props["ssn"]["maxLength"] == 11
    assert props["password"] == {"type": "string"} and shown["inputSchema"]["required"] == ["ssn"]
    assert props["ssn"]["default"] != "123-45-6789" and "6789" not in shown["description"].replace("[US_SSN]", "")
    assert len(props) == 3 and call.masked


class PerMethod(Policy):
    """Allows the methods it is given, denies the rest."""

    def __init__(self, allowed: set[str]) -> None:
        super().__init__(ALLOW)
        self.allowed = allowed

    def decide(self, principal: Principal, server: str, method: str, target: str | None,
               arguments: Mapping[str, Any] | None, now: float, notification: bool = False) -> Decision:
        return ALLOW if method in self.allowed else Decision("deny", "r-no-input", reason="no")


def input_required(*requests: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "result": {"resultType": "input_required", "requestState": "s",
                                                  "inputRequests": {f"k{i}": r for i, r in enumerate(requests)}}}


async def test_input_requests_pass_only_when_policy_allows_each_method_for_the_caller() -> None:
    """A 2026-07-28 server's input requests (inside a result) went to the client with no policy check,
    while a handshake-era server's same requests are relayed only when a rule allows them."""
    from ledgergate.gateway.stages.messages import InputRequests

    elicit = {"method": "elicitation/create", "params": {"message": "confirm?"}}
    sample = {"method": "sampling/createMessage", "params": {"messages": []}}
    ledger = Ledger()
    stage = InputRequests(PerMethod({"elicitation/create"}), evidence(ledger))
    call = call_of()
    response = input_required(elicit)
    assert await stage.on_response(call, response) is response and not call.answered and ledger.records == []

    for refused in ([elicit, sample], [sample], [{"method": "vendor/steal", "params": {}}], ["not an object"]):
        ledger, call = Ledger(), call_of()
        out = await InputRequests(PerMethod({"elicitation/create"}), evidence(ledger)).on_response(
            call, input_required(*refused))
        assert call.answered and out["error"]["code"] == -32003 and call.request_id in out["error"]["message"]
        assert ledger.events == ["policy.denied", "rpc.response"]
        assert ledger.records[0][1]["direction"] == "server-to-client"
    ledger, call = Ledger(), call_of()
    bad = {"jsonrpc": "2.0", "id": 7, "result": {"resultType": "input_required", "inputRequests": []}}
    out = await InputRequests(PerMethod(set()), evidence(ledger)).on_response(call, bad)
    assert call.answered and "error" in out


async def test_audit_response_records_the_ledger_view_of_the_clear_answer() -> None:
    ledger, call = Ledger(), call_of()
    call.clear_response = {"id": 7, "result": {"text": "hidden secret"}}
    await AuditResponse(evidence(ledger)).on_response(call, {"id": 7, "result": {"text": "hidden [X]"}})
    [(event, fields)] = ledger.records
    assert event == "rpc.response" and fields["response"] == {"text": "[X] [X]"}


# ── the chain ─────────────────────────────────────────────────────────────────
class Tracer:
    """A stage that notes when it ran; optionally refuses."""

    def __init__(self, name: str, trace: list[str], refuse: bool = False) -> None:
        self.name, self.trace, self.refuse = name, trace, refuse

    async def on_request(self, call: Call) -> None:
        self.trace.append(self.name)
        if self.refuse:
            raise PolicyDenied(f"{self.name} refuses")

    async def on_response(self, call: Call, response: dict[str, Any]) -> dict[str, Any]:
        self.trace.append(self.name)
        return {**response, "seen": [*response.get("seen", []), self.name]}


def chain(request: list[Any], response: list[Any], ledger: Ledger, policy: Policy | None = None) -> Pipeline:
    ev = evidence(ledger)
    settings = parse_config("servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\n")
    snapshot = Snapshot(settings, Masker(), policy or Policy(ALLOW), None, None, "v1")  # type: ignore[arg-type]
    return Pipeline(snapshot, request, response, ev, Messages(policy or Policy(ALLOW), Masker(), ev))


async def run(pipeline: Pipeline, call: Call, upstream: Upstream) -> list[dict[str, Any]]:
    return [m async for m in pipeline.handle(call, upstream)]


async def test_chain_runs_request_stages_in_order_then_upstream_then_response_stages() -> None:
    trace: list[str] = []
    upstream = Upstream({"jsonrpc": "2.0", "id": 7, "result": {}})
    pipeline = chain([Tracer("a", trace), Tracer("b", trace)], [Tracer("x", trace), Tracer("y", trace)], Ledger())
    [answer] = await run(pipeline, call_of(), upstream)
    assert trace == ["a", "b", "x", "y"] and answer["seen"] == ["x", "y"] and len(upstream.sent) == 1


async def test_a_refusing_request_stage_stops_the_chain_and_nothing_is_forwarded() -> None:
    trace: list[str] = []
    upstream = Upstream({"jsonrpc": "2.0", "id": 7, "result": {}})
    pipeline = chain([Tracer("a", trace, refuse=True), Tracer("b", trace)], [Tracer("x", trace)], Ledger())
    with pytest.raises(PolicyDenied):
        await run(pipeline, call_of(), upstream)
    assert trace == ["a"] and upstream.sent == []


async def test_a_response_stage_that_answers_ends_the_response_chain() -> None:
    ledger = Ledger()
    limit = ResultLimit(Budgets.from_settings(BudgetsSettings.model_validate({"max_result_bytes": 5})), evidence(ledger))
    trace: list[str] = []
    pipeline = chain([], [limit, Tracer("after", trace)], ledger)
    [answer] = await run(pipeline, call_of(), Upstream({"jsonrpc": "2.0", "id": 7, "result": {"t": "long text"}}))
    assert "error" in answer and trace == [] and ledger.events == ["rpc.response"]


async def test_the_built_chain_writes_request_then_response_records_and_masks_for_the_caller() -> None:
    ledger = Ledger()
    lasting_chain = chain([PolicyCheck(Policy(ALLOW), evidence(ledger)), AuditRequest(evidence(ledger))],
                          [MaskResponse(Masker()), AuditResponse(evidence(ledger))], ledger)
    upstream = Upstream({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "secret"}},
                        {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "secret"}]}})
    note, answer = await run(lasting_chain, call_of(), upstream)
    assert note["params"]["data"] == "[X]" and answer["result"]["content"][0]["text"] == "[X]"
    assert ledger.events == ["rpc.request", "rpc.server_message", "rpc.response"]
    assert "secret" not in repr(ledger.records) and "hidden" not in repr(ledger.records)


async def test_an_upstream_failure_is_recorded_as_the_calls_response() -> None:
    ledger = Ledger()
    pipeline = chain([AuditRequest(evidence(ledger))], [AuditResponse(evidence(ledger))], ledger)
    with pytest.raises(UpstreamError):
        await run(pipeline, call_of(), Upstream(fail=True))
    assert ledger.events == ["rpc.request", "rpc.response"] and ledger.records[1][1]["error"] == "upstream unreachable"


class Broken(Upstream):
    """A relay with a fault of ours in it (what a malformed progress token once was in the demux)."""

    async def call(self, message: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.sent.append(message)
        raise TypeError("unhashable type: 'dict'")
        yield {}  # an async generator, like every upstream's call


async def test_a_fault_while_relaying_still_records_the_calls_outcome() -> None:
    """The rpc.request record says the call went out; the outcome must follow it, and the client gets a
    precise 500 with the request id, not the fault's text."""
    ledger = Ledger()
    pipeline = chain([AuditRequest(evidence(ledger))], [AuditResponse(evidence(ledger))], ledger)
    with pytest.raises(GatewayError) as fault:
        await run(pipeline, call_of(), Broken())
    assert ledger.events == ["rpc.request", "rpc.response"]
    assert ledger.records[1][1]["error"] == "internal gateway error"
    assert fault.value.http_status == 500 and fault.value.recorded and "unhashable" not in fault.value.message


async def test_a_response_stage_refusal_is_not_taken_for_a_fault() -> None:
    ledger = Ledger()
    limit = ResultLimit(Budgets.from_settings(BudgetsSettings.model_validate({"max_result_bytes": 5})), evidence(ledger))
    class Refuses:
        async def on_response(self, call: Call, response: dict[str, Any]) -> dict[str, Any]:
            raise PolicyDenied("a response stage refuses")

    pipeline = chain([], [Refuses(), limit], ledger)
    with pytest.raises(PolicyDenied):
        await run(pipeline, call_of(), Upstream({"jsonrpc": "2.0", "id": 7, "result": {}}))
    assert ledger.events == []


async def test_a_server_request_the_policy_refuses_is_answered_upstream_and_not_relayed() -> None:
    ledger = Ledger()
    deny = Policy(Decision("deny", None))
    pipeline = chain([], [], ledger, policy=deny)
    upstream = Upstream({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}},
                        {"jsonrpc": "2.0", "id": 7, "result": {}})
    messages = await run(pipeline, call_of(), upstream)
    assert [m.get("id") for m in messages] == [7]
    assert upstream.replies[0]["id"] == "s1" and "error" in upstream.replies[0]
    assert ledger.events == ["policy.denied"]


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "a secret"}},
    {"jsonrpc": "2.0", "id": "s2", "method": "custom/ask", "params": {"text": "a secret"}},
])
async def test_a_server_message_outside_calls_is_not_relayed_to_a_caller_the_policy_now_denies(
        message: dict[str, Any]) -> None:
    """A denied decision names no mask: relayed, the message went out in the clear. It is recorded (masked
    for the ledger) and dropped instead."""
    ledger = Ledger()
    messages = Messages(Policy(Decision("deny", None)), Masker(), evidence(ledger))
    assert await messages.unsolicited("bank", ALICE, "sess-1", message) is None
    [(event, fields)] = ledger.records
    assert event == "rpc.server_message" and fields["dropped"] == "policy_denied"
    assert await Messages(Policy(ALLOW), Masker(), evidence(Ledger())).unsolicited(
        "bank", ALICE, "sess-1", message) == {**message, "params": {**message["params"], **{
            k: "a [X]" for k, v in message["params"].items() if v == "a secret"}}}


def test_the_built_pipeline_orders_the_stages_as_the_design_draws_them(tmp_path: Any) -> None:
    from ledgergate.gateway.drift import DriftGuard
    from ledgergate.gateway.pipeline import Lasting
    from ledgergate.identity.service import IdentityService
    from ledgergate.store.fingerprints_store import FingerprintStore

    settings = parse_config("servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\n")
    snapshot = Snapshot.build(settings, IdentityService(settings.identity, settings.storage, tmp_path))
    store = FingerprintStore.open(f"sqlite:///{tmp_path / 'fp.db'}")
    try:
        built = Pipeline.build(snapshot, Lasting(Ledger(), lambda v: "", DriftGuard(store, settings.tool_drift),
                                                 TaskOwners()))
        assert [type(s).__name__ for s in built.request_stages] == [
            "TargetCheck", "PolicyCheck", "BudgetCheck", "DriftCheck", "TaskOwnership", "ApprovalGate", "AuditRequest"]
        assert [type(s).__name__ for s in built.response_stages] == [
            "DriftObserve", "TaskRecords", "ResultLimit", "ListFilter", "InputRequests", "MaskResponse",
            "AuditResponse"]
    finally:
        store.close()


@pytest.mark.parametrize("name", ["export_customers ", " export_customers", "export_customers\t", "export\x00_customers",
                                  "export_customers\u200b", "export_\u2028customers", "export_customers\n", "",
                                  # drawn as nothing, though not format characters (ledgergate.invisible)
                                  "export_customers\ufe0f", "export\u034f_customers", "export_customers\u3164",
                                  "export_customers\U000e0100", "export\u00a0customers", "export_customers\u2800"])
async def test_a_tool_or_prompt_name_with_invisible_characters_is_refused_before_policy(name: str) -> None:
    """A deny rule names `export_customers`; an allow rule `export_*`. `export_customers ` matched only the
    allow rule and was forwarded, safe only while the upstream matched names exactly."""
    from ledgergate.gateway.stages.target import AmbiguousTarget, TargetCheck

    for method, params in (("tools/call", {"name": name, "arguments": {}}), ("prompts/get", {"name": name}),
                           ("completion/complete", {"ref": {"type": "ref/prompt", "name": name},
                                                    "argument": {"name": "a", "value": "b"}})):
        ledger = Ledger()
        with pytest.raises(AmbiguousTarget) as refused:
            await TargetCheck(evidence(ledger)).on_request(call_of(method, params))
        assert "Invalid params" in refused.value.message and refused.value.data["reason"] == "ambiguous_name"
        assert ledger.events == ["rpc.refused"] and ledger.records[0][1]["reason"] == "ambiguous_name"


@pytest.mark.parametrize("name", ["echo", "get-env", "ns.tool/v2", "読む", "trace_🙂", "a b"])
async def test_ordinary_names_pass_the_target_stage(name: str) -> None:
    from ledgergate.gateway.stages.target import TargetCheck

    ledger = Ledger()
    call = call_of("tools/call", {"name": name, "arguments": {}})
    await TargetCheck(evidence(ledger)).on_request(call)
    assert ledger.events == [] and call.target == name


@pytest.mark.parametrize("args", ["DROP TABLE customers", ["a"], 123, 1.5, True, ""])
async def test_arguments_that_are_not_an_object_are_refused_before_policy(args: Any) -> None:
    """Policy, the ledger's digest and an approval's binding read such arguments as none at all (so an
    approval given for `{}` released a call whose arguments were a string), while the upstream got them."""
    from ledgergate.gateway.stages.target import AmbiguousTarget, TargetCheck

    for method in ("tools/call", "prompts/get"):
        ledger = Ledger()
        with pytest.raises(AmbiguousTarget) as refused:
            await TargetCheck(evidence(ledger)).on_request(call_of(method, {"name": "run", "arguments": args}))
        assert "arguments must be a JSON object" in refused.value.message
        assert ledger.events == ["rpc.refused"] and ledger.records[0][1]["reason"] == "arguments_not_an_object"


@pytest.mark.parametrize("params", [{"name": "run"}, {"name": "run", "arguments": None},
                                    {"name": "run", "arguments": {}}, {"name": "run", "arguments": {"a": [1]}}])
async def test_absent_null_or_object_arguments_pass_the_target_stage(params: dict[str, Any]) -> None:
    from ledgergate.gateway.stages.target import TargetCheck

    ledger = Ledger()
    await TargetCheck(evidence(ledger)).on_request(call_of("tools/call", params))
    assert ledger.events == []


async def test_an_approval_gated_call_with_params_outside_the_binding_is_refused(tmp_path: Any) -> None:
    """An approval binds the target and the arguments; `options` beside them reached the upstream after an
    approval of `{"q": 1}` alone."""
    ledger = Ledger()
    gate, service = await _gate(tmp_path, ledger)
    try:
        call = call_of("tools/call", {"name": "run", "arguments": {"q": 1}, "options": {"mode": "delete-all"}})
        call.decision = NEEDS_BOB
        with pytest.raises(GatewayError) as refused:
            await drain(await gate.on_request(call))
        assert "'options'" in refused.value.message and refused.value.data["reason"] == "unbound_params"
        assert ledger.events == ["approval.refused"] and await service.list() == []
        # the protocol's envelope is not the call's content: a progress token or a task request is fine
        ok = call_of("tools/call", {"name": "run", "arguments": {"q": 1}, "_meta": {"progressToken": 1}})
        ok.decision = NEEDS_BOB
        with pytest.raises(ApprovalPending):
            await drain(await gate.on_request(ok))
    finally:
        await service.close()


async def test_an_outcome_the_ledger_cannot_record_is_refused_as_a_call_that_ran() -> None:
    """The response record failing gave the same 503 as the request record's ("nothing is forwarded"),
    though the call had run upstream: a client that retried repeated a transfer that went through."""
    from ledgergate.errors import LedgerUnavailable

    class Failing(Ledger):
        async def append(self, event: str, fields: Mapping[str, Any]) -> int:
            raise LedgerUnavailable("audit ledger did not make the record durable in time")

    call = call_of()
    with pytest.raises(LedgerUnavailable) as refused:
        await AuditResponse(evidence(Failing())).on_response(call, {"jsonrpc": "2.0", "id": 7, "result": {}})
    assert "the call ran upstream" in refused.value.message and call.request_id in refused.value.message
    assert refused.value.http_status == 503 and refused.value.data["forwarded"] is True


@pytest.mark.parametrize("method, params", [
    ("tools/call", {"name": ["lookup_customer"], "arguments": {}}), ("tools/call", {"arguments": {}}),
    ("tools/call", {"name": 7}), ("prompts/get", {"name": {"n": "x"}}), ("resources/read", {"uri": ["bank://x"]}),
    ("resources/read", {}), ("resources/subscribe", {"uri": None})])
async def test_a_call_whose_target_is_not_a_string_is_refused_before_policy(method: str,
                                                                           params: dict[str, Any]) -> None:
    """No target, so no rule naming tools, prompts or resources could match: a blanket allow forwarded it."""
    from ledgergate.gateway.stages.target import AmbiguousTarget, TargetCheck

    ledger = Ledger()
    with pytest.raises(AmbiguousTarget) as refused:
        await TargetCheck(evidence(ledger)).on_request(call_of(method, params))
    assert "a string" in refused.value.message and refused.value.data["reason"] == "target_not_a_string"
    assert ledger.events == ["rpc.refused"]
