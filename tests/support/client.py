"""The official MCP SDK client, pointed at the gateway with a bearer token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import mcp_types as types
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

MODERN = "2026-07-28"
MODES = ("legacy", MODERN, "auto")


class Recorder:
    """Answers the server's elicitation and sampling requests and records progress and logs."""

    def __init__(self, elicit_action: str = "accept", elicit_content: dict[str, Any] | None = None) -> None:
        self.elicit_action = elicit_action
        self.elicit_content = elicit_content if elicit_content is not None else {"confirm": True, "reason": "ok"}
        self.elicitations: list[Any] = []
        self.samplings: list[Any] = []
        self.progress: list[tuple[float, float | None, str | None]] = []
        self.logs: list[Any] = []

    async def elicit(self, _ctx: Any, params: Any) -> types.ElicitResult:
        self.elicitations.append(params)
        if self.elicit_action != "accept":
            return types.ElicitResult(action=self.elicit_action)  # type: ignore[arg-type]
        return types.ElicitResult(action="accept", content=self.elicit_content)

    async def sample(self, _ctx: Any, params: Any) -> types.CreateMessageResult:
        self.samplings.append(params)
        return types.CreateMessageResult(role="assistant", model="test-llm",
                                         content=types.TextContent(type="text", text="A sampled summary."))

    async def log(self, params: Any) -> None:
        self.logs.append(params)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))


@contextlib.asynccontextmanager
async def connect(url: str, token: str, mode: str, rec: Recorder | None = None) -> AsyncIterator[Client]:
    rec = rec or Recorder()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode,
                          elicitation_callback=rec.elicit, sampling_callback=rec.sample,
                          logging_callback=rec.log) as client:
            yield client
