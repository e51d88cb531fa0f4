"""A scripted handshake-era (2025-06-18) Streamable HTTP server for tests that must see exactly what
reached the upstream, and make it misbehave on demand (no packaged server does either).

Every message it receives is kept with the upstream session it arrived on (`received`), so a test can
compare the wire with the ledger. Its tools (by name, `tools/call`):

* `slow`    — sends nothing at all (not even the response head) until `release` is set, then a JSON
              answer: a call that has not had a first message from the server.
* `late`    — an SSE response whose head comes at once and whose answer comes `late_seconds` later.
* `progress_other` — SSE: a progress notification for a token the call never had, one for the
              call's own token, then the answer.
* `resultmethod`   — one JSON message carrying the call's id, a `method` and a `result` at once.
* `resultmethod_then_answer` — SSE: that hybrid message, then the real answer.
* `bad_request_id` — SSE: a server request whose id is an object, then the real answer.
* anything else — a JSON answer at once ("ok <name>").

GET opens the standalone stream: once a `late` call with a progress token is running, it sends a
progress notification for a token no call has (`ghost`) and one for that call's token.

Like server-everything, it sends nothing more for a call its client cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from tests.support.procs import free_port
from tests.support.upstream import read_body


class ScriptedHandshake:
    def __init__(self, late_seconds: float = 2.0) -> None:
        self.port = free_port()
        self.late_seconds = late_seconds
        #: (upstream session id, message) for every message received, in order
        self.received: list[tuple[str | None, dict[str, Any]]] = []
        self.release = asyncio.Event()
        self._sessions = itertools.count(1)
        #: the progress token of the `late` call running now (the standalone stream names it)
        self.late_token: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        #: (upstream session, upstream request id) of every call a cancellation named
        self._cancelled: dict[tuple[str | None, Any], asyncio.Event] = {}

    def _cancel_of(self, session: str | None, request_id: Any) -> asyncio.Event:
        key = (session, json.dumps(request_id))
        return self._cancelled.setdefault(key, asyncio.Event())

    def cancellations(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(s, m) for s, m in self.received if m.get("method") == "notifications/cancelled"]

    def calls(self, name: str | None = None) -> list[tuple[str | None, dict[str, Any]]]:
        return [(s, m) for s, m in self.received if m.get("method") == "tools/call"
                and (name is None or (m.get("params") or {}).get("name") == name)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await self._standalone(send)
            return
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 405, "headers": [(b"allow", b"POST")]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = dict(scope["headers"])
        session = headers.get(b"mcp-session-id", b"").decode() or None
        message = json.loads(await read_body(receive) or b"{}")
        self.received.append((session, message))
        if message.get("method") == "notifications/cancelled":
            self._cancel_of(session, (message.get("params") or {}).get("requestId")).set()
        if "id" not in message or "method" not in message:  # a notification or a reply
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        mid = message["id"]
        if message["method"] == "initialize":
            body = {"jsonrpc": "2.0", "id": mid, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted", "version": "1"}}}
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"mcp-session-id", f"s-{next(self._sessions)}".encode())]})
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})
            return
        params = message.get("params") or {}
        name = params.get("name") if message["method"] == "tools/call" else message["method"]
        token = (params.get("_meta") or {}).get("progressToken")
        if name == "slow":
            try:
                await asyncio.wait_for(self.release.wait(), 60)
            except TimeoutError:
                return
            await self._json(send, _ok(mid, "slow"))
        elif name == "late":
            if token is not None and not self.late_token.done():
                self.late_token.set_result(token)
            await self._sse_head(send)
            cancelled = self._cancel_of(session, mid)
            try:
                await asyncio.wait_for(cancelled.wait(), self.late_seconds)
            except TimeoutError:
                await self._sse(send, [_ok(mid, "late")])
                return
            # cancelled: nothing more, the stream left open (as server-everything does)
            try:
                await asyncio.wait_for(self.release.wait(), 60)
            except TimeoutError:
                pass
            await send({"type": "http.response.body", "body": b""})
        elif name == "progress_other":
            events = [{"jsonrpc": "2.0", "method": "notifications/progress",
                       "params": {"progressToken": "someone-else", "progress": 1, "message": "not yours"}}]
            if token is not None:
                events.append({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": token, "progress": 2, "message": "yours"}})
            await self._sse_head(send)
            await self._sse(send, [*events, _ok(mid, "progress done")])
        elif name == "resultmethod":
            await self._json(send, {"jsonrpc": "2.0", "id": mid, "method": "sampling/createMessage",
                                    "result": {"content": [{"type": "text", "text": "hybrid"}]}})
        elif name == "resultmethod_then_answer":
            await self._sse_head(send)
            await self._sse(send, [{"jsonrpc": "2.0", "id": mid, "method": "sampling/createMessage",
                                    "result": {"content": [{"type": "text", "text": "hybrid"}]}},
                                   _ok(mid, "the real answer")])
        elif name == "bad_request_id":
            await self._sse_head(send)
            await self._sse(send, [{"jsonrpc": "2.0", "id": {"x": 1}, "method": "roots/list", "params": {}},
                                   _ok(mid, "the real answer")])
        else:
            await self._json(send, _ok(mid, f"ok {name}"))

    async def _standalone(self, send: Any) -> None:
        await self._sse_head(send)
        try:
            token = await asyncio.wait_for(asyncio.shield(self.late_token), 30)
        except TimeoutError:
            await send({"type": "http.response.body", "body": b""})
            return
        for progress_token, progress in (("ghost", 1), (token, 2)):
            event = {"jsonrpc": "2.0", "method": "notifications/progress",
                     "params": {"progressToken": progress_token, "progress": progress}}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(),
                        "more_body": True})
        try:
            await asyncio.wait_for(self.release.wait(), 60)
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _json(send: Any, body: dict[str, Any]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    @staticmethod
    async def _sse_head(send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})

    @staticmethod
    async def _sse(send: Any, events: list[dict[str, Any]]) -> None:
        for event in events:
            await send({"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _ok(mid: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": text}]}}
