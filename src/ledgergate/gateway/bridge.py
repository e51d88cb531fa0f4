"""Bridging the two protocol eras, so either kind of client reaches either kind of upstream.

* A 2026-07-28 client over a handshake-era upstream: the gateway keeps one
  upstream session per (server, principal); a server-to-client request arriving
  mid-call (elicitation, sampling, roots) becomes an input-required result whose
  `requestState` is a gateway token, and the client's retry with
  `inputResponses` is answered upstream and the same call continues.
* A handshake client over a 2026-07-28 upstream: `initialize` is answered from
  the upstream's `server/discover`; an input-required result from upstream is
  turned into server-to-client requests on the client's SSE stream, and the
  call is retried upstream with the client's answers.

Everything still walks the pipeline: each round is authorised and recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from ledgergate.approvals.state import is_ours as is_approval_state
from ledgergate.audit import canonical
from ledgergate.errors import (
    INVALID_PARAMS,
    UPSTREAM_UNAVAILABLE,
    BadRequest,
    CallCancelled,
    GatewayError,
    LedgerUnavailable,
    PolicyDenied,
    UpstreamError,
)
from ledgergate.gateway import offload
from ledgergate.gateway.call import Call, new_request_id
from ledgergate.gateway.pipeline import CANCEL_GRACE, Hangup, Pipeline
from ledgergate.gateway.sessions import GatewaySession, InFlight, SessionRegistry
from ledgergate.gateway.stages.approval import ApprovalGate
from ledgergate.gateway.stages.messages import PROGRESS, SERVER_REQUESTS, progress_token
from ledgergate.identity.redact import redact_url
from ledgergate.principal import Principal
from ledgergate.requestlog import REQUEST_ID
from ledgergate.upstream.base import (
    CALLER,
    FULL_CLIENT_CAPABILITIES,
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE,
    META_SERVER_INFO,
    MODERN_VERSION,
    ClientHello,
    Message,
    UpstreamSession,
    UpstreamSessionLost,
)
from ledgergate.upstream.registry import Upstream
from ledgergate.wire import jsonrpc

log = logging.getLogger("ledgergate.upstream")

#: the client capability a server request needs (MCP "Client capabilities"), for the requests a stateless
#: client is not asked unless it declared it (`_until_input`). Elicitation is not among them: stateless
#: clients answer it whether or not they declare it (some SDKs forward it always), and it is how a server
#: asks the person, so it is handed over as it came.
_CAPABILITY_OF = {"sampling/createMessage": "sampling", "roots/list": "roots"}

INPUT_REQUIRED = "input_required"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
_LIST_CHANGED = (("toolsListChanged", "tools", "notifications/tools/list_changed"),
                 ("promptsListChanged", "prompts", "notifications/prompts/list_changed"),
                 ("resourcesListChanged", "resources", "notifications/resources/list_changed"))
#: 2026-07-28 results that are cacheable must say for whom and how long; the gateway filters
#: lists per caller, so whatever the upstream said, the answer is private to this caller.
_CACHEABLE = ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read")
_STATE_PREFIX = "lgw1."
_MAX_INPUT_ROUNDS = 16
_PENDING_TTL = 600.0
_CANCEL_GRACE = CANCEL_GRACE  # the grace of a client's cancellation, as of its hanging up (pipeline.py)
CANCELLED = "notifications/cancelled"
#: a retry's params that are not part of the request it repeats (the envelope and the answers it brings)
_RETRY_ENVELOPE = frozenset({"_meta", "requestState", "inputResponses"})
_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: the requestState the gateway hands a stateless client for a 2026-07-28 upstream's round (`UpstreamRound`)
_ROUND_PREFIX = "lgu1."
#: the state key seals approvals' states too (`approvals/state.py`): a key of its own for rounds
_ROUND_KEY_DOMAIN = b"ledgergate/bridge/upstream-round/v1"


@dataclass(frozen=True)
class RequestBinding:
    """The request a paused call answers: its method, the tool, prompt or resource it names, and a
    SHA-256 of the RFC 8785 form of the rest of its params (the arguments). A retry resumes the call only
    when it repeats the request (MCP's input-required retry; the SDK's own sealed state binds the same)."""

    method: str
    name: Any
    params_digest: str

    @classmethod
    def of(cls, message: Message) -> RequestBinding:
        params = message.get("params") or {}
        rest = {k: v for k, v in params.items() if k not in _RETRY_ENVELOPE}
        return cls(message.get("method", ""), params.get(_NAME_PARAM.get(message.get("method", ""), "name")),
                   hashlib.sha256(canonical.dumps(rest)).hexdigest())

    def differs(self, other: RequestBinding) -> str | None:
        """What of `other` is not this request (None: it is this request)."""
        if other.method != self.method:
            return "method"
        if other.name != self.name or type(other.name) is not type(self.name):
            return "name"
        if other.params_digest != self.params_digest:
            return "arguments"
        return None


class RoundRefused(ValueError):
    """A `requestState` the gateway did not seal, altered, malformed or expired: nothing is forwarded."""


@dataclass(frozen=True)
class UpstreamRound:
    """An input-required round of a 2026-07-28 upstream, as the gateway vouches for it to the client.

    The upstream's own `requestState` proves nothing about who may finish the round (the upstream cannot
    tell the gateway's callers apart), so the client is handed this instead, sealed under the gateway's
    state key (`_round_key`): the upstream's state, the principal and server it was given to, the request
    it answers, which method each input key asked with (policy decides the answer by it), and an expiry.
    Clients treat the state as opaque. Its body is signed, not encrypted: it holds nothing the client was not
    shown (the upstream's state as the client got it, masked) but a digest of the principal's key.
    `approval` names the approval that released the call the round belongs to: its retry runs under it
    (`Bridge._released_round`) rather than asking the approvers again for the call they approved. `number`
    counts the call's rounds: a stateless call gets as many as a handshake client's (`_MAX_INPUT_ROUNDS`),
    not as many as an upstream keeps asking for (under one approval, each round runs the call again)."""

    state: Any
    principal_tag: str
    server: str
    binding: RequestBinding
    asked: dict[str, str]
    expires: float
    approval: str | None = None
    number: int = 1

    def seal(self, key: bytes) -> str:
        fields = {"s": self.state, "p": self.principal_tag, "v": self.server,
                  "b": [self.binding.method, self.binding.name, self.binding.params_digest],
                  "q": self.asked, "e": self.expires}
        if self.approval is not None:
            fields["a"] = self.approval
        if self.number != 1:
            fields["n"] = self.number
        body = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
        return _ROUND_PREFIX + _b64(body) + "." + _b64(hmac.new(key, body, hashlib.sha256).digest())

    @classmethod
    def open(cls, key: bytes, token: str, now: float) -> UpstreamRound:
        """The round `token` seals; RoundRefused when it is not one the gateway sealed, or too old."""
        try:
            body_b64, mac_b64 = token[len(_ROUND_PREFIX):].split(".", 1)
            body, mac = _unb64(body_b64), _unb64(mac_b64)
        except ValueError:
            raise RoundRefused("requestState is malformed") from None
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            raise RoundRefused("requestState was not issued by this gateway or was altered")
        fields = json.loads(body)
        if float(fields["e"]) < now:
            raise RoundRefused("requestState has expired")
        method, name, digest = fields["b"]
        approval = fields.get("a")
        return cls(fields["s"], str(fields["p"]), str(fields["v"]), RequestBinding(method, name, digest),
                   dict(fields["q"]), float(fields["e"]), str(approval) if approval is not None else None,
                   int(fields.get("n", 1)))

    @staticmethod
    def use_of(token: str) -> str:
        """The round's id in the store of used states: a digest of the sealed state, never the state."""
        return hashlib.sha256(b"ledgergate/upstream-round-used/" + token.encode()).hexdigest()


def principal_tag(principal: Principal) -> str:
    # the key itself would show a principal's identifiers to whoever reads the (unencrypted) state
    return hashlib.sha256(principal.key.encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class PendingInput:
    """A stateless client's call paused on server requests it must answer."""

    principal_key: str
    server: str
    stream: AsyncGenerator[Message, None]
    upstream: UpstreamSession
    requests: dict[str, Any]  # input key → upstream server-request id
    expires: float
    #: the request the call answers: a retry presenting the state must repeat it
    binding: RequestBinding
    #: the call as the pipeline carries it, so that the retry's client hanging up ends it (`pipeline.Hangup`)
    call: Call | None = None
    #: who the upstream knows the call's request by (`upstream.base.CALLER`): a cancellation must name it so
    owner: str | None = None


def _stray_round(params: Any, approval_state_ok: bool) -> str | None:
    """What of an input round's params a client sent where the gateway does not check them, or None.

    `requestState` and `inputResponses` are checked in one place only: a stateless client's retry towards a
    2026-07-28 upstream (`Bridge._answers`), and the gateway's own states (`lgw1.`: `_resume`; `lga1.`: the
    approval stage, when `approval_state_ok`). Anywhere else they went to the upstream unchecked: a handshake
    client (or a legacy SSE one) could finish another identity's round with its upstream state, answering
    with a method policy refuses it, and nothing recorded the answers."""
    if not isinstance(params, dict):
        return None
    state = params.get("requestState")
    if "requestState" in params and not (approval_state_ok and is_approval_state(state)):
        return "requestState"
    if "inputResponses" in params and not (approval_state_ok and is_approval_state(state)):
        return "inputResponses"
    return None


def _approval_gate(pipeline: Pipeline) -> ApprovalGate | None:
    """The pipeline's approval stage: it holds the state key and the re-check of a call that waited."""
    return next((s for s in pipeline.request_stages if isinstance(s, ApprovalGate)), None)


class UsedStates(Protocol):
    """Where a state once used is remembered on every replica (`store.signouts_store.SignOutStore.consume`)."""

    def consume(self, token_id: str, expires: float, now: float) -> bool: ...


class Bridge:
    def __init__(self) -> None:
        self._pending: dict[str, PendingInput] = {}
        self._synth_ids = itertools.count(1)
        #: seals rounds when the pipeline has no state key (a bare pipeline): they then open on this process only
        self._own_key = secrets.token_bytes(32)
        #: the store that makes an `lgu1.` round single-use on every replica (the app's, `App.start`); without
        #: one (a bare bridge), rounds are remembered by this process only (`_used_here`)
        self.used_rounds: UsedStates | None = None
        self._used_here: dict[str, float] = {}

    def _round_key(self, pipeline: Pipeline) -> bytes:
        """The key of `UpstreamRound` states: derived from the state key every replica shares (a retry may
        reach another replica), under a domain of its own."""
        gate = _approval_gate(pipeline)
        base = gate.state_key if gate is not None and gate.state_key else self._own_key
        return hmac.new(base, _ROUND_KEY_DOMAIN, hashlib.sha256).digest()

    # ── hello ───────────────────────────────────────────────────────────────
    async def initialize(self, pipeline: Pipeline, session: GatewaySession, principal: Principal) -> dict[str, Any]:
        """Answer a handshake client's `initialize` (opening the upstream session first)."""
        upstream_session = await self._ready(pipeline, session)
        hello = upstream_session.server_hello
        if upstream_session.era == "handshake":
            result = dict(hello)
        else:
            version = session.hello.protocol_version
            result = {
                "protocolVersion": version if version in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE,
                "capabilities": hello.get("capabilities", {}),
                "serverInfo": (hello.get("_meta") or {}).get(META_SERVER_INFO) or {"name": session.server,
                                                                                    "version": "unknown"},
            }
            if hello.get("instructions"):
                result["instructions"] = hello["instructions"]
        result = pipeline.messages.hello(session.server, principal, "initialize", result)
        await pipeline.evidence.append("session.opened", {
            "session": session.id, "server": session.server, "principal": principal.summary(),
            "client": session.hello.client_info, "protocol_version": result.get("protocolVersion"),
            "upstream_era": upstream_session.era,
        })
        return result

    async def discover(self, pipeline: Pipeline, server: str, principal: Principal, upstream: Upstream,
                       sessions: SessionRegistry, hello: ClientHello) -> dict[str, Any]:
        """`server/discover` for a stateless client, whatever the upstream speaks."""
        shared = sessions.shared_for(server, principal, upstream, self._shared_hello(hello))
        upstream_session = await self._ready(pipeline, shared)
        base = upstream_session.server_hello
        if upstream_session.era == "modern":
            result = {k: v for k, v in base.items()}
            result["supportedVersions"] = [MODERN_VERSION]
            result["cacheScope"] = "private"
        else:
            result = {
                "supportedVersions": [MODERN_VERSION],
                "capabilities": base.get("capabilities", {}),
                "cacheScope": "private",
                "ttlMs": 0,
                "resultType": "complete",
                "_meta": {META_SERVER_INFO: base.get("serverInfo") or {"name": server, "version": "unknown"}},
            }
            if base.get("instructions"):
                result["instructions"] = base["instructions"]
        return pipeline.messages.hello(server, principal, "server/discover", result)

    async def _shared(self, pipeline: Pipeline, server: str, principal: Principal, upstream: Upstream,
                      sessions: SessionRegistry, hello: ClientHello) -> GatewaySession:
        """The principal's shared upstream session; before one is opened (a stdio child, an upstream
        handshake), the principal must be one that may use the server at all."""
        if not self._shared_open(sessions, server, principal):
            await pipeline.admit(server, principal, "initialize")
        return sessions.shared_for(server, principal, upstream, self._shared_hello(hello))

    @staticmethod
    def _shared_open(sessions: SessionRegistry, server: str, principal: Principal) -> bool:
        shared = sessions.peek_shared(server, principal)
        return shared is not None and shared.upstream_session is not None and shared.upstream_session.alive

    @staticmethod
    async def refuse_unless_notification(pipeline: Pipeline, server: str, principal: Principal,
                                         session_id: str | None, message: Message) -> None:
        """Only `notifications/*` may arrive without an id: a request shaped as a notification (a
        `tools/call` with no id) would skip every decision, so it is refused and recorded."""
        method = message["method"]
        if method.startswith("notifications/"):
            return
        call = Call(server=server, principal=principal, message=message, session_id=session_id)
        await pipeline.evidence.record("rpc.refused", call, with_args=True, reason="not_a_notification")
        refusal = BadRequest(f"Invalid Request: {method!r} is not a notification, so it needs an \"id\"; nothing "
                             f"was forwarded (request id {call.request_id})",
                             data={"reason": "not_a_notification", "requestId": call.request_id})
        refusal.recorded = True
        raise refusal

    @staticmethod
    def _shared_hello(hello: ClientHello) -> ClientHello:
        # One upstream session serves all of a principal's stateless calls, so it offers every
        # capability; a request the calling client cannot answer fails at that client.
        return ClientHello(protocol_version=LATEST_HANDSHAKE, capabilities=dict(FULL_CLIENT_CAPABILITIES),
                           client_info=hello.client_info)

    # ── stateless client ────────────────────────────────────────────────────
    async def modern_call(self, pipeline: Pipeline, server: str, principal: Principal, message: Message, upstream: Upstream,
                          sessions: SessionRegistry, hello: ClientHello,
                          hangup: Hangup | None = None) -> AsyncGenerator[Message, None]:
        """A stateless client's call. With `hangup` (the server tells it when the client disconnects, which is
        how this era cancels), the call goes upstream under a caller of its own (`Call.caller`), so that the
        upstream can be told of the cancellation with its own id for it (`pipeline.Flight.hang_up`)."""
        params = message.get("params") or {}
        state = params.get("requestState")
        if isinstance(state, str) and state.startswith(_STATE_PREFIX):
            async with aclosing(self._resume(pipeline, state, principal, server, message, hangup)) as resumed:
                async for item in resumed:
                    yield item
            return
        call = Call(server=server, principal=principal, message=message, era="modern",
                    client_capabilities=hello.capabilities)
        checked = not self._shared_open(sessions, server, principal)
        if checked:
            await pipeline.precheck(call)  # a refused call opens nothing upstream (no session, no stdio child)
        shared = sessions.shared_for(server, principal, upstream, self._shared_hello(hello))
        upstream_session = await self._ready(pipeline, shared, call.request_id)
        released: str | None = None  # the approval the answered round's call ran under, if one did
        rounds = 0  # the call's input rounds so far
        if upstream_session.era == "modern" and ("requestState" in params or "inputResponses" in params):
            answered = await self._answers(pipeline, call, checked)
            released = answered.approval if answered is not None else None
            rounds = answered.number if answered is not None else 0
        elif (stray := _stray_round(params, approval_state_ok=True)) is not None:
            # a handshake-era upstream runs no input rounds: only the gateway's own states mean anything here
            raise await self._stray_refused(pipeline, call, stray)
        if upstream_session.era == "handshake":
            # the principal's shared session, not the client's: if the upstream no longer knows it, the call is
            # sent once more on a new one (only when the upstream says it did not run it)
            upstream_session = Resending(pipeline, shared, upstream_session, call)
        if hangup is not None:
            if hangup.gone:
                # gone before any decision was recorded: nothing is forwarded, and there is nothing to record
                # (from here to the pipeline's taking the call in, nothing waits: a later hangup finds it there,
                # `InFlight.hang_up`)
                refusal = CallCancelled(f"Request cancelled: the client disconnected before the call was "
                                        f"forwarded (request id {call.request_id})",
                                        data={"requestId": call.request_id, "reason": "client_disconnected",
                                              "forwarded": False})
                refusal.recorded = True
                raise refusal
            hangup.call = call
            CALLER.set(call.caller)
        stream = pipeline.handle(call, upstream_session) if released is None else \
            await self._released_round(pipeline, call, released, upstream_session)
        async with aclosing(self._until_input(pipeline, stream, upstream_session, principal, server, message["id"],
                                              message, call, CALLER.get())) as items:
            async for item in items:
                if "method" in item:
                    yield item
                    continue
                if upstream_session.era == "modern":
                    item = await self._sealed_round(pipeline, call, message, item, rounds + 1)
                yield self.modernize(message["method"], item)

    async def _answers(self, pipeline: Pipeline, call: Call, checked: bool) -> UpstreamRound | None:
        """A stateless client's retry of a 2026-07-28 upstream's input-required round, before it is forwarded.

        The retry brings the client's answers (`inputResponses`: a person's confirmation, a sampled
        completion) and the round's `requestState`; the upstream acts on both. The state must be the
        gateway's `UpstreamRound`, sealed for this principal, server and request; each answer must answer
        an input key the round asked, with a method the policy in force lets this caller answer (as a
        handshake-era server's request is decided, `Messages.during_call`); the round must not have been
        used before, on any replica (`_use_round`: it is used up now); then each answer is recorded
        (`rpc.reply`, masked for the ledger, under the retry's request id) and only then forwarded, with the
        upstream's own state in place of the gateway's. Anything else is refused and recorded, with nothing
        forwarded. A state of the approval stage's (`lga1.`) is left to it: it takes the state and any answers
        off the call, so neither reaches the upstream. Returns the round answered (None: no round was)."""
        params = call.params
        state = params.get("requestState")
        if is_approval_state(state) or (state is None and not params.get("inputResponses")):
            return None  # no round is answered (some clients send `"requestState": null` on a first call)
        if not checked:  # a call policy refuses now is refused (and recorded) as such, before its answers are
            await pipeline.precheck(call)
        if not isinstance(state, str) or not state.startswith(_ROUND_PREFIX):
            raise await self._round_refused(pipeline, call, "invalid_request_state",
                                            "no requestState of this gateway's comes with the answers")
        try:
            held = UpstreamRound.open(self._round_key(pipeline), state, time.time())
        except RoundRefused as exc:
            raise await self._round_refused(pipeline, call, "invalid_request_state", str(exc)) from None
        if held.principal_tag != principal_tag(call.principal) or held.server != call.server:
            # the upstream cannot tell callers apart: the round is finished only by the caller it was put to
            raise await self._round_refused(pipeline, call, "foreign_request_state",
                                            "requestState belongs to another caller")
        differs = held.binding.differs(await offload.sized(params, RequestBinding.of, call.message))
        if differs is not None:
            raise await self._round_refused(pipeline, call, "request_state_mismatch",
                                            f"a retry must repeat the request it resumes, and its {differs} differs",
                                            differs=differs)
        responses = params.get("inputResponses")
        if responses is None:
            responses = {}
        if not isinstance(responses, dict):
            raise await self._round_refused(pipeline, call, "invalid_input_responses",
                                            "inputResponses must be an object")
        unasked = sorted(set(responses) - set(held.asked))
        if unasked:
            raise await self._round_refused(pipeline, call, "unasked_input",
                                            f"inputResponses answers {len(unasked)} input key(s) the round did not ask")
        for key in responses:
            await self._may_answer(pipeline, call, held.asked[key])
        # only once every check passed: a refused retry (another caller's, an altered one) cannot use it up
        await self._use_round(pipeline, call, state, held)
        for key, answer in responses.items():
            await pipeline.messages.from_client(call.server, call.principal, None, self._answer(key, answer),
                                                request_id=call.request_id, asked=held.asked[key])
        forwarded = {k: v for k, v in params.items() if k != "requestState"}
        if held.state is not None:
            forwarded["requestState"] = held.state
        call.message = {**call.message, "params": forwarded}
        return held

    async def _use_round(self, pipeline: Pipeline, call: Call, state: str, held: UpstreamRound) -> None:
        """Use the round up, on every replica, or refuse (recorded): the upstream resumes its action on the
        answers, so a replayed state would repeat a person's one confirmation for as long as it is valid.
        A use the store cannot keep is refused too (fail closed), as the console's sign-in attempts are."""
        use, now = UpstreamRound.use_of(state), time.time()
        try:
            if self.used_rounds is None:
                first = self._use_here(use, held.expires, now)
            else:
                first = await asyncio.to_thread(self.used_rounds.consume, use, held.expires, now)
        except Exception as exc:  # noqa: BLE001 - fail closed: a use that cannot be stored is not allowed
            log.error("a requestState's use could not be stored: %s", type(exc).__name__)
            refusal = await self._round_refused(pipeline, call, "request_state_unrecorded",
                                                "its use could not be recorded; try again later")
            refusal.http_status = 503
            raise refusal from None
        if not first:
            raise await self._round_refused(pipeline, call, "request_state_used",
                                            "requestState was already used; a round is answered once")

    def _use_here(self, use: str, expires: float, now: float) -> bool:
        """`UsedStates.consume` for a bridge without a store: this process's memory, expired uses dropped."""
        for old in [k for k, until in self._used_here.items() if until < now]:
            del self._used_here[old]
        if use in self._used_here:
            return False
        self._used_here[use] = expires
        return True

    @staticmethod
    def _answer(key: str, answer: Any) -> Message:
        """An answer as the record shows it: the reply a handshake-era server would get for that input key."""
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict) and "result" not in answer:
            return {"jsonrpc": "2.0", "id": key, "error": answer["error"]}
        return jsonrpc.result(key, answer)

    @staticmethod
    async def _may_answer(pipeline: Pipeline, call: Call, method: str) -> None:
        """Refuse (recorded) an answer to an input request the policy in force does not let this caller answer."""
        verdict = pipeline.messages.policy.decide(call.principal, call.server, method, None, None, time.time())
        if verdict.effect == "allow":
            return
        await pipeline.evidence.record("policy.denied", call, method=method, direction="client-to-server",
                                       rule=verdict.rule, reason="input_method_refused")
        refusal = PolicyDenied(f"the gateway's policy refuses {method} for this caller, so its answer is not "
                               f"forwarded; nothing was forwarded (request id {call.request_id})",
                               data={"rule": verdict.rule, "requestId": call.request_id,
                                     "reason": "input_method_refused"})
        refusal.recorded = True
        raise refusal

    @staticmethod
    async def _round_refused(pipeline: Pipeline, call: Call, reason: str, said: str, **data: Any) -> GatewayError:
        await pipeline.evidence.record("rpc.refused", call, with_args=True, reason=reason, detail=said)
        refusal = GatewayError(f"Invalid or expired requestState: {said}; nothing was forwarded "
                               f"(request id {call.request_id})", rpc_code=INVALID_PARAMS,
                               data={"reason": reason, "requestId": call.request_id, **data})
        refusal.recorded = True
        return refusal

    @staticmethod
    async def _stray_refused(pipeline: Pipeline, call: Call, param: str) -> GatewayError:
        await pipeline.evidence.record("rpc.refused", call, with_args=True, reason="unexpected_round_params",
                                       detail=param)
        refusal = GatewayError(f"Invalid params: {param!r} is accepted only on a stateless (2026-07-28) client's "
                               f"retry of an input round the gateway handed it; nothing was forwarded "
                               f"(request id {call.request_id})", rpc_code=INVALID_PARAMS,
                               data={"reason": "unexpected_round_params", "param": param,
                                     "requestId": call.request_id})
        refusal.recorded = True
        return refusal

    async def _sealed_round(self, pipeline: Pipeline, call: Call, message: Message, item: Message,
                            number: int) -> Message:
        """A 2026-07-28 upstream's answer, its input-required round's `requestState` sealed (`UpstreamRound`)
        for this caller and request; any other answer as it is. Past `_MAX_INPUT_ROUNDS` rounds the call
        ends with an error, as a handshake client's does."""
        result = item.get("result")
        if not isinstance(result, dict) or result.get("resultType") != INPUT_REQUIRED:
            return item
        if is_approval_state(result.get("requestState")):
            return item  # the approval stage's answer, in the upstream's place
        if number > _MAX_INPUT_ROUNDS:
            said = f"the upstream asked for input more than {_MAX_INPUT_ROUNDS} times"
            await pipeline.evidence.record("rpc.refused", call, with_args=True, reason="too_many_input_rounds",
                                           detail=said)
            return jsonrpc.error(item.get("id"), UPSTREAM_UNAVAILABLE, f"{said}; the call was ended "
                                 f"(request id {call.request_id})",
                                 {"reason": "too_many_input_rounds", "requestId": call.request_id})
        requests = result.get("inputRequests")
        asked = {key: request["method"] for key, request in requests.items()
                 if isinstance(request, dict) and isinstance(request.get("method"), str)} \
            if isinstance(requests, dict) else {}
        binding = await offload.sized(message.get("params"), RequestBinding.of, message)
        # a round of a call an approval released names it: the retry is that call's next round (`_released_round`)
        sealed = UpstreamRound(result.get("requestState"), principal_tag(call.principal), call.server, binding,
                               asked, time.time() + _PENDING_TTL, call.approval_id,
                               number).seal(self._round_key(pipeline))
        return {**item, "result": {**result, "requestState": sealed}}

    async def _until_input(self, pipeline: Pipeline, stream: AsyncGenerator[Message, None],
                           upstream_session: UpstreamSession, principal: Principal, server: str, request_id: Any,
                           request: Message | RequestBinding, call: Call | None = None,
                           owner: str | None = None) -> AsyncGenerator[Message, None]:
        """Relay the call; at the first server request, pause it and answer input-required.

        The principal's shared upstream session offers every client capability (`_shared_hello`), so the
        server may ask for roots or sampling that this call's client never declared (server-everything asks
        every new session for `roots/list`). Such a request is answered here, with the error a client
        without the capability would give, and recorded as the reply; the call goes on. Handed to the
        client, it failed the call, though the client could not have answered it anyway.

        The paused call's stream is parked for the client's next request; any other way out
        closes it here (an abandoned stream would be closed later by a task of the event loop).
        The request's binding (a digest of all its params) is made only when it pauses, which few do:
        made for every call, it was a walk of every argument on the event loop, before any policy. A
        resumed call that pauses again keeps the binding it was first given.
        """
        parked = False
        try:
            async for item in stream:
                if "method" in item and "id" in item and item["method"] in SERVER_REQUESTS:
                    if upstream_session.era == "modern":
                        continue  # a stateless upstream cannot send these; ignore a misbehaving one
                    needs = _CAPABILITY_OF.get(item["method"])
                    if needs is not None and call is not None and needs not in call.client_capabilities:
                        reply = jsonrpc.error(item["id"], -32601, f"the calling client does not support {needs}")
                        await pipeline.messages.from_client(server, principal, None, reply,
                                                            reason="client_lacks_capability")
                        await upstream_session.reply(reply)
                        continue
                    key = f"r{item['id']}"
                    binding = request if isinstance(request, RequestBinding) else \
                        await offload.sized(request.get("params"), RequestBinding.of, request)
                    token = _STATE_PREFIX + secrets.token_urlsafe(24)
                    self._expire()
                    self._pending[token] = PendingInput(principal.key, server, stream, upstream_session,
                                                        {key: item["id"]}, time.monotonic() + _PENDING_TTL, binding,
                                                        call, owner)
                    parked = True
                    request = {"method": item["method"], "params": item.get("params") or {}}
                    yield jsonrpc.result(request_id, {"resultType": INPUT_REQUIRED,
                                                      "inputRequests": {key: request}, "requestState": token})
                    return
                yield item
        finally:
            if not parked:
                await stream.aclose()

    async def _resume(self, pipeline: Pipeline, token: str, principal: Principal, server: str,
                      message: Message, hangup: Hangup | None = None) -> AsyncGenerator[Message, None]:
        pending = self._pending.get(token)
        if pending is None or pending.expires < time.monotonic():
            self._pending.pop(token, None)
            raise GatewayError("requestState is unknown or expired; send the request again without it",
                               rpc_code=INVALID_PARAMS)
        if pending.principal_key != principal.key or pending.server != server:
            # Refused without consuming it: someone else's presenting it must not end the owner's call.
            call = Call(server=server, principal=principal, message=message, era="modern")
            await pipeline.evidence.record("rpc.refused", call, reason="foreign_request_state")
            raise GatewayError(f"requestState belongs to another caller (request id {call.request_id})",
                               rpc_code=INVALID_PARAMS)
        differs = pending.binding.differs(await offload.sized(message.get("params"), RequestBinding.of, message))
        if differs is not None:
            # The retry must repeat the request it resumes: one naming another tool (a denied one, say) or
            # other arguments was answered with the paused call's result, and no record said what it asked.
            # Refused without consuming the state (the owner may still send the right retry).
            call = Call(server=server, principal=principal, message=message, era="modern")
            await pipeline.evidence.record("rpc.refused", call, with_args=True, reason="request_state_mismatch",
                                           detail=f"the retry's {differs} differs from the request it resumes")
            refusal = GatewayError(
                f"Invalid or expired requestState: a retry must repeat the request it resumes, and its {differs} "
                f"differs; nothing was forwarded (request id {call.request_id})",
                rpc_code=INVALID_PARAMS,
                data={"reason": "invalid_request_state", "differs": differs, "requestId": call.request_id})
            refusal.recorded = True
            raise refusal
        del self._pending[token]  # the owner's: used once (no await since the check above)
        why = self._may_resume(pipeline, pending)
        if why is not None:
            raise await self._end_paused(pipeline, pending, principal, server, message, why)
        responses = (message.get("params") or {}).get("inputResponses") or {}
        for key, server_request_id in pending.requests.items():
            answer = responses.get(key)
            if answer is None:
                reply = jsonrpc.error(server_request_id, -32600, "the client gave no answer")
            elif isinstance(answer, dict) and "error" in answer and "code" in (answer.get("error") or {}):
                reply = {"jsonrpc": "2.0", "id": server_request_id, "error": answer["error"]}
            else:
                reply = jsonrpc.result(server_request_id, answer)
            await pipeline.messages.from_client(server, principal, None, reply)
            await pending.upstream.reply(reply)
        if hangup is not None and pending.call is not None:
            # the retry's client hanging up ends the call it resumes; gone already, the call (parked in the
            # pipeline) is ended now, and records that as it resumes below
            hangup.call = pending.call
            if hangup.gone:
                hangup.flights.hang_up(pending.call)
        async with aclosing(self._until_input(pipeline, pending.stream, pending.upstream, principal, server,
                                              message["id"], pending.binding, pending.call, pending.owner)) as items:
            async for item in items:
                if "method" not in item and "id" in item:
                    item = self.modernize(message["method"], {**item, "id": message["id"]})
                yield item

    @staticmethod
    def _may_resume(pipeline: Pipeline, pending: PendingInput) -> str | None:
        """Why a paused call may not go on under the config in force now (None: it may). It may have waited
        for its client's answer for minutes (`_PENDING_TTL`), often a person confirming the very action: an
        emergency deny rule loaded meanwhile stops it, as it stops a call that waited for approval
        (`ApprovalGate._still_may_run`, the same re-check)."""
        call = pending.call
        if call is None:
            return "the paused call cannot be decided again"
        gate = _approval_gate(pipeline)
        if gate is not None and gate.recheck is not None:
            return gate.recheck(call)
        now = pipeline.messages.policy.decide(call.principal, call.server, call.method, call.target,
                                              call.arguments, time.time())
        was = call.decision
        if now.effect == "allow" or (now.effect == "approve" and was is not None and was.rule == now.rule):
            return None
        return f"the policy now in force refuses it (rule {now.rule or 'default deny'})"

    async def _end_paused(self, pipeline: Pipeline, pending: PendingInput, principal: Principal, server: str,
                          message: Message, why: str) -> GatewayError:
        """End a paused call the config in force no longer lets run: the retry refused (recorded), the call
        cancelled upstream and its open requests declined (recorded, as the gateway's replies), so no answer
        of the client's reaches the upstream and nothing lingers there; then the call's outcome recorded."""
        retry = Call(server=server, principal=principal, message=message, era="modern")
        call = pending.call if pending.call is not None else retry
        await pipeline.evidence.record("rpc.refused", retry, with_args=True, reason="policy_changed", detail=why,
                                       cancels=call.request_id)
        told = False
        try:
            cancel = {"jsonrpc": "2.0", "method": CANCELLED,
                      "params": {"requestId": call.message.get("id"), "reason": "refused by the gateway's policy"}}
            if pending.upstream.alive and pending.upstream.outbound(cancel, pending.owner) is not None:
                async with asyncio.timeout(_CANCEL_GRACE):
                    told = await pending.upstream.notify(cancel, pending.owner)
            for server_request_id in pending.requests.values():
                decline = jsonrpc.error(server_request_id, -32003, "refused by the gateway's policy")
                await pipeline.messages.from_client(server, principal, None, decline, reason="policy_changed")
                await pending.upstream.reply(decline)
        except LedgerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a call the policy refuses ends whether or not the upstream heard
            log.warning("the upstream of a paused call the policy now refuses could not be told to stop it: %s",
                        type(exc).__name__)
        finally:
            await pending.stream.aclose()  # its upstream request ends with it
        await pipeline.evidence.record("rpc.response", call, error=f"ended while it waited for input: {why}",
                                       reason="policy_changed", cancel_sent=told, latency_ms=call.latency_ms())
        refusal = PolicyDenied(f"the paused call no longer runs: {why}; it was ended and nothing of this retry was "
                               f"forwarded (request id {retry.request_id})",
                               data={"reason": "policy_changed", "requestId": retry.request_id,
                                     "cancels": call.request_id})
        refusal.recorded = True
        return refusal

    @staticmethod
    def modernize(method: str, message: Message) -> Message:
        """Give a result the 2026-07-28 shape a stateless client expects (resultType, cache hints)."""
        result = message.get("result")
        if not isinstance(result, dict):
            return message
        result = dict(result)
        result.setdefault("resultType", "complete")
        if method in _CACHEABLE and result["resultType"] == "complete":
            result["cacheScope"] = "private"
            result.setdefault("ttlMs", 0)
        return {**message, "result": result}

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, p in self._pending.items() if p.expires < now]:
            self._pending.pop(token, None)

    # ── handshake client ────────────────────────────────────────────────────
    async def handshake_call(self, pipeline: Pipeline, session: GatewaySession, principal: Principal,
                             message: Message) -> AsyncGenerator[Message, None]:
        """A handshake client's call, registered in its session (`session.running`) while in flight so
        that the client's `notifications/cancelled` can end it (`client_notification`) wherever it waits:
        for the upstream session, for the upstream's first message, for a JSON answer, on an SSE stream
        or a legacy one. Ended so, it is recorded as cancelled and answered -32800 (`CallCancelled`).

        The first call under an id keeps it until it ends (a second one sent meanwhile under the same id
        cannot be named by a cancellation)."""
        request_id = message["id"]
        entry = InFlight(progress_token(message))
        registered = session.running.setdefault(request_id, entry) is entry
        rounds = self._handshake_rounds(pipeline, session, principal, message, entry)
        try:
            while True:
                if entry.cancelled and not entry.done:  # cancelled while the call was with its reader
                    raise await self._cancelled(pipeline, session, principal, message, entry)
                entry.task = asyncio.current_task()  # the task a cancellation interrupts
                try:
                    item = await rounds.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    entry.task = None
                if entry.interrupted is not None:  # the interruption was swallowed on its way: withdrawn
                    entry.interrupted.uncancel()
                    entry.interrupted = None
                if "method" not in item:
                    entry.done = True  # the answer: too late to cancel
                yield item
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or entry.interrupted is not task:
                raise  # not the client's cancellation (the gateway stopping, the reader gone)
            if task.uncancel() > 0:
                raise  # cancelled for another reason as well: that one ends it
            raise await self._cancelled(pipeline, session, principal, message, entry) from None
        finally:
            entry.done = True
            if registered and session.running.get(request_id) is entry:
                del session.running[request_id]
            await rounds.aclose()

    @staticmethod
    async def _cancelled(pipeline: Pipeline, session: GatewaySession, principal: Principal, message: Message,
                         entry: InFlight) -> CallCancelled:
        """The outcome of a call its client cancelled, recorded (`rpc.response`, `cancelled: true`) and
        as the client is answered, if it still reads."""
        entry.done = True
        call = entry.call if entry.call is not None else Call(server=session.server, principal=principal,
                                                               message=message, session_id=session.id)
        await pipeline.evidence.record("rpc.response", call, error="cancelled by the client",
                                       cancelled=True, latency_ms=call.latency_ms())
        refusal = CallCancelled(f"Request cancelled: the client cancelled it (request id {call.request_id})",
                                data={"requestId": call.request_id})
        refusal.recorded = True
        return refusal

    async def _handshake_rounds(self, pipeline: Pipeline, session: GatewaySession, principal: Principal,
                                message: Message, entry: InFlight) -> AsyncGenerator[Message, None]:
        stray = _stray_round(message.get("params"), approval_state_ok=False)
        if stray is not None:  # the gateway asks a handshake client itself (server requests) and retries for it
            raise await self._stray_refused(pipeline, Call(server=session.server, principal=principal,
                                                           message=message, session_id=session.id), stray)
        upstream_session = await self._ready(pipeline, session)
        # whose call goes upstream: only this client's cancellation may name it there (`InflightIds`)
        CALLER.set(session.id)
        current = message
        approved: Call | None = None  # the round an approval released, if one did
        for _ in range(_MAX_INPUT_ROUNDS):
            call = Call(server=session.server, principal=principal, message=current, session_id=session.id,
                        client_capabilities=session.hello.capabilities, ask_client=self._asker(session))
            entry.call = call
            final: Message | None = None
            rounds = pipeline.handle(call, upstream_session) if approved is None else \
                await self._approved_round(pipeline, call, approved, upstream_session)
            # aclosing: the relay chain is closed the moment the answer is in, not by the garbage
            # collector (which would schedule a task per unfinished async generator)
            async with aclosing(rounds) as items:
                async for item in items:
                    if "method" in item and "id" in item:
                        session.relayed.add(item["id"])
                    if "method" not in item and item.get("id") == message["id"]:
                        final = item
                        break
                    yield item
            if final is None:
                raise UpstreamError("upstream ended the call without an answer")
            if call.approval_id is not None:
                approved = call
            result = final.get("result")
            if upstream_session.era == "modern" and isinstance(result, dict) \
                    and result.get("resultType") == INPUT_REQUIRED:
                answers = {}
                futures = {}
                for key, request in (result.get("inputRequests") or {}).items():
                    synth_id = f"lgw-{next(self._synth_ids)}"
                    futures[key] = session.waiting[synth_id] = asyncio.get_running_loop().create_future()
                    yield {"jsonrpc": "2.0", "id": synth_id, "method": request.get("method"),
                           "params": request.get("params") or {}}
                for key, fut in futures.items():
                    reply = await asyncio.wait_for(fut, _PENDING_TTL)
                    answers[key] = reply.get("result") if "result" in reply else {"error": reply.get("error")}
                params = {k: v for k, v in (current.get("params") or {}).items()
                          if k not in ("inputResponses", "requestState")}
                params["inputResponses"] = answers
                if result.get("requestState") is not None:
                    params["requestState"] = result["requestState"]
                current = {**current, "params": params}
                continue
            yield final
            return
        raise UpstreamError("too many input rounds for one request")

    @staticmethod
    async def _approved_round(pipeline: Pipeline, call: Call, approved: Call,
                              upstream: UpstreamSession) -> AsyncGenerator[Message, None]:
        """A later round of a handshake client's request whose first round an approval released: the retry
        with the client's answers, which the 2026-07-28 upstream asked for (`_handshake_rounds`). It is the
        call the approver approved, not another: the same client request, session and principal (this loop's),
        the same method, name and arguments, and a decision by the same rule with the same approvers; so it
        runs under that approval (its `rpc.request` names it) rather than asking the approvers for the same call
        again. It is still decided and recorded as a round of its own: target and policy first (a refusal is
        recorded there), then every other stage but the approval's. Anything else is decided afresh."""
        await pipeline.precheck(call)
        gate = _approval_gate(pipeline)
        now, was = call.decision, approved.decision
        same = gate is not None and now is not None and was is not None and now.effect == "approve" \
            and (now.rule, now.approvers) == (was.rule, was.approvers) \
            and RequestBinding.of(call.message).differs(RequestBinding.of(approved.message)) is None
        if not same or gate is None or approved.approval_id is None:
            return pipeline.handle(call, upstream)
        return await Bridge._past_approval(pipeline, gate, call, approved.approval_id, upstream)

    @staticmethod
    async def _released_round(pipeline: Pipeline, call: Call, approval_id: str,
                              upstream: UpstreamSession) -> AsyncGenerator[Message, None]:
        """A stateless client's retry of a 2026-07-28 upstream's round whose call an approval released: the
        round (`UpstreamRound`, sealed, bound to principal, server and request, and used up now, `_answers`)
        names the approval. It is that call's next round, as `_approved_round` is a handshake client's: when
        the approval still releases exactly this call (`ApprovalGate.releases`: its binding, rule and
        approvers, and the re-check of a call that waited), it runs under it, answers and all; else
        it is decided afresh. Asking the approvers again looped: each approved retry lost its answers."""
        gate = _approval_gate(pipeline)
        if gate is None or not await gate.releases(call, approval_id):
            return pipeline.handle(call, upstream)
        return await Bridge._past_approval(pipeline, gate, call, approval_id, upstream)

    @staticmethod
    async def _past_approval(pipeline: Pipeline, gate: ApprovalGate, call: Call, approval_id: str,
                             upstream: UpstreamSession) -> AsyncGenerator[Message, None]:
        """The call run under `approval_id`: every stage but target and policy (the precheck ran them) and the
        approval's; its `rpc.request` names the approval."""
        stages = pipeline.request_stages
        after = stages.index(gate)
        try:
            for stage in stages[:after]:
                if stage is pipeline.target or stage is pipeline.policy:
                    continue  # run by the precheck
                held = await stage.on_request(call)
                if held is not None:  # no stage before the approval's holds a call; one that would, decides afresh
                    await held.aclose()
                    return pipeline.handle(call, upstream)
        except GatewayError as exc:
            exc.recorded = not isinstance(exc, LedgerUnavailable)  # the stage contract (`Pipeline._handle`)
            raise
        call.approval_id = approval_id
        return pipeline.handle(call, upstream, after + 1)

    def _asker(self, session: GatewaySession) -> Callable[[str, dict[str, Any]], tuple[Message, asyncio.Future[Message]]]:
        """How a stage asks this session's client something mid-call (the answer comes by `client_reply`)."""
        def ask(method: str, params: dict[str, Any]) -> tuple[Message, asyncio.Future[Message]]:
            synth_id = f"lgw-{next(self._synth_ids)}"
            answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            session.waiting[synth_id] = answer
            return {"jsonrpc": "2.0", "id": synth_id, "method": method, "params": params}, answer
        return ask

    async def client_notification(self, pipeline: Pipeline, session: GatewaySession, principal: Principal, message: Message) -> None:
        await self.refuse_unless_notification(pipeline, session.server, principal, session.id, message)
        if message["method"] == CANCELLED:
            await self._client_cancel(pipeline, session, principal, message)
            return
        await pipeline.messages.from_client(session.server, principal, session.id, message)
        if message["method"] == "notifications/initialized":
            return  # the gateway already completed the upstream handshake
        upstream_session = await self._ready(pipeline, session)
        await upstream_session.notify(message, owner=session.id)

    @staticmethod
    async def _client_cancel(pipeline: Pipeline, session: GatewaySession, principal: Principal,
                             message: Message) -> None:
        """`notifications/cancelled` from a handshake client: it may only name a call of its own in flight.

        The gateway numbers requests afresh towards the server, so the client's `requestId` means
        nothing there: a cancellation naming no call of this session's in flight is dropped and its
        record says so (`dropped`); sent on, it cancelled whichever call the upstream knew by that
        number. One naming a call of its own goes upstream with that call's upstream id (when the call
        has reached the upstream), and its record names the call it ends (`cancels`, the call's request
        id). The server should stop and send nothing more; after a grace period the gateway ends the
        call either way, so neither the client's stream nor the upstream call lingers."""
        entry = session.running.get((message.get("params") or {}).get("requestId"))
        if entry is None or entry.done:
            await pipeline.messages.from_client(session.server, principal, session.id, message,
                                                dropped="not_in_flight", forwarded=False)
            return
        upstream_session = session.upstream_session
        if upstream_session is not None and not upstream_session.alive:
            upstream_session = None
        forwarded = upstream_session is not None and upstream_session.outbound(message, session.id) is not None
        await pipeline.messages.from_client(session.server, principal, session.id, message,
                                            cancels=entry.call.request_id if entry.call is not None else None,
                                            forwarded=forwarded)
        asyncio.get_running_loop().call_later(_CANCEL_GRACE, entry.cancel)
        if forwarded and upstream_session is not None:
            await upstream_session.notify(message, owner=session.id)

    async def client_reply(self, pipeline: Pipeline, session: GatewaySession, principal: Principal, message: Message) -> None:
        await pipeline.messages.from_client(session.server, principal, session.id, message)
        fut = session.waiting.pop(message.get("id"), None)
        if fut is not None:
            if not fut.done():
                fut.set_result(message)
            return
        if message.get("id") not in session.relayed:
            raise GatewayError("this response answers no request the server sent", rpc_code=INVALID_PARAMS)
        session.relayed.discard(message.get("id"))
        upstream_session = await self._ready(pipeline, session)
        await upstream_session.reply(message)

    async def session_listen(self, pipeline: Pipeline, session: GatewaySession, principal: Principal) -> AsyncGenerator[Message, None]:
        """A handshake client's GET stream: what the server sends outside calls, authorised and masked."""
        upstream_session = await self._ready(pipeline, session)
        queue = await session.subscribe()
        try:
            while (item := await queue.get()) is not None:
                # progress outside the call's own stream only for a token of one of this client's calls
                tokens = {e.progress_token for e in session.running.values() if e.progress_token is not None} \
                    if item.get("method") == PROGRESS else None
                outbound = await pipeline.messages.unsolicited(session.server, principal, session.id, item, tokens)
                if outbound is None:
                    if "id" in item and "method" in item:
                        await upstream_session.reply(jsonrpc.error(item["id"], -32003, "refused by gateway policy"))
                    continue
                if "method" in item and "id" in item:
                    session.relayed.add(item["id"])
                yield outbound
        finally:
            session.unsubscribe(queue)

    async def listen(self, pipeline: Pipeline, server: str, principal: Principal, message: Message, upstream: Upstream,
                     sessions: SessionRegistry, hello: ClientHello) -> AsyncGenerator[Message, None]:
        """`subscriptions/listen` for a stateless client.

        A 2026-07-28 upstream gets the client's own listen request (through the pipeline); a
        handshake upstream is subscribed with `resources/subscribe` per URI on the principal's
        session, and its list-changed and updated notices are filtered to what the client asked.
        Every notice carries the client's subscription id.
        """
        shared = await self._shared(pipeline, server, principal, upstream, sessions, hello)
        upstream_session = await self._ready(pipeline, shared)
        subscription = {SUBSCRIPTION_ID: message["id"]}
        if upstream_session.era == "modern":
            message = await self._allowed_subscriptions(pipeline, server, principal, message)
            call = Call(server=server, principal=principal, message=message, era="modern",
                        client_capabilities=hello.capabilities)
            async with aclosing(pipeline.handle(call, upstream_session)) as items:
                async for item in items:
                    if "method" in item:
                        params = dict(item.get("params") or {})
                        params["_meta"] = {**(params.get("_meta") or {}), **subscription}
                        item = {**item, "params": params}
                    yield item
            return
        wanted = (message.get("params") or {}).get("notifications") or {}
        capabilities = upstream_session.server_hello.get("capabilities") or {}
        honoured: dict[str, Any] = {}
        kinds: set[str] = set()
        for flag, capability, method in _LIST_CHANGED:
            if wanted.get(flag) and (capabilities.get(capability) or {}).get("listChanged"):
                honoured[flag] = True
                kinds.add(method)
        uris: set[str] = set()
        if wanted.get("resourceSubscriptions") and (capabilities.get("resources") or {}).get("subscribe"):
            for n, uri in enumerate(wanted["resourceSubscriptions"]):
                if not isinstance(uri, str):
                    continue
                request = {"jsonrpc": "2.0", "id": f"{message['id']}/subscribe/{n}", "method": "resources/subscribe",
                           "params": {"uri": uri}}
                call = Call(server=server, principal=principal, message=request)
                try:
                    async for reply in pipeline.handle(call, upstream_session):
                        if "result" in reply:
                            uris.add(call.target or uri)  # the normal form the upstream was subscribed to
                except GatewayError:
                    continue  # not allowed or not possible: simply not honoured
            if uris:
                honoured["resourceSubscriptions"] = sorted(uris)
        queue = await shared.subscribe()
        try:
            yield jsonrpc.notification("notifications/subscriptions/acknowledged",
                                       {"notifications": honoured, "_meta": subscription})
            while (received := await queue.get()) is not None:
                notice = received.get("method")
                if "id" in received or not (notice in kinds or (notice == "notifications/resources/updated"
                                                                and (received.get("params") or {}).get("uri") in uris)):
                    continue
                outbound = await pipeline.messages.unsolicited(server, principal, None, received)
                if outbound is not None:
                    params = dict(outbound.get("params") or {})
                    params["_meta"] = {**(params.get("_meta") or {}), **subscription}
                    yield {**outbound, "params": params}
        finally:
            shared.unsubscribe(queue)

    @staticmethod
    async def _allowed_subscriptions(pipeline: Pipeline, server: str, principal: Principal,
                                     message: Message) -> Message:
        """A listen request whose `resourceSubscriptions` hold only what this caller may subscribe to:
        each URI is judged (in normal form) as the `resources/subscribe` it stands for; the others are
        dropped (and recorded), so a 2026-07-28 upstream is never asked to watch a denied resource."""
        params = message.get("params") or {}
        wanted = params.get("notifications")
        if not isinstance(wanted, dict) or not isinstance(wanted.get("resourceSubscriptions"), list):
            return message
        uris = wanted["resourceSubscriptions"]
        kept: list[str] = []
        for uri in uris:
            if not isinstance(uri, str):
                continue
            probe = Call(server=server, principal=principal, era="modern", message={
                "jsonrpc": "2.0", "id": message.get("id"), "method": "resources/subscribe", "params": {"uri": uri}})
            try:
                await pipeline.precheck(probe)  # normal form, then policy; a refusal is recorded there
            except GatewayError:
                continue
            if probe.decision is not None and probe.decision.effect == "allow" and probe.target is not None:
                kept.append(probe.target)
        return {**message, "params": {**params, "notifications": {**wanted, "resourceSubscriptions": kept}}}

    async def close_session(self, pipeline: Pipeline, sessions: SessionRegistry, session_id: str, principal: Principal) -> None:
        session = await sessions.remove(session_id)
        if session is not None:
            await pipeline.evidence.append("session.closed", {
                "session": session_id, "server": session.server, "principal": principal.summary()})

    @staticmethod
    async def _ready(pipeline: Pipeline, session: GatewaySession, request_id: str | None = None) -> UpstreamSession:
        """The session's upstream session, opened (or reopened) if need be. An opening that fails is
        refused quoting a request id (`request_id`, the call's, else a new one) and logged for the
        operator: no call record names it otherwise (the transport records the refusal, `request.refused`)."""
        try:
            try:
                return await session.upstream_session_ready()
            except UpstreamSessionLost:
                return await session.upstream_session_ready()
        except UpstreamError as exc:
            raise not_opened(pipeline, session, exc, request_id) from None


