"""Every relay chain is closed by the code that opened it: a call leaves no async generator for
the event loop to finalize later. An abandoned generator costs a task per call (it was about a
tenth of the gateway's CPU per call) and runs its cleanup — releasing the upstream connection —
at a time nobody chose.

The real gateway runs in-process here (the same app and uvicorn settings `ledgergate serve`
uses), in front of server-everything and the stateless SDK server, so the loop's async-generator
finalizer can be watched; the clients are the official SDK's, in both protocol eras.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from tests.support.client import MODERN, connect
from tests.support.inprocess import ECHO_SERVERS, both_servers, serving
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import Proc


async def test_no_call_leaves_a_generator_for_the_loop_to_finalize(
        tmp_path: Path, provider: Provider, everything: Proc, stateless: Proc) -> None:
    firstiter, finalizer = sys.get_asyncgen_hooks()
    finalized: list[str] = []

    def watching(agen: Any) -> None:
        if "ledgergate" in agen.ag_code.co_filename:
            finalized.append(agen.__qualname__)
        assert finalizer is not None
        finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=watching)
    try:
        async with serving(tmp_path, provider.issuer, both_servers(everything, stateless), POLICIES) as base:
            token = provider.token("alice", ["staff"])
            for name, arg in ECHO_SERVERS:
                for mode in ("legacy", MODERN):
                    async with connect(f"{base}/mcp/{name}", token, mode) as client:
                        for i in range(5):
                            result = await client.call_tool("echo", {arg: f"m{i}"})
                            assert not result.is_error and f"m{i}" in result.content[0].text  # type: ignore[union-attr]
                        await client.list_tools()
            await asyncio.sleep(0.1)  # a finalizer task would have been scheduled by now
            assert finalized == []
    finally:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
