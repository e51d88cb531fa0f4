"""A small stateless (2026-07-28) MCP server the test controls: it records every request it gets and
serves tool definitions the test can change at run time (to provoke tool-definition drift).
Used where a test must observe what reached the upstream, which no packaged server reports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn

from tests.support.procs import free_port


async def read_body(receive: Any) -> bytes:
    """An ASGI request's whole body (the test servers here answer once it is all in)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body

class RecordingUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = [
            {"name": "echo", "description": "Echo a message", "inputSchema": {
                "type": "object", "properties": {"message": {"type": "string"}}}},
            {"name": "big", "description": "A large result", "inputSchema": {"type": "object"}},
        ]
        #: a call of the tool "held" waits here until the test sets `release`
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("method") == "tools/call"]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = json.loads(await read_body(receive) or b"{}")
        self.requests.append(request)
        method = request.get("method")
        if method == "server/discover":
            result: dict[str, Any] = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                                      "cacheScope": "public", "ttlMs": 0, "resultType": "complete"}
        elif method == "tools/list":
            result = {"tools": self.tools, "resultType": "complete", "cacheScope": "public", "ttlMs": 0}
        elif method == "tools/call" and "task" in request["params"]:
            self.task_count = getattr(self, "task_count", 0) + 1
            task = {"taskId": f"task-{self.task_count}", "status": "working", "createdAt": "2026-11-25T00:00:00Z",
                    "lastUpdatedAt": "2026-11-25T00:00:00Z", "ttl": 60000}
            self.tasks_created = [*getattr(self, "tasks_created", []), task]
            result = {"task": task, "resultType": "complete"}
        elif method in ("tasks/get", "tasks/cancel"):
            task = next(t for t in self.tasks_created if t["taskId"] == request["params"]["taskId"])
            result = {**task, "resultType": "complete"}
        elif method == "tasks/list":
            result = {"tasks": getattr(self, "tasks_created", []), "resultType": "complete"}
        elif method == "tools/call" and request["params"]["name"] == "numbers":
            # the arguments back as structured content, so a test can see numbers travel both ways
            args = request["params"].get("arguments") or {}
            result = {"content": [{"type": "text", "text": "numbers"}], "structuredContent": args,
                      "resultType": "complete"}
        elif method == "tools/call" and request["params"].get("name") == "fail":
            # an upstream error whose text quotes the caller's input
            message = f"declined: {(request['params'].get('arguments') or {}).get('message')}"
            payload = json.dumps({"jsonrpc": "2.0", "id": request.get("id"),
                                  "error": {"code": -32000, "message": message}}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": payload})
            return
        elif method == "tools/call":
            name = request["params"]["name"]
            args = request["params"].get("arguments") or {}
            if name == "held":
                self.holding.set()
                await self.release.wait()
            text = "x" * 100_000 if name == "big" else f"Echo: {args.get('message')}"
            result = {"content": [{"type": "text", "text": text}], "resultType": "complete"}
        elif method == "resources/read":
            uri = request["params"].get("uri")
            result = {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"contents of {uri}"}],
                      "resultType": "complete"}
        else:
            result = {"resultType": "complete"}
        payload = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": result}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    async def start(self) -> None:
        self._server = uvicorn.Server(uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="error",
                                                     lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