def upstream_where(upstream: Upstream) -> str:
    """Which upstream an operator should look at, without its secrets: its URL redacted (no userinfo, no
    query), or its command's path (never its arguments or environment)."""
    settings = upstream.settings
    if settings.url:
        return redact_url(settings.url)
    argv = settings.argv
    return f"command {argv[0]!r}" if argv else "no command"


def not_opened(pipeline: Pipeline, session: GatewaySession, exc: UpstreamError,
               request_id: str | None = None) -> UpstreamError:
    """The refusal of a request whose upstream session could not be opened: masked (the upstream's words
    may be quoted in it), quoting a request id, and logged (with the same id) for the operator."""
    if isinstance((exc.data or {}).get("requestId"), str):
        return exc  # refused and logged already
    rid = request_id or new_request_id()
    REQUEST_ID.set(rid)  # the log line names it (app.configure_logging)
    shown = pipeline.masked_error(exc)
    log.warning("upstream %s (%s) could not be opened: %s (request id %s)", session.server,
                upstream_where(session.upstream), shown.message, rid)
    refusal = UpstreamError(f"{shown.message}; quote request id {rid} to support",
                            data={**(exc.data or {}), "requestId": rid}, http_status=exc.http_status,
                            rpc_code=exc.rpc_code, headers=exc.headers)
    refusal.masked = True
    return refusal


