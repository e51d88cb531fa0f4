"""What the gateway needs from a protected server, whatever its transport or protocol era.

An upstream *session* is one logical conversation with the server: for a
handshake-era server it is an initialized session (HTTP `Mcp-Session-Id` or one
stdio child process); for a 2026-07-28 server it is stateless and merely carries
the client's capabilities. `call()` sends one request and yields everything the
server sends back for it — notifications, server-to-client requests, and finally
the response — so the pipeline can mask and record each message as it passes.
"""

from __future__ import annotations

import abc
import itertools
import os.path
from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from ledgergate.errors import UpstreamError

Message = dict[str, Any]
Era = Literal["handshake", "modern"]

MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
MODERN_META_KEYS = (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO)

GATEWAY_CLIENT_INFO = {"name": "ledgergate", "version": "0.1.0"}
FULL_CLIENT_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}


#: the most of one text an upstream sends beside its answers (the words of a failure, a stderr line) that is
#: masked: a server cannot make the gateway mask megabytes for one line
MAX_QUOTED_CHARS = 32 * 1024
#: masked beyond that bound as well, so that a value straddling it is seen whole (longer than any value
#: a detector matches, with the context it reads around it)
QUOTE_OVERLAP = 4 * 1024
#: where a quoted text was shortened
CUT_MARK = " …[cut]"


def initialize_result(final: Message | None, who: str) -> dict[str, Any]:
    """The `result` of an upstream's answer to `initialize`, or an UpstreamError saying what came instead.

    An answer of any other shape (`"error": "text"`, `"result": []`) raised AttributeError here and
    became a 500 with no word of which server: a server's answer is input like a client's."""
    if final is not None and isinstance(final.get("result"), dict):
        return final["result"]  # type: ignore[no-any-return]
    error = (final or {}).get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        detail = error["message"]
    elif final is None:
        detail = "no answer"
    elif "result" in final:
        detail = "a result that is not an object"
    else:
        detail = "an answer with neither a result nor an error object"
    raise UpstreamError(f"{who} initialize failed: {detail}")


def mask_quoted(text: str, mask: Callable[[str], str], shown: int | None = None,
                limit: int = MAX_QUOTED_CHARS) -> str:
    """`text` as a client, a log line or a record may quote it: masked whole first, shortened after (to
    `shown` characters), never the other way round.

    Detectors match whole values only: text cut before it is masked ends in a partial value no
    detector matches ("123-45-67" of an SSN), and another view that keeps its last digits
    ("***-**-6789") gives the rest. So only masked text is ever cut. Past `limit` characters (memory and
    CPU, for a hostile server) the head is masked twice, up to the limit and `QUOTE_OVERLAP` beyond it,
    and what both agree on is kept: a value straddling the limit is masked in the longer one and not in
    the shorter, so the kept part ends before it.
    """
    if len(text) <= limit:
        masked = mask(text)
    else:
        head = mask(text[:limit])
        longer = mask(text[:limit + QUOTE_OVERLAP])
        masked = os.path.commonprefix([head, longer]) + CUT_MARK
    if shown is not None and len(masked) > shown:
        masked = masked[:max(shown - len(CUT_MARK), 0)] + CUT_MARK
    return masked


class UpstreamTimeout(UpstreamError):
    """The upstream sent nothing for a call (or a session's opening) within the server's `timeout`:
    a 504, recorded as the call's outcome. The server may still be working on it."""

    http_status = 504


class UpstreamSessionLost(UpstreamError):
    """The server no longer knows our session (HTTP 404, process exit): the next call starts a new one."""

    #: the server said so in answer to this very request, before any of its answer: the request was not
    #: run, so it may be sent once more on a new session (Streamable HTTP's 404 for an unknown
    #: `Mcp-Session-Id`); False whenever the server may have run it (a stream or process lost mid-call)
    unprocessed: bool = False


@dataclass
class ClientHello:
    """What the client told us about itself; replayed upstream when a session is (re)opened."""

    protocol_version: str = LATEST_HANDSHAKE
    capabilities: dict[str, Any] = field(default_factory=dict)
    client_info: dict[str, Any] = field(default_factory=lambda: dict(GATEWAY_CLIENT_INFO))

    def initialize_params(self) -> dict[str, Any]:
        version = self.protocol_version if self.protocol_version in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        return {"protocolVersion": version, "capabilities": self.capabilities, "clientInfo": self.client_info}


#: the caller on whose behalf this task calls the upstream (`Call.caller`): set by the bridge, read as the
#: call goes out when no `owner` is given, so that only that caller can name the call in a cancellation
#: (`InflightIds`). A handshake client's gateway session id; for a stateless (2026-07-28) call the call
#: itself, which only the gateway names, when its client hangs up (that revision has no cancellation).
CALLER: ContextVar[str | None] = ContextVar("ledgergate_upstream_caller", default=None)


