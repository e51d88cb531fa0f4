"""target: the first request stage. Puts the call's resource URIs in the one normal form that
policy decides on, the ledger records and the upstream receives (`policy/uri.py`), or refuses
a URI that could be read two ways — before any decision is made on the raw string. Likewise a
tool or prompt name two servers could read differently (invisible characters, a form NFKC folds,
combining marks, Latin mixed with look-alike scripts: `policy/rules.py` `name_problem`), a completion
whose `ref` names neither a prompt nor a resource, and `arguments` that are not an object (which every
decision read as no arguments, while the upstream got them as sent)."""

from __future__ import annotations

from ledgergate.errors import INVALID_PARAMS, GatewayError
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.policy.rules import (
    COMPLETION_METHOD,
    COMPLETION_PROMPT_PREFIX,
    TARGET_KIND,
    name_problem,
    request_target,
)
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
        kind = TARGET_KIND.get(call.method)
        if kind is not None:
            key = "uri" if kind == "resource" else "name"
            named = call.params.get(key)
            if not isinstance(named, str):
                # no target, so no rule naming tools, prompts or resources could match it; a blanket allow
                # forwarded it, and a server that coerces the value runs what a deny rule names
                await self.evidence.record("rpc.refused", call, reason="target_not_a_string",
                                           detail=type(named).__name__)
                raise AmbiguousTarget(f"Invalid params: {call.method} needs params.{key}, a string "
                                      f"(request id {call.request_id})",
                                      data={"reason": "target_not_a_string", "requestId": call.request_id})
        if call.method == COMPLETION_METHOD and call.target is None:
            # a completion names the prompt or resource it completes for; without one of the two kinds MCP
            # defines, no `prompts`/`resources` rule could match it, and a blanket allow forwarded it
            wrong = _ref_problem(call.params.get("ref"))
            await self.evidence.record("rpc.refused", call, reason="unknown_completion_ref", detail=wrong)
            raise AmbiguousTarget(f"Invalid params: {wrong}; completion/complete needs params.ref "
                                  f"{{\"type\": \"ref/prompt\", \"name\": …}} or "
                                  f"{{\"type\": \"ref/resource\", \"uri\": …}} (request id {call.request_id})",
                                  data={"reason": "unknown_completion_ref", "requestId": call.request_id})
        args = call.params.get("arguments") if call.method in _ARGUMENT_OBJECTS else None
        if args is not None and not isinstance(args, dict):
            # policy's `args.*`, the ledger's digest and an approval's binding read an object; anything
            # else was read as no arguments at all, while the upstream received it as sent
            await self.evidence.record("rpc.refused", call, reason="arguments_not_an_object",
                                       detail=type(args).__name__)
            raise AmbiguousTarget(f"Invalid params: arguments must be a JSON object, not {_json_kind(args)} "
                                  f"(request id {call.request_id})",
                                  data={"reason": "arguments_not_an_object", "requestId": call.request_id})
        name = _named(call.method, call.target)
        if name is not None and (problem := name_problem(name)) is not None:
            await self.evidence.record("rpc.refused", call, reason="ambiguous_name", detail=problem)
            raise AmbiguousTarget(f"Invalid params: {problem}; send the name exactly as the server lists it "
                                  f"(request id {call.request_id})",
                                  data={"reason": "ambiguous_name", "requestId": call.request_id})


#: methods whose `arguments` are an object (MCP schema: tools/call and prompts/get; null or absent is none)
_ARGUMENT_OBJECTS = ("tools/call", "prompts/get")


def _json_kind(value: object) -> str:
    return {str: "a string", list: "an array", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), "a non-object value")


#: a completion's `ref` kinds (MCP schema: PromptReference, ResourceTemplateReference) and the field naming each
_COMPLETION_REFS = {"ref/prompt": "name", "ref/resource": "uri"}


def _ref_problem(ref: object) -> str:
    """What is wrong with a completion's `ref`, which gave no target."""
    if not isinstance(ref, dict):
        return "params.ref is missing or not an object"
    kind = ref.get("type")
    field = _COMPLETION_REFS.get(kind) if isinstance(kind, str) else None
    if field is None:
        return "params.ref.type is missing or not 'ref/prompt' or 'ref/resource'"
    return f"params.ref.{field} is missing or not a string"


def _named(method: str, target: str | None) -> str | None:
    """The tool or prompt name a call's target is, if it is one (resource URIs have their own normal form)."""
    if target is None:
        return None
    kind = TARGET_KIND.get(method)
    if kind in ("tool", "prompt"):
        return target
    if method == COMPLETION_METHOD and target.startswith(COMPLETION_PROMPT_PREFIX):
        return target[len(COMPLETION_PROMPT_PREFIX):]
    return None
