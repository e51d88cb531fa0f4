"""A minimal MCP server (streamable HTTP, 2025-06-18, JSON answers) that costs almost nothing per
call, so that a benchmark in front of it measures the gateway's own ceiling rather than the
upstream's. It speaks just enough MCP for `tools/call echo`: initialize, notifications, ping,
tools/list and tools/call. Benchmark use only.

    python bench/fast_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any

import httptools

ECHO_TOOL = {"name": "echo", "description": "Echoes back the input",
             "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}},
                             "required": ["message"]}}
_sessions = itertools.count(1)


def answer(message: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The JSON-RPC answer to one message (None for a notification) and extra headers."""
    method = message.get("method")
    if "id" not in message:
        return None, {}
    result: dict[str, Any]
    headers: dict[str, str] = {}
    if method == "initialize":
        version = (message.get("params") or {}).get("protocolVersion", "2025-06-18")
        result = {"protocolVersion": version, "capabilities": {"tools": {}},
                  "serverInfo": {"name": "fast-upstream", "version": "1"}}
        headers["mcp-session-id"] = f"fast-{next(_sessions)}"
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": [ECHO_TOOL]}
    elif method == "tools/call":
        params = message.get("params") or {}
        text = str((params.get("arguments") or {}).get("message", ""))
        result = {"content": [{"type": "text", "text": f"Echo: {text}"}]}
    else:
        return {"jsonrpc": "2.0", "id": message["id"],
                "error": {"code": -32601, "message": f"method not found: {method}"}}, {}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}, headers


class Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        try:
            reply, headers = answer(json.loads(b"".join(self.body)))
        except ValueError:
            reply, headers = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}, {}
        if reply is None:
            self.transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            return
        body = json.dumps(reply, separators=(",", ":")).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.transport.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                             f"{head}\r\n".encode() + body)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(serve(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
