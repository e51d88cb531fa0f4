"""An MCP server on a Unix socket, as in the Kubernetes sidecar layout: the official SDK's
Streamable HTTP app served by uvicorn with ``uds=``.

``--mode stateless`` serves tests/servers/stateless_server.py's app (2026-07-28 and legacy
stateless); ``--mode session`` serves a handshake-era server with sessions
(``Mcp-Session-Id``), built with the SDK's own ``streamable_http_app()`` and its defaults, as a
user would write it; ``--mode sse`` the same server over the legacy HTTP+SSE transport.

Run::

    python tests/servers/unix_server.py --socket /tmp/x/mcp.sock [--mode session]

Prints ``READY unix://SOCKET`` once it is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stateless_server import build_app  # noqa: E402


def _server() -> MCPServer:
    server = MCPServer(name="ledgergate-test-unix", version="0.1.0", log_level="WARNING")

    @server.tool()
    def whoami() -> str:
        """Says which transport it was reached over."""
        return "served over a unix socket"

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    return server


def session_app() -> Starlette:
    return _server().streamable_http_app()


def sse_app() -> Starlette:
    return _server().sse_app()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--mode", choices=("stateless", "session", "sse"), default="stateless")
    args = parser.parse_args()
    app = {"stateless": build_app, "session": session_app, "sse": sse_app}[args.mode]()
    config = uvicorn.Config(app, uds=args.socket, log_level="warning", lifespan="on")
    userver = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(userver.serve())
        while not userver.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.02)
        os.chmod(args.socket, 0o600)  # only this user (the gateway's, in the pod) may connect
        sys.stdout.write(f"READY unix://{args.socket}\n")
        sys.stdout.flush()
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
