"""The small request/answer core the transport modules share: one exchange, one way to refuse,
and the ways an answer goes out (JSON, or SSE streamed, or SSE kept for resumption)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ledgergate.errors import (
    INTERNAL_ERROR,
    RATE_LIMITED,
    BadRequest,
    GatewayError,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
    UpstreamError,
)
from ledgergate.gateway import offload
from ledgergate.gateway.http import BodyTooLarge, header, json_error_body, read_body, send_json, start_sse
from ledgergate.gateway.pipeline import Pipeline
from ledgergate.gateway.sessions import EventStream, GatewaySession
from ledgergate.principal import Principal
from ledgergate.wire import jsonrpc
from ledgergate.wire.sse import PING, encode

log = logging.getLogger("ledgergate.transport")

_PING_INTERVAL = 15.0


@dataclass
class Exchange:
    """One HTTP request to `/mcp/{server}` after its caller is known, and the pipeline it keeps."""

    scope: dict[str, Any]
    receive: Any
    send: Any
    server: str
    principal: Principal
    pipeline: Pipeline
    #: the answer's head is out (an SSE stream began): a late refusal can only go into the stream
    started: bool = False
    #: the id of the JSON-RPC message being answered, once it is known
    message_id: Any = None
    #: JSON values this request holds of the gateway-wide budget (`admit`), given back when it ends
    values_held: int = 0

    def header(self, name: bytes) -> str | None:
        return header(self.scope, name)


async def refuse(send: Any, exc: GatewayError, message_id: Any = None) -> None:
    """The one place a refusal becomes an answer: status, JSON-RPC error and headers from the exception."""
    await send_json(send, exc.http_status, json_error_body(message_id, exc.rpc_code, exc.message, exc.data),
                    exc.headers)


def error_message(exc: GatewayError, message_id: Any) -> bytes:
    return jsonrpc.dumps(json_error_body(message_id, exc.rpc_code, exc.message, exc.data))


class Background:
    """Tasks that outlive the HTTP request that started them (resumable streams, legacy SSE calls)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


async def respond(ex: Exchange, stream: AsyncGenerator[dict[str, Any], None], request_id: Any, wants_sse: bool,
                  session: GatewaySession | None, background: Background) -> None:
    """JSON when the first thing back is the answer; otherwise commit to SSE.

    For a handshake session the rest of the stream is consumed by a task into an
    `EventStream`, so a client that drops the connection can resume it.
    """
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        raise UpstreamError("no response from upstream") from None
    if jsonrpc.is_final_for(first, request_id) or not wants_sse:
        if not jsonrpc.is_final_for(first, request_id):
            # A client that cannot read SSE only gets the answer.
            async for item in stream:
                first = item
        await stream.aclose()  # now, rather than by a task the garbage collector would schedule
        await send_json(ex.send, 200, first)
        return
    ex.started = True
    await start_sse(ex.send)
    if session is None:
        await ex.send({"type": "http.response.body", "body": encode(jsonrpc.dumps(first)), "more_body": True})
        await pump(ex.send, stream, request_id, ex.pipeline.masked_error)
        return
    events = session.new_stream()
    events.append(jsonrpc.dumps(first))
    # a cancellation reaches the call wherever it runs, here or in this task (`Bridge.handshake_call`)
    background.spawn(fill(events, stream, request_id, ex.pipeline.masked_error))
    await drain_watching(ex.send, ex.receive, events, 0)


#: how an upstream's failure is shown once a stream has begun (`Pipeline.masked_error`: its words may quote
#: the upstream's data, and the endpoint's own masking is behind us by then)
Shown = Callable[[UpstreamError], UpstreamError]


def _shown(exc: GatewayError, masked: Shown | None) -> GatewayError:
    return masked(exc) if masked is not None and isinstance(exc, UpstreamError) else exc


