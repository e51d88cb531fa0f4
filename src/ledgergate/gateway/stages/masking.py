"""masking (response side): everything an answer carries, masked with the caller's profile.

Every part of a result is masked, not only the fields where a method's data usually lives: a server
that puts an account number in a result's `_meta`, in a field of its own, in a prompt's description
or in a tool's description reached the caller in the clear while its ledger copy was masked.
Definitions (the four list answers, `initialize` and `server/discover`) are scanned string by string
without what a key name implies: a schema's `"ssn": {"type": "string"}` names a field, it holds no
SSN, and forcing it would leave the caller a schema reading `"type": "[US_SSN]"`. Error texts are
masked too, and an answer with both a result and an error (JSON-RPC allows one) keeps only the error.

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

from ledgergate.gateway import offload
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.base import MaskingPort
from ledgergate.upstream.base import Message

#: answers that describe what a server offers rather than carry data: scanned without key forcing
DEFINITIONS = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list",
                         "initialize", "server/discover"})


class MaskResponse:
    def __init__(self, masker: MaskingPort) -> None:
        self.masker = masker

    async def on_response(self, call: Call, response: Message) -> Message:
        if "error" in response and "result" in response:  # JSON-RPC holds one or the other: the error goes
            response = {k: v for k, v in response.items() if k != "result"}
        call.clear_response = response
        payload = ledger_payload(response)
        if offload.is_large(payload):
            ledger_view, masked, counts = await offload.on_worker(self._both, call, response, payload)
        else:
            ledger_view, masked, counts = self._both(call, response, payload)
        call.ledger_view = (response, ledger_view)
        call.masked = counts
        return masked

    def _both(self, call: Call, response: Message, payload: Any) -> tuple[Any, Message, dict[str, int]]:
        """The ledger's view of the answer, then the caller's, when the ledger's pass found anything.
        A definition is recorded as the caller is sent it, string by string (`mask_definitions`): forced by
        key names, the ledger held schemas reading `"type": "[US_SSN]"` that no client ever received."""
        if call.method in DEFINITIONS and "error" not in response:
            ledger_view, found = mask_definitions(self.masker, payload, None)
        else:
            ledger_view, found = self.masker.mask_for_ledger(payload)
        if not found:  # nothing any detector recognises: the caller's profile finds nothing either
            return ledger_view, response, {}
        masked, counts = mask_response(self.masker, call.method, response, call.mask_profile)
        return ledger_view, masked, counts


def ledger_payload(response: Message) -> Any:
    """What of an answer the ledger records: its error if it has one (an answer holding both is
    forwarded as its error alone, `mask_response`), else its result."""
    return response["error"] if "error" in response else response.get("result")


def mask_response(masker: MaskingPort, method: str, response: Message,
                  profile: str | None) -> tuple[Message, dict[str, int]]:
    if profile is None:
        return response, {}
    if "error" in response:
        masked_error, found = masker.mask(response["error"], profile)
        out = {k: v for k, v in response.items() if k != "result"}
        out["error"] = masked_error
        return out, found
    if "result" not in response:
        return response, {}
    if method in DEFINITIONS:
        result, found = mask_definitions(masker, response["result"], profile)
    else:
        result, found = masker.mask(response["result"], profile)
    return {**response, "result": result}, found


def mask_definitions(masker: MaskingPort, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
    """`value` with every string and number scanned on its own (so no key forces a detector), keys
    included (profile None: the ledger's); an explicit stack, so a deep definition cannot exhaust the
    interpreter's."""
    counts: dict[str, int] = {}

    def leaf(item: Any) -> Any:
        if isinstance(item, (str, int, float)) and not isinstance(item, bool):
            masked, found = masker.mask(item, profile)
            for name, n in found.items():
                counts[name] = counts.get(name, 0) + n
            return masked
        return item

    root: list[Any] = [None]
    todo: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while todo:
        source, into, slot = todo.pop()
        if isinstance(source, dict):
            copy: dict[Any, Any] = {}
            for key, item in source.items():
                name = leaf(key)
                while name in copy:  # two keys masked alike: the later ones are told apart
                    name = f"{name} #"
                copy[name] = None
                todo.append((item, copy, name))
            into[slot] = copy
        elif isinstance(source, (list, tuple)):
            items: list[Any] = [None] * len(source)
            todo.extend((item, items, i) for i, item in enumerate(source))
            into[slot] = items
        else:
            into[slot] = leaf(source)
    return root[0], counts


def mask_params(masker: MaskingPort, message: Message, profile: str | None) -> tuple[Message, dict[str, int]]:
    """A notification's or server request's params, masked with the caller's profile."""
    if profile is None or "params" not in message:
        return message, {}
    params, counts = masker.mask(message["params"], profile)
    return {**message, "params": params}, counts
