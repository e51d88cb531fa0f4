"""masking (response side): the data an answer carries, masked with the caller's profile.

Definitions (tool schemas, list entries) pass untouched; error texts are masked too.
"""

from __future__ import annotations

from typing import Any

from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.base import MaskingPort
from ledgergate.upstream.base import Message

#: where data lives in a result
RESULT_DATA = {"tools/call": ("content", "structuredContent"), "resources/read": ("contents",),
               "prompts/get": ("messages",), "completion/complete": ("completion",)}


class MaskResponse:
    def __init__(self, masker: MaskingPort) -> None:
        self.masker = masker

    async def on_response(self, call: Call, response: Message) -> Message:
        call.clear_response = response
        masked, call.masked = mask_response(self.masker, call.method, response, call.mask_profile)
        return masked


def mask_response(masker: MaskingPort, method: str, response: Message,
                  profile: str | None) -> tuple[Message, dict[str, int]]:
    if profile is None:
        return response, {}
    if "error" in response:
        masked_error, found = masker.mask(response["error"], profile)
        return {**response, "error": masked_error}, found
    result = response.get("result")
    fields: tuple[str, ...] | None
    if method == "tasks/result" and isinstance(result, dict):
        # the payload of whatever call the task ran: everything but the envelope is data
        fields = tuple(k for k in result if k != "_meta")
    else:
        fields = RESULT_DATA.get(method)
    if not isinstance(result, dict) or not fields:
        return response, {}
    out: dict[str, Any] = dict(result)
    counts: dict[str, int] = {}
    for name in fields:
        if name in out:
            out[name], found = masker.mask(out[name], profile)
            for key, n in found.items():
                counts[key] = counts.get(key, 0) + n
    return {**response, "result": out}, counts


def mask_params(masker: MaskingPort, message: Message, profile: str | None) -> tuple[Message, dict[str, int]]:
    """A notification's or server request's params, masked with the caller's profile."""
    if profile is None or "params" not in message:
        return message, {}
    params, counts = masker.mask(message["params"], profile)
    return {**message, "params": params}, counts
