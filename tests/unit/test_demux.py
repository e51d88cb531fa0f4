"""The demultiplexer of one inbound stream (stdio, legacy SSE) takes whatever JSON an upstream or a
client puts in an id or a progress token without failing: a value that cannot name a call is simply
nobody's, and a call it could not register leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from ledgergate.upstream.base import UpstreamSessionLost, UpstreamTimeout
from ledgergate.upstream.demux import Demux


async def test_ids_and_tokens_of_any_json_type_are_routed_or_dropped_never_raised() -> None:
    sent: list[dict[str, Any]] = []

    async def write(message: dict[str, Any]) -> None:
        sent.append(message)

    demux = Demux(write)
    call = demux.exchange({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "x", "_meta": {"progressToken": {"not": "hashable"}}}}, 1)
    first = asyncio.ensure_future(call.__anext__())
    await asyncio.sleep(0)
    for odd in ({"a": 1}, [1], None, True, 1.5):
        demux.route({"jsonrpc": "2.0", "id": odd, "result": {}})  # a response nobody asked for
        demux.route({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": odd}})
    demux.route({"jsonrpc": "2.0", "method": "notifications/progress", "params": ["not", "an", "object"]})
    demux.route({"jsonrpc": "2.0", "id": 1, "result": {"ok": True}})
    answer = await asyncio.wait_for(first, 5)
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}
    await call.aclose()
    assert sent and demux._calls == {} and demux._order == [] and len(demux._progress) == 0


# ── progress tokens are the client's own: rewritten towards the server, restored on the way back ──
PROGRESS = "notifications/progress"


class Wire:
    """The server's side of one shared inbound stream: what the gateway wrote, and a way to answer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.demux = Demux(self.write, timeout=None, who="upstream 'shared'")

    async def write(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def request(self, upstream_id: Any) -> dict[str, Any]:
        [found] = [m for m in self.sent if m.get("id") == upstream_id and "method" in m]
        return found

    def token_of(self, upstream_id: Any) -> Any:
        return self.request(upstream_id)["params"]["_meta"]["progressToken"]

    def progress(self, token: Any, step: int) -> None:
        self.demux.route({"jsonrpc": "2.0", "method": PROGRESS,
                          "params": {"progressToken": token, "progress": step, "total": 9}})

    def answer(self, upstream_id: Any) -> None:
        self.demux.route({"jsonrpc": "2.0", "id": upstream_id, "result": {"content": []}})


async def stop(waiting: asyncio.Future[Any], listener: AsyncGenerator[Any, None]) -> None:
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await listener.aclose()


def call_with(request_id: Any, token: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": token, "other": "kept"}}}


async def started(wire: Wire, *calls: Any) -> list[asyncio.Future[Any]]:
    """Each call's first message as a future, once every request is on the wire."""
    pending = [asyncio.ensure_future(c.__anext__()) for c in calls]
    for _ in range(50):
        await asyncio.sleep(0)
        if len([m for m in wire.sent if "method" in m]) >= len(calls):
            break
    return pending


async def test_two_calls_with_the_same_token_each_get_only_their_own_progress_under_their_own_token() -> None:
    """Two clients of one shared session pick the same token (`"p"`): the server is given two tokens of
    the gateway's, neither the client's, and each call sees only the progress for its own, with `"p"`.
    Before, the second call took the token over (both calls' progress went to it) and the first to end
    left the other's progress to nobody."""
    wire = Wire()
    requests = [call_with("A", "p"), call_with("A", "p")]
    first, second = (wire.demux.call(r, owner=o) for r, o in zip(requests, ("session-1", "session-2")))
    a, b = await started(wire, first, second)
    upstream = [m["id"] for m in wire.sent]
    tokens = [wire.token_of(u) for u in upstream]
    assert len(set(tokens)) == 2 and "p" not in tokens, tokens
    assert all(isinstance(t, str) for t in tokens)
    assert wire.request(upstream[0])["params"]["_meta"]["other"] == "kept"
    assert requests == [call_with("A", "p")] * 2, "the client's request (the call's record) is not touched"

    wire.progress(tokens[1], 1)
    got_b = await asyncio.wait_for(b, 5)
    assert got_b["params"] == {"progressToken": "p", "progress": 1, "total": 9}
    assert not a.done(), "the first call saw the second's progress"
    wire.progress(tokens[0], 7)
    got_a = await asyncio.wait_for(a, 5)
    assert got_a["params"] == {"progressToken": "p", "progress": 7, "total": 9}

    wire.answer(upstream[1])  # the second call ends first: the first still gets its progress
    assert (await asyncio.wait_for(second.__anext__(), 5))["id"] == "A"
    wire.progress(tokens[0], 8)
    assert (await asyncio.wait_for(first.__anext__(), 5))["params"]["progress"] == 8
    wire.answer(upstream[0])
    assert "result" in await asyncio.wait_for(first.__anext__(), 5)
    for gen in (first, second):
        await gen.aclose()
    assert len(wire.demux._progress) == 0


@pytest.mark.parametrize("token", [7, 0, -3, 2**53 + 1, 1.5, "7", ""])
async def test_the_client_gets_its_token_back_with_its_own_type(token: Any) -> None:
    wire = Wire()
    call = wire.demux.call(call_with(1, token), owner="s")
    [first] = await started(wire, call)
    wire.progress(wire.token_of(1), 1)
    note = await asyncio.wait_for(first, 5)
    assert note["params"]["progressToken"] == token and type(note["params"]["progressToken"]) is type(token)
    wire.answer(1)
    await asyncio.wait_for(call.__anext__(), 5)
    await call.aclose()
    assert len(wire.demux._progress) == 0


async def test_progress_naming_no_token_of_a_call_in_flight_is_dropped_and_logged_without_the_value(
        caplog: pytest.LogCaptureFixture) -> None:
    """The client's own token echoed by the server, a token the gateway never issued, one that looks like a
    gateway token in another type, one of a call that has ended: nobody's. Neither a call nor the client's
    standalone stream (a listener) gets it, and the log names no value (the server's text is not masked)."""
    wire = Wire()
    listener = wire.demux.listen()
    heard = asyncio.ensure_future(listener.__anext__())
    ended = wire.demux.call(call_with(1, "mine"), owner="s")
    running = wire.demux.call(call_with(2, "mine"), owner="s")
    first_ended, first_running = await started(wire, ended, running)
    gone = wire.token_of(1)
    wire.answer(1)
    assert "result" in await asyncio.wait_for(first_ended, 5)
    await ended.aclose()
    live = wire.token_of(2)
    caplog.set_level(logging.INFO, logger="ledgergate.upstream")
    for bogus in ("mine", gone, live + "x", live.upper(), None, 5, 5.0, True, ["x"], {"a": live}):
        wire.progress(bogus, 3)
    wire.demux.route({"jsonrpc": "2.0", "method": PROGRESS, "params": {"progress": 1}})  # no token at all
    await asyncio.sleep(0.01)
    assert not first_running.done() and not heard.done()
    dropped = [r.getMessage() for r in caplog.records if "no call in flight owns" in r.getMessage()]
    assert len(dropped) == 11, dropped
    assert not any(v in " ".join(dropped) for v in ("mine", gone, live)), dropped
    wire.progress(live, 4)  # the live call still gets its own
    assert (await asyncio.wait_for(first_running, 5))["params"] == {"progressToken": "mine", "progress": 4,
                                                                    "total": 9}
    await stop(heard, listener)
    await running.aclose()


async def test_the_token_is_released_when_the_client_cancels_the_call() -> None:
    """A call that ends without its answer (its client cancelled it, or went away: the relay is closed, or
    its task cancelled) keeps no token; the server's progress for it afterwards is nobody's."""
    wire = Wire()
    closed = wire.demux.call(call_with(1, "p"), owner="s")
    [waiting] = await started(wire, closed)
    waiting.cancel()  # the task reading it is cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await closed.aclose()
    assert len(wire.demux._progress) == 0 and wire.demux._calls == {}
    listener = wire.demux.listen()
    heard = asyncio.ensure_future(listener.__anext__())
    wire.progress(wire.token_of(1), 1)
    await asyncio.sleep(0.01)
    assert not heard.done()
    await stop(heard, listener)


async def test_the_token_is_released_when_the_upstream_fails_or_times_out() -> None:
    wire = Wire()
    lost = wire.demux.call(call_with(1, "p"), owner="s")
    [first] = await started(wire, lost)
    wire.demux.lose(UpstreamSessionLost("the child exited"))
    with pytest.raises(UpstreamSessionLost):
        await asyncio.wait_for(first, 5)
    assert len(wire.demux._progress) == 0

    silent = Wire()
    silent.demux.timeout = 0.05
    slow = silent.demux.call(call_with(1, "p"), owner="s")
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(slow.__anext__(), 5)
    assert len(silent.demux._progress) == 0

    async def refused(message: dict[str, Any]) -> None:
        raise UpstreamSessionLost("gone")

    broken = Demux(refused)
    unsent = broken.call(call_with(1, "p"), owner="s")
    with pytest.raises(UpstreamSessionLost):
        await unsent.__anext__()
    assert len(broken._progress) == 0


async def test_a_call_without_a_token_is_sent_as_it_came() -> None:
    """No `_meta` (or none with a token): the request goes out unchanged but for its id, and nothing is held."""
    wire = Wire()
    plain = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "_meta": {"a": 1}}}
    call = wire.demux.call(plain, owner="s")
    [first] = await started(wire, call)
    assert wire.sent == [{**plain, "id": 1}] and len(wire.demux._progress) == 0
    wire.answer(1)
    await asyncio.wait_for(first, 5)
    await call.aclose()


