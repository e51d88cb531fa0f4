"""The call being carried: one client request and what the stages learned about it on the way."""

from __future__ import annotations

import itertools
import secrets
import time
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ledgergate.policy.decision import Decision
from ledgergate.policy.rules import request_target
from ledgergate.principal import Principal
from ledgergate.upstream.base import Message

_REQUEST_PREFIX = "req_" + secrets.token_hex(4)
#: how a stateless call names itself as the caller of its upstream call (`Call.caller`); a gateway session
#: id (the handshake era's caller) never starts so
_STATELESS_CALLER = "call:"
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """A short id the caller can quote to support; it names the ledger records of this request.
    Unique per process (random prefix) without a system call per request."""
    return f"{_REQUEST_PREFIX}{next(_request_counter):x}"


def arguments_of(method: str, params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The caller-chosen values a method carries (what policy conditions and the ledger digest see)."""
    if not params:
        return None
    if method in ("tools/call", "prompts/get"):
        args = params.get("arguments")
        return args if isinstance(args, Mapping) else None
    if method == "completion/complete":
        return params.get("argument")
    return None


#: `_meta` keys the protocol itself defines and a client or the gateway sets per attempt (a progress token,
#: the 2026-07-28 envelope: protocol version, client capabilities and info, log level; a related task): not
#: the call's content, so neither recorded with it nor bound by its approval. Named one by one, not by their
#: `io.modelcontextprotocol/` prefix: a key under that prefix the protocol does not define still reaches
#: tool code, so it is recorded and bound like any other key a caller chose. Each is the protocol's only
#: while its value has the protocol's shape (`_protocol_shaped`): a value a caller stuffed (a progress token
#: of prose, a clientInfo with fields of its own) is the caller's, recorded and bound
PROTOCOL_META_KEYS = frozenset({
    "progressToken",
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/logLevel",
    "io.modelcontextprotocol/related-task",
})
#: how much text a protocol key's value may hold and still pass as the protocol's: an identifier, a name,
#: a version (JSON-encoded, for the two objects)
_SHORT = 256
_OBJECT_SHORT = 1024
_LOG_LEVELS = frozenset({"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"})
_CLIENT_INFO_KEYS = frozenset({"name", "version", "title", "description", "websiteUrl", "icons"})
#: the capabilities a client declares (`experimental` is free-form by the spec, so a caller's)
_CAPABILITY_KEYS = frozenset({"roots", "sampling", "elicitation", "tasks", "extensions"})


def _short_json(value: Any) -> bool:
    try:
        return len(orjson.dumps(value)) <= _OBJECT_SHORT
    except (TypeError, orjson.JSONEncodeError):
        return False


def _protocol_shaped(key: str, value: Any) -> bool:
    """Whether `value` is what the protocol puts under `key` (one of PROTOCOL_META_KEYS)."""
    if key == "progressToken":
        return (isinstance(value, str) and len(value) <= _SHORT) or (type(value) is int)
    name = key.removeprefix("io.modelcontextprotocol/")
    if name == "protocolVersion":
        return isinstance(value, str) and len(value) <= 64
    if name == "logLevel":
        return value in _LOG_LEVELS
    if name == "related-task":
        return isinstance(value, Mapping) and set(value) == {"taskId"} and isinstance(value["taskId"], str) \
            and len(value["taskId"]) <= _SHORT
    keys = _CLIENT_INFO_KEYS if name == "clientInfo" else _CAPABILITY_KEYS
    return isinstance(value, Mapping) and all(k in keys for k in value) and _short_json(value)


def caller_meta(params: Mapping[str, Any]) -> Any:
    """The `_meta` a caller chose beyond the protocol's own keys, or None when there is none (a typical call,
    so that costs one lookup). SDK servers hand `_meta` to tool code, so this is part of what the upstream
    acts on: the ledger records it and an approval binds it. A `_meta` that is not an object is returned
    whole (fails closed: recorded and bound as sent)."""
    meta = params.get("_meta")
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        return meta
    if all(key in PROTOCOL_META_KEYS and _protocol_shaped(key, value) for key, value in meta.items()):
        return None  # most calls: found so without building anything
    return {k: v for k, v in meta.items() if k not in PROTOCOL_META_KEYS or not _protocol_shaped(k, v)}


@dataclass
class Call:
    """One client request on its way through the stages.

    `target` and `arguments` are read from the message once, when the call is made, so every
    stage judges and records the same values. `decision` is the policy stage's; `answered` is
    set by a response stage that replaced the answer with its own (later stages then leave it).
    """

    server: str
    principal: Principal
    message: Message
    session_id: str | None = None
    #: which protocol era the client speaks, and the capabilities it declared
    era: Literal["handshake", "modern"] = "handshake"
    client_capabilities: Mapping[str, Any] = field(default_factory=dict)
    #: for a handshake client that can answer server requests mid-call: sends one (the message to
    #: yield) and gives the future its answer resolves
    ask_client: Callable[[str, dict[str, Any]], tuple[Message, asyncio.Future[Message]]] | None = None
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    decision: Decision | None = None
    answered: bool = False
    #: the answer as the upstream gave it, before the caller's masking (the ledger masks its own view)
    clear_response: Message | None = None
    masked: dict[str, int] = field(default_factory=dict)
    #: (the answer, its payload as the ledger's profile masks it): the masking stage's one ledger pass,
    #: which the audit stage records instead of masking the same answer again
    ledger_view: tuple[Message, Any] | None = None
    #: the approval this call runs under, once the approval stage released it
    approval_id: str | None = None
    #: why the caller says the call is needed (approval rules may require it)
    justification: str | None = None
    #: runs the rest of the chain from `next_stage` (set by the pipeline): a stage that answers now and
    #: lets the call run later (a task waiting for approval) resumes it with this
    resume: Callable[[Call], Awaitable[Message]] | None = None
    next_stage: int = 0
    target: str | None = field(init=False)
    arguments: Mapping[str, Any] | None = field(init=False)

    def __post_init__(self) -> None:
        self.target = request_target(self.method, self.params)
        self.arguments = arguments_of(self.method, self.params)

    @property
    def method(self) -> str:
        return self.message["method"]

    @property
    def params(self) -> dict[str, Any]:
        return self.message.get("params") or {}

    @property
    def mask_profile(self) -> str | None:
        return self.decision.mask if self.decision is not None else None

    @property
    def caller(self) -> str | None:
        """Who the upstream knows this call's upstream request by (`upstream.base.CALLER`, `InflightIds`), so that
        a cancellation can name it with the upstream's id: a handshake client's session; for a stateless
        (2026-07-28) call, the call itself. No client can name a stateless call that way (that revision has
        no cancellation message): only the gateway does, when its client hangs up (`pipeline.Flight.hang_up`)."""
        if self.era == "modern":
            return _STATELESS_CALLER + self.request_id
        return self.session_id

    def latency_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)
