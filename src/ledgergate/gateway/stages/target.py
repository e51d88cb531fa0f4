"""target: the first request stage. Puts the call's resource URIs in the one normal form that
policy decides on, the ledger records and the upstream receives (`policy/uri.py`), or refuses
a URI that could be read two ways — before any decision is made on the raw string."""

from __future__ import annotations

from ledgergate.errors import INVALID_PARAMS, GatewayError
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.policy.rules import request_target
from ledgergate.policy.uri import UriRefused, normalize_params


class AmbiguousTarget(GatewayError):
    """A JSON-RPC error like a policy refusal (HTTP 200), so SDK clients show its reason."""

    http_status = 200
    rpc_code = INVALID_PARAMS


class TargetCheck:
    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        try:
            params = normalize_params(call.method, call.params)
        except UriRefused as exc:
            await self.evidence.record("rpc.refused", call, reason="ambiguous_uri", detail=exc.reason)
            raise AmbiguousTarget(f"Invalid params: {exc.reason}; send the resource URI in its plain form "
                                  f"(request id {call.request_id})",
                                  data={"reason": "ambiguous_uri", "requestId": call.request_id}) from None
        if params is not None:
            call.message = {**call.message, "params": params}
            call.target = request_target(call.method, params)
