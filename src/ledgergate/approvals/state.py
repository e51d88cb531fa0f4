"""The `requestState` a 2026-07-28 client carries while its call waits for a human.

The state is the client's to hold and ours to trust only after checking: it is
sealed with HMAC-SHA256 under a key every replica derives from the ledger's
HMAC key, and it binds the approval (or the question asked), the principal and
an expiry. Any replica can open it without a lookup; a state presented by
another identity, altered, or past its expiry is refused, and nothing is
consumed by a refusal (the approval it names stays as it is).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

PREFIX = "lga1."


class StateRefused(ValueError):
    """The state is not ours, not this caller's, or too old: refuse the call, change nothing."""


@dataclass(frozen=True)
class HeldState:
    #: "approval" — waiting for the approval `ref`; "justify" — asked for a justification for binding `ref`
    kind: str
    ref: str
    expires: float


def _principal_tag(principal_key: str) -> str:
    return hashlib.sha256(principal_key.encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, state: HeldState, principal_key: str) -> str:
    body = json.dumps({"k": state.kind, "r": state.ref, "e": int(state.expires), "p": _principal_tag(principal_key)},
                      separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(body)}.{_b64(mac)}"


def is_ours(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def unseal(key: bytes, token: str, principal_key: str, now: float) -> HeldState:
    try:
        body_b64, mac_b64 = token[len(PREFIX):].split(".", 1)
        body, mac = _unb64(body_b64), _unb64(mac_b64)
    except ValueError:
        raise StateRefused("requestState is malformed") from None
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise StateRefused("requestState was not issued by this gateway or was altered")
    fields = json.loads(body)
    if not hmac.compare_digest(str(fields.get("p")), _principal_tag(principal_key)):
        raise StateRefused("requestState belongs to another caller")
    if float(fields.get("e", 0)) < now:
        raise StateRefused("requestState has expired; send the call again without it")
    return HeldState(str(fields["k"]), str(fields["r"]), float(fields["e"]))
