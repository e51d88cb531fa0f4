"""A call leaves no reference cycle behind: its objects are freed when it ends, not by the collector.

A `Call` once held a partial of the pipeline bound to that same call, so every call's objects (the
call, its decision, its messages, about 16 objects) stayed until a cyclic collection found them:
tens of thousands of objects a second under load, for collections of 5-10 ms each that every call
in flight waited for. Here the real gateway runs in-process in front of server-everything and the
stateless SDK server, the official SDK's clients call it in both protocol eras, and the collector
keeps whatever it finds (`gc.DEBUG_SAVEALL`): none of it may be the gateway's.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp.shared.exceptions import MCPError

from tests.support.client import MODERN, connect
from tests.support.inprocess import ECHO_SERVERS, both_servers, serving
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import Proc


@contextmanager
def left_for_the_collector() -> Iterator[Counter[str]]:
    """What a collection at the end of the block finds dead in cycles, counted by type, the gateway's only."""
    flags = gc.get_debug()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept, to be looked at
    gc.garbage.clear()
    found: Counter[str] = Counter()
    try:
        yield found
        gc.collect()
        found.update(type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("ledgergate"))
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


async def clients(base: str, token: str) -> AsyncIterator[tuple[str, str, str, Any]]:
    """(server, its echo argument, protocol era, a connected official SDK client), each warmed up by one call."""
    for name, arg in ECHO_SERVERS:
        for mode in ("legacy", MODERN):
            async with connect(f"{base}/mcp/{name}", token, mode) as client:
                await client.call_tool("echo", {arg: "warm-up"})
                yield name, arg, mode, client


async def test_calls_leave_no_cycles_for_the_collector(
        tmp_path: Path, provider: Provider, everything: Proc, stateless: Proc) -> None:
    masked = [{**p, "mask": "standard"} if p.get("effect") == "allow" else p for p in POLICIES]
    async with serving(tmp_path, provider.issuer, both_servers(everything, stateless), masked) as base:
        async for name, arg, mode, client in clients(base, provider.token("alice", ["staff"])):
            with left_for_the_collector() as found:
                for i in range(20):
                    result = await client.call_tool("echo", {arg: f"card 4111 1111 1111 {i:04d}"})
                    assert not result.is_error, (name, mode, result)
                await client.list_tools()
            assert not found, f"{name} ({mode}): the gateway's objects left for the collector: {found}"


async def test_refused_and_failed_calls_leave_no_cycles_either(
        tmp_path: Path, provider: Provider, everything: Proc, stateless: Proc) -> None:
    """The other ends of a call: refused by policy, a tool the server does not have, arguments it rejects.
    An error raised from another keeps its traceback and frames, the usual source of cycles."""
    policies = [{"name": "no-add", "match": {"groups": ["staff"], "tools": ["add"]}, "effect": "deny"}, *POLICIES]
    async with serving(tmp_path, provider.issuer, both_servers(everything, stateless), policies) as base:
        async for name, arg, mode, client in clients(base, provider.token("alice", ["staff"])):
            with left_for_the_collector() as found:
                for i in range(10):
                    for tool, args in (("add", {"a": i, "b": 1}), ("no-such-tool", {}), ("echo", {"not-" + arg: i})):
                        try:
                            refused = (await client.call_tool(tool, args)).is_error
                        except MCPError:  # a refusal may come as a JSON-RPC error instead
                            refused = True
                        assert refused, (name, mode, tool)
            assert not found, f"{name} ({mode}): refusals left to the collector: {found}"
