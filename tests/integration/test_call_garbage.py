"""A call leaves no reference cycle behind: its objects are freed when it ends, not by the collector.

A `Call` once held a partial of the pipeline bound to that same call, so every call's objects (the
call, its decision, its messages, about 16 objects) stayed until a cyclic collection found them:
tens of thousands of objects a second under load, for collections of 5-10 ms each that every call
in flight waited for. Here the real gateway runs in-process in front of server-everything and the
stateless SDK server, the official SDK's clients call it in both protocol eras, and the collector
keeps whatever it finds (`gc.DEBUG_SAVEALL`): none of it may be the gateway's.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from pathlib import Path

import uvicorn

from ledgergate.app import Gateway, uvicorn_config
from ledgergate.config import load_config
from tests.support.client import MODERN, connect
from tests.support.gateway import write_config
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import Proc, free_port


def ours(garbage: list[object]) -> Counter[str]:
    return Counter(type(o).__qualname__ for o in garbage if type(o).__module__.startswith("ledgergate"))


async def test_calls_leave_no_cycles_for_the_collector(
        tmp_path: Path, provider: Provider, everything: Proc, stateless: Proc) -> None:
    port = free_port()
    servers = {"everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"},
               "stateless": {"url": f"http://127.0.0.1:{stateless.port}/mcp"}}
    masked = [{**p, "mask": "standard"} if p.get("effect") == "allow" else p for p in POLICIES]
    gateway = Gateway(load_config(write_config(tmp_path, port, provider.issuer, servers, masked)))
    server = uvicorn.Server(uvicorn_config(gateway.asgi, "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    flags = gc.get_debug()
    try:
        while not server.started:
            assert not serving.done(), "the gateway did not start"
            await asyncio.sleep(0.02)
        token = provider.token("alice", ["staff"])
        for name, arg in (("everything", "message"), ("stateless", "text")):
            for mode in ("legacy", MODERN):
                async with connect(f"http://127.0.0.1:{port}/mcp/{name}", token, mode) as client:
                    await client.call_tool("echo", {arg: "warm-up"})
                    gc.collect()
                    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept, to be looked at
                    gc.garbage.clear()
                    for i in range(20):
                        result = await client.call_tool("echo", {arg: f"card 4111 1111 1111 {i:04d}"})
                        assert not result.is_error, (name, mode, result)
                    await client.list_tools()
                    gc.collect()
                    found = ours(gc.garbage)
                    gc.set_debug(flags)
                    gc.garbage.clear()
                    assert not found, f"{name} ({mode}): the gateway's objects left for the collector: {found}"
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        server.should_exit = True
        await serving
