"""masking (response side): the data an answer carries, masked with the caller's profile.

Definitions (tool schemas, list entries) pass untouched; error texts are masked too.

One pass serves the ledger and, most of the time, the caller: the answer is masked with the
ledger's profile first (every detector, which the audit stage records), and when that pass finds
nothing, the caller's profile — a subset of the same detectors over a part of the same value —
finds nothing either, so the answer goes out as it came and no second walk is made. Only an
answer with a finding is walked again with the caller's profile (its operator and its detectors).
`tests/unit/test_masking_one_pass.py` holds the subset property over generated values (sensitive
fragments of every detector mixed with arbitrary text and shapes) and 66 caller profiles.
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
        ledger_view, found = self.masker.mask_for_ledger(ledger_payload(response))
        call.ledger_view = (response, ledger_view)
        if not found:  # nothing any detector recognises: the caller's profile finds nothing either
            call.masked = {}
            return response
        masked, call.masked = mask_response(self.masker, call.method, response, call.mask_profile)
        return masked


def ledger_payload(response: Message) -> Any:
    """What of an answer the ledger records: its result, or its error."""
    return response.get("result", response.get("error"))


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
