"""Messages outside the request/answer pair, in both directions: what the server sends during a call
or on its own (notifications; sampling, elicitation and roots requests), and the client's
notifications and replies. Each is authorised, masked for the caller and recorded like a call."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from ledgergate.errors import ForbiddenError
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.base import MaskingPort, PolicyPort
from ledgergate.gateway.stages.masking import mask_definitions, mask_params
from ledgergate.principal import Principal
from ledgergate.upstream.base import Message, UpstreamSession
from ledgergate.wire import jsonrpc

SERVER_REQUESTS = ("sampling/createMessage", "elicitation/create", "roots/list")
PROGRESS = "notifications/progress"
#: why a server's progress notification was recorded but not relayed
NOT_THIS_CALLS_TOKEN = "progress_token_not_in_call"
NO_CALLS_TOKEN = "progress_token_of_no_call_in_flight"


def progress_token(message: Message) -> Any:
    """The `progressToken` a message carries (a request's in `params._meta`, a progress notification's in
    `params`); None when it has none. A bool is no token (`True == 1` in Python)."""
    params = message.get("params")
    if not isinstance(params, dict):
        return None
    if message.get("method") == PROGRESS:
        token = params.get("progressToken")
    else:
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
    return None if isinstance(token, bool) or not isinstance(token, str | int | float) else token


class Messages:
    def __init__(self, policy: PolicyPort, masker: MaskingPort, evidence: Evidence) -> None:
        self.policy = policy
        self.masker = masker
        self.evidence = evidence

    async def during_call(self, call: Call, message: Message, upstream: UpstreamSession) -> Message | None:
        """A notification or server-to-client request arriving during the call; None when refused."""
        method = message["method"]
        if method == PROGRESS:
            token = progress_token(message)
            if token is None or token != progress_token(call.message):
                # MCP (Progress): a progress notification names a token of an active request. One naming
                # another token (or none) is about nothing this client asked: recorded, not relayed.
                await self.evidence.record("rpc.server_message", call, method=call.method, message_method=method,
                                           message=message, dropped=NOT_THIS_CALLS_TOKEN)
                return None
        if "id" in message and method in SERVER_REQUESTS:
            verdict = self.policy.decide(call.principal, call.server, method, None, None, time.time())
            if verdict.effect != "allow":
                await self.evidence.record("policy.denied", call, method=method, direction="server-to-client",
                                           rule=verdict.rule)
                await upstream.reply(jsonrpc.error(message["id"], -32003,
                                                   f"the gateway's policy refuses {method} for this caller"))
                return None
        masked, counts = mask_params(self.masker, message, call.mask_profile)
        await self.evidence.record("rpc.server_message", call, method=call.method, message_method=method,
                                   message=message, masked=counts)  # the record is masked whole
        return masked

    def hello(self, server: str, principal: Principal, method: str, result: dict[str, Any]) -> dict[str, Any]:
        """What a server says of itself (`initialize`, `server/discover`: its name, its instructions
        for the model), masked with the caller's profile for that server as a definition is
        (`stages/masking.py`): it reached the caller untouched, though `instructions` goes straight
        into a model's context."""
        decision = self.policy.decide(principal, server, method, None, None, time.time())
        if decision.mask is None:
            return result
        masked, _ = mask_definitions(self.masker, result, decision.mask)
        return dict(masked)

    async def from_client(self, server: str, principal: Principal, session_id: str | None,
                          message: Message, **fields: Any) -> None:
        """Record a client notification or a client's answer to a server request before it is forwarded.
        A notification is decided like housekeeping (a deny rule, or an identity no rule lets use the
        server any more, refuses it); a reply answers a server request policy already let through.
        `fields` go into the record (what became of a cancellation: the call it ends, or `dropped`)."""
        if "method" in message:
            decision = self.policy.decide(principal, server, message["method"], None, None, time.time(),
                                          notification="id" not in message)
            if decision.effect == "deny":
                call = Call(server=server, principal=principal, message=message, session_id=session_id)
                await self.evidence.record("policy.denied", call, rule=decision.rule, reason=decision.reason,
                                           direction="client-to-server")
                raise ForbiddenError(f"Forbidden: policy refuses {message['method']} for this identity "
                                     f"(request id {call.request_id})",
                                     data={"rule": decision.rule, "requestId": call.request_id})
        kind = "rpc.notification" if "method" in message else "rpc.reply"
        await self.evidence.append(kind, {"server": server, "session": session_id,
                                          "principal": principal.summary(), "message": message, **fields})

    async def unsolicited(self, server: str, principal: Principal, session_id: str | None,
                          message: Message, tokens: Collection[Any] | None = None) -> Message | None:
        """A message the server sent outside any call (standalone stream): authorise, mask, record.

        `tokens`: the progress tokens of the client's calls in flight, when the client has calls; a
        progress notification naming none of them is recorded and not relayed (None: the caller
        filters progress itself)."""
        method = message.get("method", "")
        if tokens is not None and method == PROGRESS:
            token = progress_token(message)
            if token is None or token not in tokens:
                await self.evidence.append("rpc.server_message", {
                    "server": server, "session": session_id, "principal": principal.summary(),
                    "message_method": method, "message": message, "dropped": NO_CALLS_TOKEN})
                return None
        # the server's `notifications/…`, whatever its shape, is masked as housekeeping, as always: only a
        # client's request so named is judged as a request (a denied decision names no mask)
        decision = self.policy.decide(principal, server, method, None, None, time.time(), notification=True)
        if "id" in message and method in SERVER_REQUESTS and decision.effect != "allow":
            return None
        if decision.effect == "deny":
            # the caller may no longer use this server at all (a reload took its grant while its stream stayed
            # open): a denied decision names no mask, so relaying would send the message in the clear
            await self.evidence.append("rpc.server_message", {
                "server": server, "session": session_id, "principal": principal.summary(),
                "message_method": method, "message": message, "dropped": "policy_denied"})
            return None
        masked, counts = mask_params(self.masker, message, decision.mask)
        await self.evidence.append("rpc.server_message", {"server": server, "session": session_id,
                                                          "principal": principal.summary(), "message_method": method,
                                                          "message": message, "masked": counts})
        return masked


