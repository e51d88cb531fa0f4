"""Small ASGI helpers the transport uses: reading a bounded body, writing JSON and SSE."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ledgergate.wire.jsonrpc import dumps

Headers = list[tuple[bytes, bytes]]


class BodyTooLarge(Exception):
    pass


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header (first occurrence); the index is built once per request."""
    index = scope.get("_lg_headers")
    if index is None:
        # reversed: where a name repeats, the first occurrence wins (built in C, once per request)
        index = scope["_lg_headers"] = dict(reversed(scope["headers"]))
    value = index.get(name)
    return value.decode("latin-1") if value is not None else None


def header_count(scope: dict[str, Any], name: bytes) -> int:
    return sum(1 for key, _ in scope["headers"] if key == name)


async def read_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Any, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = dumps(payload) if payload is not None else b""
    out: Headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def send_empty(send: Any, status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"0"), *headers]})
    await send({"type": "http.response.body", "body": b""})


async def start_sse(send: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
        (b"x-accel-buffering", b"no"), *headers]})


#: an error message quotes at most this much (names and values in it may come from the caller)
MAX_ERROR_MESSAGE = 500


def json_error_body(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE - 1] + "…"
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}

