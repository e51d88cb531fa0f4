"""Capture the real HTTP traffic between the SDK 2.3 client and SDK 2.3 servers.

Runs the test servers in-process behind a logging ASGI wrapper and drives them
with `mcp.client.client.Client` in each mode, printing every HTTP exchange
(method, headers, body; status, headers, body / SSE frames). The transcript is
what docs/sdk-notes.md is written from; re-run it after an SDK upgrade:

    .venv/bin/python tests/servers/wire_capture.py            # all scenarios
    .venv/bin/python tests/servers/wire_capture.py auto-handshake-only
"""

import asyncio
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import mcp_types as types
import uvicorn
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stateless_server  # noqa: E402

from ledgergate.demo import bank_server  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)  # SDK teardown noise (e.g. a listen stream closed mid-event) is not wire traffic

_SHOWN_HEADERS = {
    "accept",
    "content-type",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "last-event-id",
    "allow",
    "cache-control",
    "authorization",
}


def _short(value: Any, limit: int = 900) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[:limit] + f"...<{len(text) - limit} more>"


def _elide_state(text: str) -> str:
    """Shorten sealed requestState tokens so the transcript stays readable."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (v[:16] + "..." if k == "requestState" and isinstance(v, str) and len(v) > 40 else walk(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return json.dumps(walk(obj), separators=(",", ":"))


class WireLog:
    """ASGI wrapper that prints each HTTP exchange."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.n = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.n += 1
        n = self.n
        chunks: list[bytes] = []
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() in _SHOWN_HEADERS}
        print(f"  [{n}] --> {scope['method']} {scope['path']} {headers}")

        async def logged_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = b"".join(chunks).decode(errors="replace")
                    if body:
                        print(f"  [{n}]     {_short(_elide_state(body))}")
            return message

        async def logged_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = {
                    k.decode(): v.decode() for k, v in message.get("headers", []) if k.decode() in _SHOWN_HEADERS
                }
                print(f"  [{n}] <-- {message['status']} {headers}")
            elif message["type"] == "http.response.body":
                body = message.get("body", b"").decode(errors="replace")
                for line in body.splitlines():
                    if line.startswith("data: "):
                        print(f"  [{n}]     sse data: {_short(_elide_state(line[6:]))}")
                    elif line.strip() and not line.startswith("data:"):
                        if line.startswith("{"):
                            print(f"  [{n}]     {_short(_elide_state(line))}")
                        else:
                            print(f"  [{n}]     sse {line.strip()}")
            await send(message)

        await self.app(scope, logged_receive, logged_send)


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    server = uvicorn.Server(uvicorn.Config(WireLog(app), host="127.0.0.1", port=0, log_level="error", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}/mcp"


async def elicit(_ctx: Any, params: Any) -> types.ElicitResult:
    if "name" in json.dumps(params.requested_schema):
        return types.ElicitResult(action="accept", content={"name": "Ada"})
    return types.ElicitResult(action="accept", content={"approve": True, "comment": "ok", "confirm": True})


async def sample(_ctx: Any, _params: Any) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="summary"), model="fake"
    )


async def progress(p: float, t: float | None, m: str | None) -> None:
    print(f"      (client) progress {p}/{t} {m}")


async def on_log(params: Any) -> None:
    print(f"      (client) log {params.level}: {params.data}")


def title(text: str) -> None:
    print(f"\n=== {text}")


async def modern_stateless(mode: str) -> None:
    title(f"stateless server, Client(mode={mode!r})")
    server, task, url = await serve(stateless_server.build_app())
    try:
        async with Client(
            url, mode=mode, elicitation_callback=elicit, logging_callback=on_log, log_level="info"
        ) as client:
            print(f"      (client) negotiated {client.protocol_version}")
            await client.list_tools()
            await client.call_tool("add", {"a": 1, "b": 2})
            print("   -- input_required round trip (Resolve/Elicit)")
            await client.call_tool("approve_operation", {"operation": "wire"})
            print("   -- input_required round trip (hand-rolled)")
            await client.call_tool("ask_name", {})
            print("   -- progress + log")
            await client.call_tool("count_slowly", {"n": 2, "delay": 0.01}, progress_callback=progress)
            await client.read_resource("test://items/7")
            await client.get_prompt("summarize", {"topic": "MCP"})
            if client.protocol_version == "2026-07-28":
                print("   -- subscriptions/listen")
                async with client.listen(tools_list_changed=True, resource_subscriptions=["test://greeting"]) as sub:
                    await client.call_tool("touch", {})
                    async with asyncio.timeout(3):
                        async for event in sub:
                            print(f"      (client) event {event!r}")
                            break
    finally:
        server.should_exit = True
        await task


async def legacy_stateless() -> None:
    title("stateless server, Client(mode='legacy'): SDK legacy stateless path")
    server, task, url = await serve(stateless_server.build_app())
    try:
        async with Client(url, mode="legacy", elicitation_callback=elicit) as client:
            print(f"      (client) negotiated {client.protocol_version}")
            await client.call_tool("echo", {"text": "hi"})
            print("   -- elicitation on the legacy stateless path")
            try:
                await client.call_tool("approve_operation", {"operation": "wire"})
            except MCPError as exc:
                print(f"      (client) MCPError {exc.code}: {exc}")
    finally:
        server.should_exit = True
        await task


async def bank(mode: str, *, handshake_only: bool, stateless: bool = False) -> None:
    title(f"bank server over HTTP (stateless={stateless}, handshake_only={handshake_only}), Client(mode={mode!r})")
    app: Any = bank_server.build_server().streamable_http_app(stateless_http=stateless, host="127.0.0.1")
    if handshake_only:
        app = bank_server._handshake_only(app)  # noqa: SLF001
    server, task, url = await serve(app)
    try:
        async with Client(
            url,
            mode=mode,
            elicitation_callback=elicit,
            sampling_callback=sample,
            logging_callback=on_log,
            log_level="info",
        ) as client:
            print(f"      (client) negotiated {client.protocol_version}")
            await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
            print("   -- elicitation")
            await client.call_tool("confirm_large_action", {"action": "wire", "amount": 1})
            print("   -- progress")
            await client.call_tool("slow_report", {"steps": 2, "delay": 0.01}, progress_callback=progress)
        print("   -- (client closed)")
    finally:
        server.should_exit = True
        await task


SCENARIOS = {
    "modern": lambda: modern_stateless("2026-07-28"),
    "auto-stateless": lambda: modern_stateless("auto"),
    "legacy-stateless": legacy_stateless,
    "auto-bank": lambda: bank("auto", handshake_only=False),
    "auto-handshake-only": lambda: bank("auto", handshake_only=True),
    "legacy-bank": lambda: bank("legacy", handshake_only=False),
    "modern-bank": lambda: bank("2026-07-28", handshake_only=False),
}


async def main(names: list[str]) -> None:
    for name in names or list(SCENARIOS):
        try:
            await SCENARIOS[name]()
        except Exception as exc:  # noqa: BLE001 - a transcript tool reports and moves on
            print(f"   !! scenario {name} raised {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