# ── a message naming no call goes to the newest call only when one client owns every call in flight ──
def sampling(server_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": server_id, "method": "sampling/createMessage",
            "params": {"messages": [], "maxTokens": 5}}


async def test_a_server_request_naming_no_call_is_refused_when_calls_of_two_clients_are_in_flight() -> None:
    """Two stateless calls of one principal share the session (owners `call:1`, `call:2`). A stdio
    server's sampling request names neither; before, it went to the newest call, so the other call's
    client could be asked (and answer) for a request about the first. Now the server gets an error and
    neither call sees it."""
    wire = Wire()
    first, second = (wire.demux.call(call_with(n, f"t{n}"), owner=f"call:{n}") for n in (1, 2))
    a, b = await started(wire, first, second)
    wire.demux.route(sampling("s-1"))
    for _ in range(20):
        await asyncio.sleep(0)
    refusals = [m for m in wire.sent if m.get("id") == "s-1" and "error" in m]
    assert len(refusals) == 1 and "several calls" in refusals[0]["error"]["message"], wire.sent
    assert not a.done() and not b.done(), "a call was handed a request that names no call"
    for upstream_id in (1, 2):
        wire.answer(upstream_id)
    assert "result" in await asyncio.wait_for(a, 5) and "result" in await asyncio.wait_for(b, 5)
    for gen in (first, second):
        await gen.aclose()
    assert wire.demux._owners == {}


