"""A stateless MCP server for tests, written with the official SDK (2.3).

Serves Streamable HTTP on ``http://127.0.0.1:PORT/mcp`` with the SDK session
manager in ``stateless=True`` mode:

- a request whose ``MCP-Protocol-Version`` header names a 2026-07-28 revision
  (any value that is not a handshake-era version) is served by the SDK's
  single-exchange modern entry: no ``initialize``, no ``Mcp-Session-Id``,
  ``server/discover``, per-request ``_meta`` envelope, input-required results;
- a request without that header (or with a 2024/2025 version) goes to the
  SDK's *legacy stateless* transport: ``initialize`` works, no session id is
  issued, and server-to-client requests (elicitation/sampling mid-call) are
  impossible there (``NoBackChannelError``).

``--modern-only`` refuses the second kind (400, JSON-RPC ``-32022`` naming the
served versions), so tests can use a server that speaks nothing but 2026-07-28.

Run::

    python tests/servers/stateless_server.py --port 0

Prints ``READY http://127.0.0.1:N/mcp`` on stdout once it is listening.
"""

import argparse
import asyncio
import contextlib
import json
import sys
import warnings
from typing import Annotated, Any

import uvicorn
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, MCPServer, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

SERVER_NAME = "ledgergate-test-stateless"


class Sum(BaseModel):
    a: float
    b: float
    sum: float


class Approval(BaseModel):
    approve: bool = Field(description="Approve the operation?")
    comment: str = Field(default="", description="Optional comment")


class Outcome(BaseModel):
    operation: str
    outcome: str
    comment: str


class Count(BaseModel):
    counted: int


def build_server() -> MCPServer:
    server = MCPServer(name=SERVER_NAME, title="Stateless test server", version="0.1.0", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: float, b: float) -> Sum:
        """Add two numbers (structured result)."""
        return Sum(a=a, b=b, sum=a + b)

    # Input required, the declarative way: a Resolve(...) parameter whose resolver returns
    # Elicit(...). At 2026-07-28 the framework answers round one with
    # {"resultType": "input_required", "inputRequests": {...}, "requestState": "<sealed>"}
    # and runs the body when the client retries with inputResponses + requestState.
    def ask_approval(operation: str) -> Elicit[Approval]:
        return Elicit(f"Approve operation {operation!r}?", Approval)

    @server.tool()
    def approve_operation(
        operation: str, answer: Annotated[ElicitationResult[Approval], Resolve(ask_approval)]
    ) -> Outcome:
        """Ask the client's user to approve an operation (an input-required round trip)."""
        if answer.action != "accept":
            return Outcome(operation=operation, outcome=answer.action, comment="")
        return Outcome(
            operation=operation,
            outcome="approved" if answer.data.approve else "rejected",
            comment=answer.data.comment,
        )

    # Input required, by hand: the tool body returns an InputRequiredResult itself and
    # reads ctx.input_responses / ctx.request_state on the retry.
    @server.tool()
    def ask_name(ctx: Context, greeting: str = "Hello") -> str | InputRequiredResult:
        """Ask the user for their name, then greet them (hand-rolled input_required)."""
        responses = ctx.input_responses or {}
        answer = responses.get("name")
        if isinstance(answer, ElicitResult) and ctx.request_state == "asked-name":
            if answer.action != "accept" or not answer.content:
                return f"{greeting}, stranger"
            return f"{greeting}, {answer.content.get('name')}"
        return InputRequiredResult(
            input_requests={
                "name": ElicitRequest(
                    params=ElicitRequestFormParams(
                        message="What is your name?",
                        requested_schema={
                            "type": "object",
                            "properties": {"name": {"type": "string"}},
                            "required": ["name"],
                        },
                    )
                )
            },
            request_state="asked-name",
        )

    @server.tool()
    async def count_slowly(ctx: Context, n: int = 3, delay: float = 0.05) -> Count:
        """Count to n, sending a progress notification (and a log message) per step."""
        if not 1 <= n <= 100:
            raise ToolError("n must be between 1 and 100")
        for i in range(1, n + 1):
            await asyncio.sleep(delay)
            await ctx.report_progress(i, n, f"counted {i}")
            await ctx.info(f"count_slowly: {i}/{n}")
        return Count(counted=n)

    @server.tool()
    async def touch(ctx: Context, uri: str = "test://greeting") -> str:
        """Publish resource-updated and list-changed events to subscriptions/listen streams."""
        await ctx.notify_resource_updated(uri)
        await ctx.notify_tools_changed()
        return f"touched {uri}"

    @server.resource("test://greeting", name="greeting", mime_type="text/plain")
    def greeting() -> str:
        """A static text resource."""
        return "Hello from the stateless server"

    @server.resource("test://items/{item_id}", name="item", mime_type="application/json")
    def item(item_id: str) -> str:
        """A templated JSON resource."""
        return json.dumps({"id": item_id, "label": f"Item {item_id}"})

    @server.prompt()
    def summarize(topic: str) -> list[Message]:
        """Ask for a short summary of a topic."""
        return [UserMessage(f"Summarize {topic} in one sentence.")]

    return server


def build_app(*, json_response: bool = False, modern_only: bool = False) -> Starlette:
    """The ASGI app: one stateless SDK session manager mounted at /mcp."""
    server = build_server()
    manager = StreamableHTTPSessionManager(
        app=server._lowlevel_server,  # noqa: SLF001 - the SDK's own streamable_http_app does the same
        stateless=True,
        json_response=json_response,
        security_settings=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
        ),
    )

    class MCPEndpoint:
        """A class instance, so Starlette's Route treats it as a raw ASGI app (as the SDK's own app does)."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await endpoint(scope, receive, send)

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        if modern_only and scope["type"] == "http":
            version = dict(scope["headers"]).get(b"mcp-protocol-version")
            if version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS:
                body = {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32022,
                        "message": "Unsupported protocol version",
                        "data": {
                            "supported": list(MODERN_PROTOCOL_VERSIONS),
                            "requested": version.decode("latin-1") if version else None,
                        },
                    },
                }
                await JSONResponse(body, status_code=400)(scope, receive, send)
                return
        await manager.handle_request(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):  # type: ignore[no-untyped-def]
        async with manager.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=MCPEndpoint())], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stateless 2026-07-28 MCP test server (SDK 2.3)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--json-response", action="store_true", help="answer JSON instead of SSE")
    parser.add_argument("--modern-only", action="store_true", help="refuse handshake-era requests")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    app = build_app(json_response=args.json_response, modern_only=args.modern_only)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level=args.log_level, lifespan="on")
    userver = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(userver.serve())
        while not userver.started:
            if task.done():
                await task
                raise SystemExit(1)
            await asyncio.sleep(0.02)
        port = userver.servers[0].sockets[0].getsockname()[1]
        sys.stdout.write(f"READY http://127.0.0.1:{port}/mcp\n")
        sys.stdout.flush()
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
