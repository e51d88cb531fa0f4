"""A 2026-07-28 client's input-required retry resumes the call it paused only when it repeats that
request: same method, same tool (or prompt, or resource), same arguments.

p07: a stateless client over a handshake upstream (server-everything over HTTP; the demo bank server
over stdio) gets `input_required` with a gateway `requestState`. A retry presenting that state but
naming another tool (`get-sum`, one the policy may deny), or other arguments, got the paused call's
result with a 200, and no record said what the retry asked. Now it is refused with -32602 "Invalid or
expired requestState" (as the SDK's own sealed state is) and recorded (`rpc.refused`,
`request_state_mismatch`, with the tool and arguments it named); the state is not consumed, so the
right retry still finishes the call.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import gateway as gw

pytestmark = pytest.mark.node

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}


def request(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": META}}


def headers(method: str, name: str | None) -> dict[str, str]:
    out = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        out["Mcp-Name"] = name
    return out


CASES = {
    # server: (the paused call, its answer, the retries that are not that call: (what differs, method, params))
    "everything": ({"name": "trigger-elicitation-request", "arguments": {}},
                   {"action": "accept", "content": {"color": "red", "number": 3, "pets": "cats"}},
                   [("name", "tools/call", {"name": "get-sum", "arguments": {"a": 1, "b": 2}}),
                    ("arguments", "tools/call", {"name": "trigger-elicitation-request", "arguments": {"x": 1}}),
                    ("method", "prompts/get", {"name": "simple-prompt"})]),
    "bank": ({"name": "confirm_large_action", "arguments": {"action": "wire transfer", "amount": 50000}},
             {"action": "accept", "content": {"confirm": True, "reason": "checked by phone"}},
             [("arguments", "tools/call", {"name": "confirm_large_action",
                                          "arguments": {"action": "wire transfer", "amount": 5_000_000}}),
              ("name", "tools/call", {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"}})]),
}


@pytest.mark.parametrize("server", list(CASES))
async def test_a_retry_that_does_not_repeat_the_paused_request_is_refused_and_recorded(
        gateway: gw.RunningGateway, token: str, server: str) -> None:
    paused, answer, others = CASES[server]
    url = gateway.url(server)
    async with gateway.http(token) as http:
        first = await http.post(url, headers=headers("tools/call", paused["name"]),
                                json=request(1, "tools/call", paused))
        result = first.json()["result"]
        assert result["resultType"] == "input_required", first.text
        state = result["requestState"]
        responses = {next(iter(result["inputRequests"])): answer}
        refused_ids = []
        for n, (differs, method, params) in enumerate(others, start=2):
            retry = {**params, "requestState": state, "inputResponses": responses}
            r = await http.post(url, headers=headers(method, params.get("name")), json=request(n, method, retry))
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == -32602 and "Invalid or expired requestState" in error["message"], error
            assert error["data"]["differs"] == differs and "result" not in r.json()
            refused_ids.append((error["data"]["requestId"], method, params.get("name")))
        done = await http.post(url, headers=headers("tools/call", paused["name"]),
                               json=request(9, "tools/call", {**paused, "requestState": state,
                                                              "inputResponses": responses}))
        assert done.status_code == 200 and done.json()["result"]["resultType"] == "complete", done.text
        assert not done.json()["result"].get("isError"), done.text
    every = gateway.records()
    for request_id, method, name in refused_ids:
        [refusal] = [x for x in every if x.get("request_id") == request_id]
        assert refusal["event"] == "rpc.refused" and refusal["reason"] == "request_state_mismatch", refusal
        assert refusal["method"] == method and refusal.get("target") == name, refusal
