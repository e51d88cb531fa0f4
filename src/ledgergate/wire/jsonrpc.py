"""JSON-RPC 2.0 message shapes as plain dicts: parse, classify, build.

The gateway forwards messages it does not fully model, so it works on dicts
(parsed with orjson) and only checks the envelope; method-specific validation
belongs to the upstream server.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import orjson

from ledgergate.errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, GatewayError

Message = dict[str, Any]
Kind = Literal["request", "notification", "response"]


class ParseError(GatewayError):
    http_status = 400
    rpc_code = PARSE_ERROR


#: deeper messages are refused at the edge. The hops behind have lower limits than JSON itself: the
#: official Python SDK's servers drop a request nested 200 deep without any answer (pydantic's limit),
#: which left the client waiting for the upstream timeout; 128 is below every hop measured
MAX_DEPTH = 128
_LONG_INT = re.compile(rb"[0-9]{19}")  # orjson reads integers beyond 64 bits (19+ digits) as floats
_LONG_INT_STR = re.compile(r"[0-9]{19}")


def parse(data: bytes | str) -> Any:
    """`orjson.loads`, except that no number changes: orjson turns integers beyond the 64-bit range into
    floats, so when the text holds a run of 19 digits it is read again with Python's json, which keeps
    integers exact (floats are the same doubles either way). orjson read it first, so the text is
    valid JSON by its stricter rules. Raises `orjson.JSONDecodeError` like `orjson.loads`."""
    value = orjson.loads(data)
    found = _LONG_INT.search(data) if isinstance(data, bytes) else _LONG_INT_STR.search(data)
    if found is not None:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            pass  # cannot happen for text orjson accepted within MAX_DEPTH; keep orjson's reading
    return value


def deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (the outermost is level 1); an explicit stack, so a
    value nested past the interpreter's recursion limit is measured too."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def loads(body: bytes) -> Any:
    try:
        value = parse(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Parse error: the body is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if isinstance(value, dict | list) and body.count(b"[") + body.count(b"{") > MAX_DEPTH \
            and deeper_than(value, MAX_DEPTH):
        raise GatewayError(f"Invalid Request: the message nests deeper than {MAX_DEPTH} levels",
                           rpc_code=INVALID_REQUEST)
    return value


def dumps(message: Any) -> bytes:
    """orjson's bytes; what orjson cannot write (integers beyond 64 bits, nesting beyond its 254 levels)
    is written by Python's json, exactly: no number is changed on its way through."""
    try:
        return orjson.dumps(message)
    except orjson.JSONEncodeError:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def kind_of(message: Any) -> Kind:
    """Classify one message or raise a precise INVALID_REQUEST."""
    if not isinstance(message, dict):
        raise GatewayError("Invalid Request: a JSON-RPC message must be an object", rpc_code=INVALID_REQUEST)
    if message.get("jsonrpc") != "2.0":
        raise GatewayError('Invalid Request: "jsonrpc" must be "2.0"', rpc_code=INVALID_REQUEST)
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise GatewayError('Invalid Request: "method" must be a non-empty string', rpc_code=INVALID_REQUEST)
        if "result" in message or "error" in message:
            # a request (or notification) and a response at once (JSON-RPC 2.0 §4, §5): which one it is
            # depends on who reads it, so it is neither
            raise GatewayError('Invalid Request: a message with a "method" cannot carry a "result" or an "error"',
                               rpc_code=INVALID_REQUEST)
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            raise GatewayError('Invalid Request: "params" must be an object', rpc_code=INVALID_REQUEST)
        if params is not None and params.get("_meta") is not None:
            _check_meta(params["_meta"])
        if "id" not in message:
            if message["method"] in _NAMES_A_REQUEST:
                _check_request_ref(message["method"], params)
            return "notification"
        if not _valid_id(message["id"]):
            raise GatewayError('Invalid Request: "id" must be a string or an integer', rpc_code=INVALID_REQUEST)
        return "request"
    if "id" in message and ("result" in message or "error" in message):
        return "response"
    raise GatewayError("Invalid Request: not a request, notification or response", rpc_code=INVALID_REQUEST)


def _check_meta(meta: Any) -> None:
    """MCP's `_meta` is an object, and a `progressToken` in it a string or a number (the schema's
    ProgressToken): the gateway files a call's progress under its token, so a token of another type
    is refused here with the call's other envelope errors, not met later inside the relay."""
    if not isinstance(meta, dict):
        raise GatewayError('Invalid params: "params._meta" must be an object', rpc_code=INVALID_PARAMS)
    token = meta.get("progressToken")
    if token is not None and (isinstance(token, bool) or not isinstance(token, str | int | float)):
        raise GatewayError('Invalid params: "params._meta.progressToken" must be a string or a number',
                           rpc_code=INVALID_PARAMS)


#: notifications that name one of the client's requests by its id (the gateway looks it up)
_NAMES_A_REQUEST = frozenset({"notifications/cancelled"})


def _check_request_ref(method: str, params: Any) -> None:
    """`requestId` of a cancellation is a request's id (a string or an integer): an object there was
    looked up in the gateway's tables of calls and failed with a 500 (unhashable)."""
    ref = params.get("requestId") if isinstance(params, dict) else None
    if ref is not None and not _valid_id(ref):
        raise GatewayError(f'Invalid params: "params.requestId" of {method} must be a request id (a string or an '
                           "integer)", rpc_code=INVALID_PARAMS)


def _valid_id(value: Any) -> bool:
    return (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)))


def valid_id(value: Any) -> bool:
    """An id MCP allows for a request: a string or an integer (not a boolean, a float, null or a container)."""
    return _valid_id(value)


def relay_problem(message: Message) -> str | None:
    """Why a message a server sent, with a `method`, is not a request or notification the gateway may
    relay (None: it is one). The upstream connectors tell a server's requests and notifications from
    the answers to their own requests by `"method" in message`; a message that also carries a `result`
    or an `error` is both (JSON-RPC 2.0 §4, §5), and relayed as a server request it went to the client
    under the call's own id while the call lost its answer. Such a message is dropped (and logged), as
    an event that is not JSON is; responses (no `method`) are judged where they are awaited, by id."""
    method = message.get("method")
    if not isinstance(method, str) or not method:
        return 'a "method" that is not a non-empty string'
    if "result" in message or "error" in message:
        return 'a "method" and a "result" or "error" at once'
    params = message.get("params")
    if params is not None and not isinstance(params, dict):
        return '"params" that are not an object'
    if "id" in message and not _valid_id(message["id"]):
        return 'a request "id" that is not a string or an integer'
    return None


def error(id_: Any, code: int, message: str, data: Any = None) -> Message:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def result(id_: Any, value: Any) -> Message:
    return {"jsonrpc": "2.0", "id": id_, "result": value}


def notification(method: str, params: dict[str, Any] | None = None) -> Message:
    msg: Message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def is_final_for(message: Message, request_id: Any) -> bool:
    return "method" not in message and message.get("id") == request_id and ("result" in message or "error" in message)
