"""The demultiplexer of one inbound stream (stdio, legacy SSE) takes whatever JSON an upstream or a
client puts in an id or a progress token without failing: a value that cannot name a call is simply
nobody's, and a call it could not register leaves nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

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
    assert sent and demux._calls == {} and demux._order == [] and demux._progress == {}
