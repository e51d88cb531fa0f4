"""Errors every stage may raise, each carrying what the client should see.

Stages know nothing of HTTP, but each refusal has one right answer on the wire:
the transport maps `http_status` and `rpc_code` without guessing. Messages are
written for the caller and never contain secrets or raw sensitive data.
"""

from __future__ import annotations

from typing import Any

# JSON-RPC 2.0 standard codes and the MCP/server-defined range (-32000..-32099).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHORIZED = -32001
FORBIDDEN = -32003
APPROVAL_REQUIRED = -32010
UPSTREAM_UNAVAILABLE = -32011
AUDIT_UNAVAILABLE = -32012
SESSION_NOT_FOUND = -32013
RATE_LIMITED = -32014
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
#: a call refused, or cut off, because the gateway is shutting down (SIGTERM: `app.Gateway.drain`)
SHUTTING_DOWN = -32016
#: the answer to a request its client cancelled (what the MCP SDKs' handshake-era servers answer)
REQUEST_CANCELLED = -32800


class GatewayError(Exception):
    """A refusal with a precise, caller-safe message."""

    http_status: int = 400
    rpc_code: int = INVALID_REQUEST
    #: extra response headers the answer needs (e.g. `Allow`, `WWW-Authenticate`)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    #: a ledger record of this refusal exists (a stage wrote it before raising); the transport
    #: records every other refusal of an authenticated request itself
    recorded: bool = False

    def __init__(self, message: str, *, data: dict[str, Any] | None = None,
                 http_status: int | None = None, rpc_code: int | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if http_status is not None:
            self.http_status = http_status
        if rpc_code is not None:
            self.rpc_code = rpc_code
        if headers:
            self.headers = headers


class AuthError(GatewayError):
    """Identity could not be established. `reason` is a short machine word for the audit record."""

    http_status = 401
    rpc_code = UNAUTHORIZED

    def __init__(self, message: str, reason: str = "invalid_token") -> None:
        super().__init__(message)
        self.reason = reason


class ForbiddenError(GatewayError):
    http_status = 403
    rpc_code = FORBIDDEN


class PolicyDenied(GatewayError):
    """Policy refused; still a 200 on the wire with a JSON-RPC error, so clients show it."""

    http_status = 200
    rpc_code = FORBIDDEN


class ApprovalPending(GatewayError):
    http_status = 200
    rpc_code = APPROVAL_REQUIRED


class ApprovalDenied(GatewayError):
    """The approval a call waited for was denied, expired or used; 200 with a JSON-RPC error naming it."""

    http_status = 200
    rpc_code = FORBIDDEN


class UpstreamError(GatewayError):
    """The upstream failed. Its message may quote the upstream's own words (the JSON-RPC error of an
    HTTP error answer), which can carry the data masking exists for: the gateway masks it before a
    client or a log line sees it (`Pipeline.masked_error`)."""

    http_status = 502
    rpc_code = UPSTREAM_UNAVAILABLE
    #: the message has been through the masker
    masked: bool = False


class CallCancelled(GatewayError):
    """The client cancelled the call (`notifications/cancelled`) and the gateway ended it: its outcome is
    recorded as cancelled, and a client still reading gets this JSON-RPC error as the answer."""

    http_status = 200
    rpc_code = REQUEST_CANCELLED


class LedgerUnavailable(GatewayError):
    """The ledger could not make a record durable: fail closed."""

    http_status = 503
    rpc_code = AUDIT_UNAVAILABLE


class RateLimited(GatewayError):
    http_status = 429
    rpc_code = RATE_LIMITED


# ── refusals of the HTTP exchange itself (the transport raises these; one function answers them) ──
class BadRequest(GatewayError):
    http_status = 400
    rpc_code = INVALID_REQUEST


class HeaderMismatch(GatewayError):
    http_status = 400
    rpc_code = HEADER_MISMATCH


class NotFound(GatewayError):
    http_status = 404
    rpc_code = INVALID_REQUEST


class MethodNotAllowed(GatewayError):
    http_status = 405
    rpc_code = INVALID_REQUEST

    def __init__(self, allow: str) -> None:
        super().__init__("Method Not Allowed", headers=((b"allow", allow.encode()),))


class NotAcceptable(GatewayError):
    http_status = 406
    rpc_code = INVALID_REQUEST


class PayloadTooLarge(GatewayError):
    http_status = 413
    rpc_code = INVALID_REQUEST


class UnsupportedMediaType(GatewayError):
    http_status = 415
    rpc_code = INVALID_REQUEST