class Resending(UpstreamSession):
    """A stateless (2026-07-28) client's call on its principal's shared handshake-era upstream session.

    The client holds no session of its own, so when the upstream restarted and no longer knows the
    gateway's shared one, that is the gateway's to mend: the session is reopened and the call sent once
    more, the client none the wiser. Only when the upstream refused the request for its session id before
    any answer (`UpstreamSessionLost.unprocessed`: Streamable HTTP's 404, the request was not run); never
    after a stream dropped mid-call or a timeout (the server may have run it), and never twice. The
    resend is logged and recorded (`rpc.resent`) before it goes. A handshake-era client's own session is
    not wrapped: the client must initialize again (MCP's rule), as before.

    Holds the call's ids, not the call (the pipeline keeps this session in the call: a cycle otherwise)."""

    def __init__(self, pipeline: Pipeline, shared: GatewaySession, current: UpstreamSession, call: Call) -> None:
        self.pipeline = pipeline
        self.shared = shared
        self.current = current
        self.era = current.era
        self.server_hello = current.server_hello
        self._server = call.server
        self._principal = call.principal
        self._request_id = call.request_id

    @property
    def alive(self) -> bool:
        return self.current.alive

    async def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        async with aclosing(self.current.call(request, owner)) as first:
            try:
                item = await first.__anext__()
            except StopAsyncIteration:
                return
            except UpstreamSessionLost as exc:
                if not exc.unprocessed:
                    raise
                lost = exc
            else:
                yield item
                async for item in first:
                    yield item
                return
        await self._record_resend(request, lost)
        self.current = await self.shared.upstream_session_ready()  # its failure is the call's (as any upstream's)
        async with aclosing(self.current.call(request, owner)) as again:
            async for item in again:
                yield item

    async def _record_resend(self, request: Message, lost: UpstreamSessionLost) -> None:
        shown = self.pipeline.masked_error(lost)
        log.warning("upstream %s no longer knew the shared session of %s's stateless calls (%s): the request was "
                    "not run; %s is sent once more on a new session", self._server, self._principal.key,
                    shown.message, request.get("method"))
        record = Call(server=self._server, principal=self._principal, message=request, era="modern",
                      request_id=self._request_id)
        await self.pipeline.evidence.record("rpc.resent", record, reason="upstream_session_lost", error=shown.message)

    async def notify(self, notification: Message, owner: str | None = None) -> bool:
        return await self.current.notify(notification, owner)

    def outbound(self, notification: Message, owner: str | None = None) -> Message | None:
        return self.current.outbound(notification, owner)

    async def reply(self, response: Message) -> None:
        await self.current.reply(response)

    def listen(self, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        return self.current.listen(last_event_id)

    async def close(self) -> None:
        return None  # the shared session is the registry's to close, not a call's
