"""Messages outside the request/answer pair, in both directions: what the server sends during a call
or on its own (notifications; sampling, elicitation and roots requests), and the client's
notifications and replies. Each is authorised, masked for the caller and recorded like a call."""

from __future__ import annotations

import time

from ledgergate.errors import ForbiddenError
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.stages.base import MaskingPort, PolicyPort
from ledgergate.gateway.stages.masking import mask_params
from ledgergate.principal import Principal
from ledgergate.upstream.base import Message, UpstreamSession
from ledgergate.wire import jsonrpc

SERVER_REQUESTS = ("sampling/createMessage", "elicitation/create", "roots/list")


class Messages:
    def __init__(self, policy: PolicyPort, masker: MaskingPort, evidence: Evidence) -> None:
        self.policy = policy
        self.masker = masker
        self.evidence = evidence

    async def during_call(self, call: Call, message: Message, upstream: UpstreamSession) -> Message | None:
        """A notification or server-to-client request arriving during the call; None when refused."""
        method = message["method"]
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

    async def from_client(self, server: str, principal: Principal, session_id: str | None,
                          message: Message) -> None:
        """Record a client notification or a client's answer to a server request before it is forwarded.
        A notification is decided like housekeeping (a deny rule, or an identity no rule lets use the
        server any more, refuses it); a reply answers a server request policy already let through."""
        if "method" in message:
            decision = self.policy.decide(principal, server, message["method"], None, None, time.time())
            if decision.effect == "deny":
                call = Call(server=server, principal=principal, message=message, session_id=session_id)
                await self.evidence.record("policy.denied", call, rule=decision.rule, reason=decision.reason,
                                           direction="client-to-server")
                raise ForbiddenError(f"Forbidden: policy refuses {message['method']} for this identity "
                                     f"(request id {call.request_id})",
                                     data={"rule": decision.rule, "requestId": call.request_id})
        kind = "rpc.notification" if "method" in message else "rpc.reply"
        await self.evidence.append(kind, {"server": server, "session": session_id,
                                          "principal": principal.summary(), "message": message})

    async def unsolicited(self, server: str, principal: Principal, session_id: str | None,
                          message: Message) -> Message | None:
        """A message the server sent outside any call (standalone stream): authorise, mask, record."""
        method = message.get("method", "")
        decision = self.policy.decide(principal, server, method, None, None, time.time())
        if "id" in message and method in SERVER_REQUESTS and decision.effect != "allow":
            return None
        masked, counts = mask_params(self.masker, message, decision.mask)
        await self.evidence.append("rpc.server_message", {"server": server, "session": session_id,
                                                          "principal": principal.summary(), "message_method": method,
                                                          "message": message, "masked": counts})
        return masked
