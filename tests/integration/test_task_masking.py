"""A task's status and result are masked as the call that created it would be.

Polling a task (`tasks/get`, `tasks/result`) is protocol housekeeping to policy, and its masking
profile was that of the first rule granting the caller the server: with an unmasked `allow` for one
tool placed before a masked rule for another, the masked tool's result came back in the clear when
fetched as a task. The upstream is a scripted handshake-era server with task support (no packaged
server here answers tasks on demand); the gateway is the real one, served in-process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inprocess import scripted_upstream, serving
from tests.support.oidc import Provider
from tests.support.procs import free_port
from tests.support.upstream import read_body

pytestmark = pytest.mark.timeout(60)

PLANTED = "Customer C-1001: SSN 123-45-6789, card 4111 1111 1111 1111"
POLICY = [
    {"name": "staff-echo", "match": {"groups": ["staff"], "servers": ["tasks"], "tools": ["echo"]},
     "effect": "allow"},
    {"name": "staff-lookup-masked", "match": {"groups": ["staff"], "servers": ["tasks"], "tools": ["lookup"]},
     "effect": "allow", "mask": "standard"},
]
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-11-25"}


class TaskServer:
    """`lookup` answers PLANTED, at once or (with a `task` param) as a completed task to fetch."""

    def __init__(self) -> None:
        self.port = free_port()
        self.tasks: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = json.loads(await read_body(receive) or b"{}")
        headers = [(b"content-type", b"application/json"), (b"mcp-session-id", b"upstream-session")]
        if "id" not in message:
            await send({"type": "http.response.start", "status": 202, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        method, params = message.get("method"), message.get("params") or {}
        content = {"content": [{"type": "text", "text": PLANTED}]}
        task = {"status": "completed", "createdAt": "2026-01-01T00:00:00Z", "lastUpdatedAt": "2026-01-01T00:00:00Z",
                "ttl": 60000, "statusMessage": f"done: {PLANTED}"}
        if method == "initialize":
            result: Any = {"protocolVersion": params.get("protocolVersion"), "serverInfo": {"name": "t", "version": "1"},
                           "capabilities": {"tools": {}, "tasks": {"requests": {"tools": {"call": {}}}}}}
        elif method == "tools/call" and "task" in params:
            task_id = f"task-{uuid.uuid4().hex[:8]}"
            self.tasks[task_id] = content
            result = {"task": {"taskId": task_id, **task}}
        elif method == "tools/call":
            result = content
        elif method == "tasks/get":
            result = {"taskId": params.get("taskId"), **task}
        elif method == "tasks/result":
            result = self.tasks.get(params.get("taskId"), {"content": []})
        else:
            result = {}
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body",
                    "body": json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()})


async def test_a_tasks_result_and_status_are_masked_as_the_call_that_made_it(tmp_path: Path,
                                                                           provider: Provider) -> None:
    async with scripted_upstream(TaskServer()) as url, serving(tmp_path, provider.issuer, {"tasks": {"url": url}}, POLICY) as base, \
            httpx.AsyncClient(timeout=20, headers={**HEADERS,
                                                   "Authorization": f"Bearer {provider.token('alice', ['staff'])}"}) \
            as http:
        gw = f"{base}/mcp/tasks"
        opened = await http.post(gw, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {"tasks": {}}, "clientInfo": {"name": "t", "version": "1"}}})
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        await http.post(gw, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        async def rpc(n: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            r = await http.post(gw, headers=session, json={"jsonrpc": "2.0", "id": n, "method": method,
                                                            "params": params})
            text = r.text
            if text.startswith(("event:", "id:", "data:")):
                text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
            return json.loads(text)  # type: ignore[no-any-return]

        direct = await rpc(2, "tools/call", {"name": "lookup", "arguments": {}})
        assert "6789" in json.dumps(direct) and "123-45-6789" not in json.dumps(direct)  # masked, partially
        created = await rpc(3, "tools/call", {"name": "lookup", "arguments": {}, "task": {"ttl": 60000}})
        task_id = created["result"]["task"]["taskId"]
        for method in ("tasks/result", "tasks/get"):
            answer = json.dumps(await rpc(4, method, {"taskId": task_id}))
            assert "C-1001" in answer, answer
            assert "123-45-6789" not in answer and "4111 1111 1111 1111" not in answer, (method, answer)