class InputRequests:
    """input requests (response side): a 2026-07-28 server asks its caller for input inside a result
    (`resultType: input_required`, `inputRequests`) — sampling, elicitation, roots: what a handshake-era
    server sends as requests of its own, which `Messages.during_call` lets through only when a policy
    rule allows that method for the caller. These went to the client with no such check; now the same
    decision applies, and one request the caller may not receive ends the call with a recorded refusal
    (a result cannot be half forwarded). Their params are masked with the rest of the result."""

    def __init__(self, policy: PolicyPort, evidence: Evidence) -> None:
        self.policy = policy
        self.evidence = evidence

    async def on_response(self, call: Call, response: Message) -> Message:
        result = response.get("result")
        if not isinstance(result, dict) or result.get("resultType") != "input_required":
            return response
        requests = result.get("inputRequests")
        refused: str | None = None
        rule: str | None = None
        if not isinstance(requests, dict) or not requests:
            refused = "an input request of no known shape"
        else:
            for request in requests.values():
                method = request.get("method") if isinstance(request, dict) else None
                if not isinstance(method, str) or method not in SERVER_REQUESTS:
                    refused = "an input request of no known method"
                    break
                verdict = self.policy.decide(call.principal, call.server, method, None, None, time.time())
                if verdict.effect != "allow":
                    refused, rule = method, verdict.rule
                    break
        if refused is None:
            return response
        await self.evidence.record("policy.denied", call, method=refused if refused in SERVER_REQUESTS else None,
                                   direction="server-to-client", rule=rule)
        message = (f"the server asked this caller for {refused}, which the gateway's policy refuses for this "
                   f"caller; request id {call.request_id}")
        await self.evidence.record("rpc.response", call, error=message, latency_ms=call.latency_ms())
        call.answered = True
        return jsonrpc.error(response.get("id"), -32003, message)
