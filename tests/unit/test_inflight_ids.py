"""Client request ids are the client's own: the gateway numbers requests afresh towards the server, so a
`notifications/cancelled` goes upstream only with the upstream id of a call *that client* has in flight
there, and is dropped otherwise. Two clients on one upstream session (a stdio child or a legacy SSE
stream is one pipe for every call) may use the same ids; neither can cancel the other's call.

And a message from a server that carries a `method` beside a `result` is neither a request nor an
answer: it is dropped, not relayed as a server request (the client never asked that of it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ledgergate.errors import GatewayError
from ledgergate.upstream.base import InflightIds, drop_cancel
from ledgergate.upstream.demux import Demux
from ledgergate.wire import jsonrpc


def cancel(ref: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": ref, "reason": "r"}}


def tool_call(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "slow"}}


async def test_one_client_cannot_cancel_another_clients_call_on_a_shared_upstream_session() -> None:
    sent: list[dict[str, Any]] = []

    async def write(message: dict[str, Any]) -> None:
        sent.append(message)

    demux = Demux(write)
    first = demux.call(tool_call("A"), owner="session-1")
    second = demux.call(tool_call("A"), owner="session-2")
    pending = [asyncio.ensure_future(first.__anext__()), asyncio.ensure_future(second.__anext__())]
    await asyncio.sleep(0.01)
    upstream_ids = [m["id"] for m in sent]
    assert len(set(upstream_ids)) == 2
    sent.clear()

    assert await demux.notify(cancel("A"), owner="session-2") is True
    assert sent == [{**cancel("A"), "params": {"requestId": upstream_ids[1], "reason": "r"}}]
    sent.clear()
    # a client with nothing in flight, the gateway's own numbering, look-alikes of an id: nothing is sent
    for owner, ref in (("session-3", "A"), (None, "A"), ("session-1", upstream_ids[0]), ("session-1", "a"),
                       ("session-1", True), ("session-1", 1.0)):
        assert await demux.notify(cancel(ref), owner=owner) is False, (owner, ref)
    assert sent == []

    for upstream_id in upstream_ids:
        demux.route({"jsonrpc": "2.0", "id": upstream_id, "result": {}})
    assert [(await asyncio.wait_for(p, 5))["id"] for p in pending] == ["A", "A"]
    await first.aclose()
    await second.aclose()
    assert await demux.notify(cancel("A"), owner="session-1") is False, "a call that ended names nothing"
    assert sent == []


def test_the_first_call_under_an_id_keeps_it_until_it_ends() -> None:
    ids = InflightIds()
    ids.add("s", "A", 1)
    ids.add("s", "A", 2)  # a second request under an id still in flight
    assert ids.translate_cancel(cancel("A"), "s") == {**cancel("A"), "params": {"requestId": 1, "reason": "r"}}
    ids.discard("s", "A", 2)  # the second ending leaves the first's entry alone
    assert ids.translate_cancel(cancel("A"), "s") is not None
    ids.discard("s", "A", 1)
    assert ids.translate_cancel(cancel("A"), "s") is None


def test_a_session_with_no_call_in_flight_sends_no_cancellation_but_other_notifications() -> None:
    """An HTTP upstream session keeps no id map while idle; a cancellation then went out as it came."""
    assert drop_cancel(cancel(1), "s", None) is None
    note = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    assert drop_cancel(note, "s", None) == note


async def test_a_message_with_a_method_and_a_result_is_dropped_not_relayed() -> None:
    sent: list[dict[str, Any]] = []

    async def write(message: dict[str, Any]) -> None:
        sent.append(message)

    demux = Demux(write)
    call = demux.call(tool_call(7), owner="s")
    first = asyncio.ensure_future(call.__anext__())
    await asyncio.sleep(0.01)
    upstream_id = sent[0]["id"]
    demux.route({"jsonrpc": "2.0", "id": upstream_id, "method": "sampling/createMessage", "result": {}})
    demux.route({"jsonrpc": "2.0", "id": {"x": 1}, "method": "roots/list", "params": {}})  # an id that is none
    demux.route({"jsonrpc": "2.0", "method": "notifications/message", "params": "text"})
    demux.route({"jsonrpc": "2.0", "id": upstream_id, "result": {"ok": True}})
    assert await asyncio.wait_for(first, 5) == {"jsonrpc": "2.0", "id": 7, "result": {"ok": True}}
    await call.aclose()


@pytest.mark.parametrize("message", [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "result": {}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "error": {"code": 1, "message": "x"}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "result": {}},
])
def test_a_client_message_with_a_method_and_a_result_is_invalid(message: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as refused:
        jsonrpc.kind_of(message)
    assert refused.value.rpc_code == -32600 and "result" in refused.value.message


def test_relay_problem_names_what_is_wrong() -> None:
    assert jsonrpc.relay_problem({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}) is None
    assert jsonrpc.relay_problem({"jsonrpc": "2.0", "id": "x", "method": "roots/list"}) is None
    assert "result" in (jsonrpc.relay_problem({"method": "roots/list", "id": 1, "result": {}}) or "")
    assert "id" in (jsonrpc.relay_problem({"method": "roots/list", "id": None}) or "")
    assert "params" in (jsonrpc.relay_problem({"method": "roots/list", "id": 1, "params": [1]}) or "")
