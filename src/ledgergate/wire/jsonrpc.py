"""JSON-RPC 2.0 message shapes as plain dicts: parse, classify, build.

The gateway forwards messages it does not fully model, so it works on dicts
(parsed with orjson) and only checks the envelope; method-specific validation
belongs to the upstream server.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from ledgergate.errors import INVALID_REQUEST, PARSE_ERROR, GatewayError

Message = dict[str, Any]
Kind = Literal["request", "notification", "response"]


class ParseError(GatewayError):
    http_status = 400
    rpc_code = PARSE_ERROR


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Parse error: the body is not valid JSON ({exc.msg} at byte {exc.pos})") from None


def dumps(message: Any) -> bytes:
    return orjson.dumps(message)


def kind_of(message: Any) -> Kind:
    """Classify one message or raise a precise INVALID_REQUEST."""
    if not isinstance(message, dict):
        raise GatewayError("Invalid Request: a JSON-RPC message must be an object", rpc_code=INVALID_REQUEST)
    if message.get("jsonrpc") != "2.0":
        raise GatewayError('Invalid Request: "jsonrpc" must be "2.0"', rpc_code=INVALID_REQUEST)
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise GatewayError('Invalid Request: "method" must be a non-empty string', rpc_code=INVALID_REQUEST)
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            raise GatewayError('Invalid Request: "params" must be an object', rpc_code=INVALID_REQUEST)
        if "id" not in message:
            return "notification"
        if not _valid_id(message["id"]):
            raise GatewayError('Invalid Request: "id" must be a string or an integer', rpc_code=INVALID_REQUEST)
        return "request"
    if "id" in message and ("result" in message or "error" in message):
        return "response"
    raise GatewayError("Invalid Request: not a request, notification or response", rpc_code=INVALID_REQUEST)


def _valid_id(value: Any) -> bool:
    return (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)))


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
