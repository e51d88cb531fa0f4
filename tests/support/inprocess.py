"""The real gateway served in this test's own interpreter (the app and the uvicorn settings
`ledgergate serve` uses), for tests that watch what only the gateway's process can show: the
async generators it leaves to the loop, the garbage it leaves to the collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

from ledgergate.app import Gateway, uvicorn_config
from ledgergate.config import load_config
from tests.support.gateway import write_config
from tests.support.procs import Proc, free_port

#: (server name, the argument its `echo` tool takes): server-everything, and the stateless SDK server
ECHO_SERVERS = (("everything", "message"), ("stateless", "text"))


def both_servers(everything: Proc, stateless: Proc) -> dict[str, Any]:
    return {"everything": {"url": f"http://127.0.0.1:{everything.port}/mcp"},
            "stateless": {"url": f"http://127.0.0.1:{stateless.port}/mcp"}}


@asynccontextmanager
async def running(server: uvicorn.Server, what: str) -> AsyncIterator[None]:
    """Run `server` in this event loop until the block ends (started before the block begins)."""
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), f"{what} did not start"
            await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def scripted_upstream(app: Any) -> AsyncIterator[str]:
    """A scripted ASGI upstream (an object with the `port` it listens on) served in this loop; yields its
    MCP URL. For upstreams that must misbehave on demand, which no packaged server does."""
    config = uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="error", lifespan="off")
    async with running(uvicorn.Server(config), "the scripted upstream"):
        yield f"http://127.0.0.1:{app.port}/mcp"


@asynccontextmanager
async def serving(directory: Path, issuer: str, servers: dict[str, Any],
                  policies: list[dict[str, Any]]) -> AsyncIterator[str]:
    """Serve the gateway until the block ends; yields its base URL."""
    port = free_port()
    gateway = Gateway(load_config(write_config(directory, port, issuer, servers, policies)))
    async with running(uvicorn.Server(uvicorn_config(gateway.asgi, "127.0.0.1", port)), "the gateway"):
        yield f"http://127.0.0.1:{port}"
