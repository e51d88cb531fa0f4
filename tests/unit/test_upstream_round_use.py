"""A 2026-07-28 upstream's round as the gateway seals it (`lgu1.`): the approval it names, and its single use.

The integration tests (`tests/integration/test_upstream_rounds.py`) run both through a real gateway; these
cover what they cannot reach: a store that cannot record the use (refused, fail closed) and a bridge without a
store (this process remembers the use).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ledgergate.errors import GatewayError
from ledgergate.gateway.bridge import Bridge, RequestBinding, UpstreamRound
from ledgergate.gateway.call import Call
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.principal import Principal

ALICE = Principal("https://idp", "alice", "human", frozenset({"staff"}))
KEY = b"k" * 32


class Records:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def record(self, event: str, call: Call, **data: Any) -> None:
        self.events.append((event, data))


class BrokenStore:
    def consume(self, token_id: str, expires: float, now: float) -> bool:
        raise OSError("the database is gone")


def a_round(approval: str | None = None) -> tuple[str, UpstreamRound]:
    held = UpstreamRound({"upstream": 1}, "tag", "bankm", RequestBinding("tools/call", "t", "d"),
                         {"confirm": "elicitation/create"}, time.time() + 600, approval)
    return held.seal(KEY), held


def setup() -> tuple[Pipeline, Records, Call]:
    records = Records()
    pipeline = cast(Pipeline, SimpleNamespace(evidence=records))
    call = Call(server="bankm", principal=ALICE, message={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                          "params": {"name": "t"}}, era="modern")
    return pipeline, records, call


def test_a_round_carries_the_approval_that_released_its_call_and_older_rounds_name_none() -> None:
    token, _ = a_round("apr_0123")
    assert UpstreamRound.open(KEY, token, time.time()).approval == "apr_0123"
    token, _ = a_round()
    assert "\"a\"" not in token and UpstreamRound.open(KEY, token, time.time()).approval is None


async def test_a_round_is_used_once_by_a_bridge_without_a_store() -> None:
    pipeline, records, call = setup()
    token, held = a_round()
    bridge = Bridge()
    await bridge._use_round(pipeline, call, token, held)
    with pytest.raises(GatewayError) as refused:
        await bridge._use_round(pipeline, call, token, held)
    assert refused.value.rpc_code == -32602 and (refused.value.data or {})["reason"] == "request_state_used"
    assert [(e, d["reason"]) for e, d in records.events] == [("rpc.refused", "request_state_used")]


async def test_a_round_whose_use_cannot_be_stored_is_refused() -> None:
    pipeline, records, call = setup()
    token, held = a_round()
    bridge = Bridge()
    bridge.used_rounds = BrokenStore()
    with pytest.raises(GatewayError) as refused:
        await bridge._use_round(pipeline, call, token, held)
    assert refused.value.http_status == 503 and (refused.value.data or {})["reason"] == "request_state_unrecorded"
    assert [(e, d["reason"]) for e, d in records.events] == [("rpc.refused", "request_state_unrecorded")]


def test_a_round_carries_its_number_and_the_first_names_none() -> None:
    held = UpstreamRound({"upstream": 1}, "tag", "bankm", RequestBinding("tools/call", "t", "d"),
                         {"confirm": "elicitation/create"}, time.time() + 600, None, 7)
    assert UpstreamRound.open(KEY, held.seal(KEY), time.time()).number == 7
    token, _ = a_round()
    assert UpstreamRound.open(KEY, token, time.time()).number == 1


async def test_a_stateless_call_gets_as_many_input_rounds_as_a_handshake_clients_and_no_more() -> None:
    """Under one approval each round runs the call again: an upstream that kept asking got a round each time."""
    from ledgergate.gateway.bridge import _MAX_INPUT_ROUNDS

    pipeline, records, call = setup()
    pipeline.request_stages = []  # type: ignore[misc]  # no approval stage: the bridge's own key seals
    asking = {"jsonrpc": "2.0", "id": 1, "result": {"resultType": "input_required", "requestState": "up-1",
                                                    "inputRequests": {"c": {"method": "elicitation/create"}}}}
    bridge = Bridge()
    last = await bridge._sealed_round(pipeline, call, call.message, asking, _MAX_INPUT_ROUNDS)
    assert last["result"]["requestState"].startswith("lgu1.")
    assert records.events == []
    ended = await bridge._sealed_round(pipeline, call, call.message, asking, _MAX_INPUT_ROUNDS + 1)
    assert "result" not in ended and ended["error"]["data"]["reason"] == "too_many_input_rounds", ended
    assert "up-1" not in str(ended), "the upstream's state is not handed out"
    assert [(e, d["reason"]) for e, d in records.events] == [("rpc.refused", "too_many_input_rounds")]