async def fill(events: EventStream, stream: AsyncGenerator[dict[str, Any], None], request_id: Any,
               masked: Shown | None = None) -> None:
    """Consume a call's messages into a resumable event stream; a failure becomes the stream's last event."""
    try:
        async for item in stream:
            events.append(jsonrpc.dumps(item))
    except GatewayError as exc:
        events.append(error_message(_shown(exc, masked), request_id))
    except Exception:  # noqa: BLE001 - the client must get an answer, not a hang
        log.exception("stream failed")
        events.append(jsonrpc.dumps(json_error_body(request_id, INTERNAL_ERROR, "internal gateway error")))
    finally:
        events.close()


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def drain_watching(send: Any, receive: Any, events: EventStream, seq: int) -> None:
    """`drain` until the stream ends or the client hangs up (uvicorn drops writes to a gone
    client silently, so only receive() tells)."""
    draining = asyncio.create_task(drain(send, events, seq))
    gone = asyncio.create_task(_until_disconnect(receive))
    try:
        await asyncio.wait({draining, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (draining, gone):
            task.cancel()
        for task in (draining, gone):
            with contextlib.suppress(BaseException):
                await task


async def drain(send: Any, events: EventStream, seq: int) -> None:
    reader = events.read_from(seq)
    try:
        while True:
            try:
                event_id, payload = await asyncio.wait_for(reader.__anext__(), _PING_INTERVAL)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                await send({"type": "http.response.body", "body": PING, "more_body": True})
                continue
            await send({"type": "http.response.body", "body": encode(payload, event_id), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        return
    finally:
        with contextlib.suppress(Exception):
            await reader.aclose()


async def pump(send: Any, stream: AsyncGenerator[dict[str, Any], None], request_id: Any,
               masked: Shown | None = None) -> None:
    """Stream messages straight to the client (stateless: no resumption, closing the stream cancels)."""
    try:
        async for item in stream:
            await send({"type": "http.response.body", "body": encode(jsonrpc.dumps(item)), "more_body": True})
    except GatewayError as exc:
        await send({"type": "http.response.body", "body": encode(error_message(_shown(exc, masked), request_id)),
                    "more_body": True})
    except OSError:
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass
class Posted:
    """A POSTed JSON-RPC message, checked as far as the envelope goes."""

    message: dict[str, Any]
    kind: str  # request | notification | response
    wants_sse: bool


#: how long a large message waits for room in `limits.json_values_in_flight` before it is refused: several
#: times what one message at the cap takes through the gateway alone (1.3 s measured), so a burst of a few
#: queues instead of being refused; a waiting request holds only its body
VALUES_WAIT = 10.0
#: what a message refused for want of room is told (`Retry-After`, seconds)
VALUES_RETRY_AFTER = 5


@dataclass(frozen=True)
class BodyLimits:
    """What one POSTed body may be (`limits.max_body_bytes`, `limits.max_json_values`) and the values of
    large messages the gateway processes at once (`limits.json_values_in_flight`)."""

    max_bytes: int
    max_values: int
    in_flight: offload.ValuesInFlight

    @classmethod
    def of(cls, max_bytes: int, max_values: int, values_in_flight: int) -> BodyLimits:
        return cls(max_bytes, max_values, offload.ValuesInFlight(values_in_flight))


def too_many_values(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Payload Too Large: the message holds more than {limit} JSON values "
                           "(limits.max_json_values)", data={"reason": "max_json_values", "maxJsonValues": limit})


def no_room_for_values(count: int, limits: BodyLimits) -> GatewayError:
    return GatewayError(
        f"Service Unavailable: large messages holding up to {limits.in_flight.capacity} JSON values are being "
        f"processed (limits.json_values_in_flight) and this one ({count}) found no room within "
        f"{VALUES_WAIT:g}s; try again in {VALUES_RETRY_AFTER}s",
        http_status=503, rpc_code=RATE_LIMITED, headers=((b"retry-after", str(VALUES_RETRY_AFTER).encode()),),
        data={"reason": "json_values_in_flight", "retryAfter": VALUES_RETRY_AFTER})


async def admit(body: bytes, limits: BodyLimits) -> int:
    """The JSON values a body may hold, taken from the gateway-wide budget before it is parsed (the caller
    gives them back with `limits.in_flight.give_back` when the request ends), or a refusal: 413 past
    `max_values`, 503 when no room came within `VALUES_WAIT`. A body under `offload.LARGE_BODY_BYTES` is
    neither counted nor budgeted (0): it holds at most ~44,000 values, a few MB parsed, and a typical call
    pays nothing for this."""
    if len(body) < offload.LARGE_BODY_BYTES:
        return 0
    count = await offload.on_worker(offload.json_values, body, limits.max_values)
    if count > limits.max_values:
        raise too_many_values(limits.max_values)
    if not await limits.in_flight.take(count, VALUES_WAIT):
        raise no_room_for_values(count, limits)
    return count


async def parse_body(body: bytes) -> Any:
    """`jsonrpc.loads`, on a worker when the body is large (`gateway/offload.py`)."""
    if len(body) < offload.LARGE_BODY_BYTES:
        return jsonrpc.loads(body)
    return await offload.on_worker(jsonrpc.loads, body)


async def read_posted(ex: Exchange, limits: BodyLimits) -> Posted:
    """Content type, `Accept`, size, values, JSON, a single message with a valid envelope — or a precise
    refusal. The values taken for a large body are `ex.values_held`, which the endpoint gives back."""
    ctype = (ex.header(b"content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType("Unsupported Media Type: Content-Type must be application/json")
    accept = (ex.header(b"accept") or "").lower()
    if "application/json" not in accept and "*/*" not in accept:
        raise NotAcceptable("Not Acceptable: Accept must include application/json and text/event-stream")
    wants_sse = "text/event-stream" in accept or "*/*" in accept
    try:
        body = await read_body(ex.receive, limits.max_bytes)
    except BodyTooLarge:
        raise PayloadTooLarge(f"Payload Too Large: the body exceeds {limits.max_bytes} bytes") from None
    ex.values_held = await admit(body, limits)
    message = await parse_body(body)
    if isinstance(message, list):
        raise BadRequest("Invalid Request: JSON-RPC batches are not supported; send one message per POST")
    if isinstance(message, dict):
        ex.message_id = message.get("id")  # every refusal from here on answers this id
    kind = jsonrpc.kind_of(message)
    return Posted(message, kind, wants_sse)
