"""Probe findings F4, F5 and F7 through a real gateway (`ledgergate serve`) with the demo bank over stdio,
real OIDC tokens and raw JSON-RPC in the handshake era (so a name travels exactly as written):

- F4: `export_customerｓ`, `export_customers` + U+0301 and `export_customerѕ` (Cyrillic dze) passed carol's
  `export_*` allow, missed the `export_customers` deny and were forwarded; now refused and recorded;
- F5: a request named `notifications/tools/call` was housekeeping and forwarded; a completion whose
  `ref.type` is neither `ref/prompt` nor `ref/resource` was forwarded under a blanket allow; a completion's
  approval released the completion with another `context`;
- F7: the caller's own `_meta` was in no record, and an approval released a call with other `_meta`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.oidc import Provider

pytestmark = [pytest.mark.timeout(180)]

POLICIES: list[dict[str, Any]] = [
    {"name": "contractors-read", "match": {"groups": ["contractors"], "servers": ["bank"],
                                           "tools": ["export_*", "lookup_customer"]}, "effect": "allow"},
    {"name": "no-bulk-export-for-contractors", "match": {"groups": ["contractors"], "tools": ["export_customers"]},
     "effect": "deny"},
    {"name": "auditors", "match": {"groups": ["auditors"], "servers": ["bank"]}, "effect": "allow"},
    {"name": "tellers", "match": {"groups": ["tellers"], "servers": ["bank"]}, "effect": "allow"},
    {"name": "teller-completions-need-approval", "match": {"groups": ["tellers"], "servers": ["bank"],
                                                           "methods": ["completion/complete"]},
     "effect": "approve", "approvers": {"groups": ["approvers"]}},
    {"name": "teller-lookups-need-approval", "match": {"groups": ["tellers"], "servers": ["bank"],
                                                       "tools": ["lookup_customer"]},
     "effect": "approve", "approvers": {"groups": ["approvers"]}},
]
APPROVALS = {"hold": "1s", "timeout": "10m", "grant_window": "2m"}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LOOKALIKES = ["export_customerｓ", "export_customers\u0301", "export_customer\u0455"]
APPROVAL_REQUIRED = -32010


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, idp: Provider) -> Iterator[gw.RunningGateway]:
    gateway = gw.start(tmp_path_factory.mktemp("names"), idp.issuer, {"bank": {"command": gw.BANK_ARGV}}, POLICIES,
                       {"approvals": APPROVALS})
    yield gateway
    gateway.stop()


class Client:
    """One principal's handshake session with the bank, as raw JSON-RPC."""

    def __init__(self, gateway: gw.RunningGateway, token: str) -> None:
        self.gateway = gateway
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        init = self.http.post(gateway.url("bank"), headers=HEADERS, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200, init.text
        self.headers = {**HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"],
                        "MCP-Protocol-Version": "2025-06-18"}
        self.ids = 0

    def post(self, message: dict[str, Any]) -> httpx.Response:
        return self.http.post(self.gateway.url("bank"), headers=self.headers, json=message)

    def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        r = self.post({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params})
        assert r.status_code == 200, (r.status_code, r.text)
        if r.headers["content-type"].startswith("text/event-stream"):
            data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
            return json.loads(data[-1])
        return r.json()

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def people(running: gw.RunningGateway, idp: Provider) -> Iterator[dict[str, Client]]:
    clients = {"carol": Client(running, idp.token("carol", ["contractors"])),
               "erin": Client(running, idp.token("erin", ["auditors"])),
               "dave": Client(running, idp.token("dave", ["tellers"]))}
    yield clients
    for client in clients.values():
        client.close()


def records_of(gateway: gw.RunningGateway, request_id: str) -> list[dict[str, Any]]:
    return [r for r in gateway.records() if r.get("request_id") == request_id]


def approve(gateway: gw.RunningGateway, idp: Provider, approval_id: str) -> None:
    r = httpx.post(f"{gateway.base}/api/v1/approvals/{approval_id}/approve", json={"reason": "checked"},
                   headers={"Authorization": "Bearer " + idp.token("bob", ["approvers"])}, timeout=30)
    assert r.status_code == 200, r.text


# ── F4 ──────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("name", LOOKALIKES, ids=["fullwidth-s", "combining-acute", "cyrillic-dze"])
def test_a_lookalike_tool_name_is_refused_and_recorded(running: gw.RunningGateway, people: dict[str, Client],
                                                       name: str) -> None:
    answer = people["carol"].rpc("tools/call", {"name": name, "arguments": {}})
    assert "error" in answer, f"{name!r} was forwarded: {answer}"
    assert answer["error"]["code"] == -32602 and answer["error"]["data"]["reason"] == "ambiguous_name"
    [record] = records_of(running, answer["error"]["data"]["requestId"])
    assert record["event"] == "rpc.refused" and record["reason"] == "ambiguous_name" and record["detail"]
    # the plain name meets its deny rule, as before
    denied = people["carol"].rpc("tools/call", {"name": "export_customers", "arguments": {}})
    assert denied["error"]["code"] == -32003 and "no-bulk-export-for-contractors" in denied["error"]["message"]


# ── F5 ──────────────────────────────────────────────────────────────────────────────────────────────
def test_a_request_named_as_a_notification_is_denied_and_a_notification_still_passes(
        running: gw.RunningGateway, people: dict[str, Client]) -> None:
    carol = people["carol"]
    answer = carol.rpc("notifications/tools/call", {"name": "export_customers", "arguments": {}})
    assert "error" in answer and answer["error"]["code"] == -32003, answer
    [record] = records_of(running, answer["error"]["data"]["requestId"])
    assert record["event"] == "policy.denied" and record["method"] == "notifications/tools/call"
    assert record["rule"] is None, "default deny: no rule allows it"
    sent = carol.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert sent.status_code == 202, sent.text


@pytest.mark.parametrize("ref", [{"name": "fraud_review"}, {"type": "ref/prompts", "name": "fraud_review"},
                                 {"type": "ref/Prompt", "name": "fraud_review"}],
                         ids=["type-missing", "type-plural", "type-case"])
def test_a_completion_whose_ref_type_is_unknown_is_refused_and_recorded(
        running: gw.RunningGateway, people: dict[str, Client], ref: dict[str, Any]) -> None:
    answer = people["erin"].rpc("completion/complete", {"ref": ref, "argument": {"name": "customer_id",
                                                                                "value": "C-1"}})
    assert "error" in answer and answer["error"]["code"] == -32602, answer
    assert answer["error"]["data"]["reason"] == "unknown_completion_ref" and "ref/prompt" in answer["error"]["message"]
    [record] = records_of(running, answer["error"]["data"]["requestId"])
    assert record["event"] == "rpc.refused" and record["reason"] == "unknown_completion_ref"


def held(client: Client, method: str, params: dict[str, Any]) -> str:
    answer = client.rpc(method, params)
    assert "error" in answer and answer["error"]["code"] == APPROVAL_REQUIRED, answer
    return str(answer["error"]["data"]["approvalId"])


def released(gateway: gw.RunningGateway, client: Client, method: str, params: dict[str, Any],
             approval_id: str) -> None:
    answer = client.rpc(method, params)
    assert not ("error" in answer and answer["error"]["code"] == APPROVAL_REQUIRED), answer
    ran = [r for r in gateway.records() if r["event"] == "rpc.request" and r.get("approval") == approval_id]
    assert len(ran) == 1, "the approved call ran, once"


def test_a_completions_approval_does_not_release_another_context(running: gw.RunningGateway, idp: Provider,
                                                                  people: dict[str, Client]) -> None:
    def completion(account: str) -> dict[str, Any]:
        return {"ref": {"type": "ref/prompt", "name": "fraud_review"},
                "argument": {"name": "customer_id", "value": "C-1"}, "context": {"arguments": {"account": account}}}

    dave = people["dave"]
    approval_id = held(dave, "completion/complete", completion("A-1001"))
    approve(running, idp, approval_id)
    other = held(dave, "completion/complete", completion("A-2002"))
    assert other != approval_id, "another context is another call: it needs its own approval"
    released(running, dave, "completion/complete", completion("A-1001"), approval_id)


def test_an_approval_does_not_release_a_call_with_other_meta(running: gw.RunningGateway, idp: Provider,
                                                             people: dict[str, Client]) -> None:
    def lookup(token: str, tenant: str) -> dict[str, Any]:
        return {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"},
                "_meta": {"progressToken": token, "x-tenant": tenant}}

    dave = people["dave"]
    approval_id = held(dave, "tools/call", lookup("p-1", "north"))
    approve(running, idp, approval_id)
    other = held(dave, "tools/call", lookup("p-2", "south"))
    assert other != approval_id, "other _meta reaches tool code: it needs its own approval"
    # a progress token is the protocol's, set per attempt: the same call
    released(running, dave, "tools/call", lookup("p-3", "north"), approval_id)
    [request] = [r for r in running.records() if r["event"] == "rpc.request" and r.get("approval") == approval_id]
    assert request["meta"] == {"x-tenant": "north"}


# ── F7 ──────────────────────────────────────────────────────────────────────────────────────────────
def test_the_callers_own_meta_is_recorded_masked(running: gw.RunningGateway, people: dict[str, Client]) -> None:
    erin = people["erin"]
    answer = erin.rpc("tools/call", {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"},
                                     "_meta": {"progressToken": "p-9", "x-instruction": "MARKER-7f3 ssn 078-05-1120"}})
    assert "result" in answer, answer
    plain = erin.rpc("tools/call", {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"},
                                    "_meta": {"progressToken": "p-10"}})
    assert "result" in plain, plain
    requests = [r for r in running.records() if r["event"] == "rpc.request" and r["principal"]["subject"] == "erin"
                and r.get("target") == "lookup_customer"]
    with_meta, typical = requests[-2:]
    assert "MARKER-7f3" in json.dumps(with_meta["meta"]) and "078-05-1120" not in json.dumps(with_meta)
    assert set(with_meta["meta"]) == {"x-instruction"}, "the protocol's progress token is no content of the call"
    assert "meta" not in typical, "a typical record does not grow"