async def test_a_notification_naming_no_call_goes_to_the_listeners_when_calls_of_two_clients_are_in_flight() -> None:
    wire = Wire()
    listener = wire.demux.listen()
    heard = asyncio.ensure_future(listener.__anext__())
    first, second = (wire.demux.call(call_with(n, f"t{n}"), owner=f"session-{n}") for n in (1, 2))
    a, b = await started(wire, first, second)
    log_line = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
    wire.demux.route(log_line)
    assert await asyncio.wait_for(heard, 5) == log_line
    assert not a.done() and not b.done()
    for upstream_id in (1, 2):
        wire.answer(upstream_id)
    await asyncio.wait_for(a, 5), await asyncio.wait_for(b, 5)
    for gen in (first, second, listener):
        await gen.aclose()


async def test_one_clients_calls_still_get_a_server_request_naming_no_call_on_the_newest() -> None:
    """The guess the stream forces is kept where it cannot cross clients: one owner, two calls in flight."""
    wire = Wire()
    first, second = (wire.demux.call(call_with(n, f"t{n}"), owner="session-1") for n in (1, 2))
    a, b = await started(wire, first, second)
    wire.demux.route(sampling("s-2"))
    assert (await asyncio.wait_for(b, 5))["id"] == "s-2"
    assert not a.done()
    assert not [m for m in wire.sent if m.get("id") == "s-2"], "refused although one client owns every call"
    for upstream_id in (1, 2):
        wire.answer(upstream_id)
    await asyncio.wait_for(a, 5)
    await first.aclose(), await second.aclose()