class UpstreamSession(abc.ABC):
    __slots__ = ()  # so that a subclass can do without an instance dict (thousands may be open)

    era: Era
    #: the upstream's `initialize` result (handshake) or `server/discover` result (modern)
    server_hello: dict[str, Any]

    @abc.abstractmethod
    def call(self, request: Message, owner: str | None = None) -> AsyncGenerator[Message, None]:
        """Send a request; yield notifications and server requests, then the final response.

        `owner` names the client that sent it (its gateway session; by default `CALLER`): only that
        client's cancellation can name this call (`InflightIds`)."""

    @abc.abstractmethod
    async def notify(self, notification: Message, owner: str | None = None) -> bool:
        """Send a client's notification (`owner`: the client's gateway session); False when it was not
        sent because it must not be (`outbound`)."""

    def outbound(self, notification: Message, owner: str | None = None) -> Message | None:
        """`notification` from `owner`'s client as this server must receive it, or None when it must not
        be sent at all (a cancellation naming no call of that client's in flight here)."""
        return strip_modern_meta(notification)

    @abc.abstractmethod
    async def reply(self, response: Message) -> None:
        """Answer a server-to-client request the server sent on this session."""

    @abc.abstractmethod
    def listen(self, last_event_id: str | None = None) -> AsyncGenerator[Message, None]:
        """Messages the server sends outside any request (the GET stream)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    def alive(self) -> bool:
        return True


CANCELLED = "notifications/cancelled"


def _request_key(value: Any) -> str | int | None:
    """`value` if it can be a client's request id (a string or an integer), else None. Not a bool, not a
    float: `True == 1` and `1.0 == 1` in Python, and an id the client never used must name nothing."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


class InflightIds:
    """(client, client request id) → upstream request id for calls in flight, so a cancellation names the
    right one.

    The gateway numbers every request afresh towards the server (`IdMap`), so a client's id means
    nothing there: a `notifications/cancelled` is sent on only with the upstream id of a call *that
    client* has in flight, and is dropped otherwise. Forwarded as it came, its `requestId` was read in
    the gateway's own numbering and cancelled whichever call had that number, another client's
    included. Ids are scoped to the client (its gateway session) that issued them, so two clients on
    one upstream session may use the same ids; the first call under an id keeps it until it ends.
    """

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str | int], int] = {}

    def add(self, owner: str | None, request_id: Any, upstream_id: int) -> None:
        key = _request_key(request_id)
        if owner is not None and key is not None:
            self.ids.setdefault((owner, key), upstream_id)

    def discard(self, owner: str | None, request_id: Any, upstream_id: int) -> None:
        key = _request_key(request_id)
        if owner is not None and key is not None and self.ids.get((owner, key)) == upstream_id:
            del self.ids[(owner, key)]

    def translate_cancel(self, notification: Message, owner: str | None) -> Message | None:
        """`notification` with the upstream's id for the call it cancels; None for a cancellation that
        names no call of `owner`'s in flight (never sent: its id would be read in the upstream's numbering)."""
        if notification.get("method") != CANCELLED:
            return notification
        params = notification.get("params")
        key = _request_key(params.get("requestId")) if isinstance(params, dict) else None
        upstream_id = self.ids.get((owner, key)) if owner is not None and key is not None else None
        if upstream_id is None or not isinstance(params, dict):
            return None
        return {**notification, "params": {**params, "requestId": upstream_id}}


def drop_cancel(notification: Message, owner: str | None, inflight: InflightIds | None) -> Message | None:
    """`InflightIds.translate_cancel` for a session whose map may not exist (no call in flight): a
    cancellation then names nothing and is dropped; any other notification passes."""
    if inflight is None:
        return None if notification.get("method") == CANCELLED else notification
    return inflight.translate_cancel(notification, owner)


class IdMap:
    """Upstream-side request ids, unique per upstream session, mapped back to the caller's.

    Many client requests can share one upstream session (and stdio has a single
    pipe), so the caller's ids would collide; every request gets a fresh id.
    """

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        return next(self._counter)


def rewrite_id(message: Message, new_id: Any) -> Message:
    out = dict(message)
    out["id"] = new_id
    return out


def strip_modern_meta(request: Message) -> Message:
    """Remove the 2026-07-28 per-request envelope before a handshake-era server sees it."""
    params = request.get("params")
    if not isinstance(params, dict):
        return request
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not any(k in meta for k in MODERN_META_KEYS):
        return request
    new_meta = {k: v for k, v in meta.items() if k not in MODERN_META_KEYS}
    new_params = {k: v for k, v in params.items() if k != "_meta"}
    if new_meta:
        new_params["_meta"] = new_meta
    return {**request, "params": new_params}


def add_modern_meta(request: Message, hello: ClientHello) -> Message:
    """Stamp the 2026-07-28 per-request envelope for a stateless server."""
    params = dict(request.get("params") or {})
    meta = dict(params.get("_meta") or {})
    meta[META_PROTOCOL_VERSION] = MODERN_VERSION
    meta.setdefault(META_CLIENT_CAPABILITIES, hello.capabilities)
    meta.setdefault(META_CLIENT_INFO, hello.client_info)
    params["_meta"] = meta
    return {**request, "params": params}
