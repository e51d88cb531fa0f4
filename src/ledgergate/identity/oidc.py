"""Verifying an OIDC JWT against its issuer's published keys.

Written out by hand (PyJWT supplies only the signature primitives) so that the
order of checks, and so the refusal reason, is ours to choose and test:
format → algorithm allow-list → known issuer → usable keys → signature →
time claims → audience → lifetime → required claims. Nothing is trusted
before the signature is checked except what selects the key (alg, kid, iss),
and none of those can widen what is accepted: `alg` must be in the issuer's
asymmetric allow-list *and* permitted by the key's type, and the token's own
`jku`/`jwk`/`x5u` headers are never followed.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ledgergate.errors import AuthError
from ledgergate.identity.claims import principal_from_claims
from ledgergate.identity.jwks import IssuerKeys, SigningKey
from ledgergate.principal import Principal
from ledgergate.identity.settings import ASYMMETRIC_ALGORITHMS

MAX_TOKEN_BYTES = 16 * 1024
#: the JWS algorithm names (RFC 7518 §3.1, RFC 8037): a refusal quotes one of these, never other header text
_KNOWN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
                               "ES512", "PS256", "PS384", "PS512", "EdDSA", "ES256K", "Ed25519", "Ed448"})


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified token: the principal, when it stops being valid, and the key that signed it."""

    principal: Principal
    valid_until: float
    issuer: IssuerKeys
    key: SigningKey


#: A JWS compact segment: base64url without padding (RFC 7515 §2, §7.1). Nothing else.
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
#: Characters whose 6 bits end a segment of length ≡ 2 (mod 4) with its 4 unused bits zero ...
_END_OF_2 = frozenset("AQgw")
#: ... and of length ≡ 3 (mod 4) with its 2 unused bits zero.
_END_OF_3 = frozenset("AEIMQUYcgkosw048")
#: ECDSA group orders, for the canonical spelling of a signature (see token_cache_key).
_EC_ORDER = {
    "ES256": (32, 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    "ES384": (48, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973),
    "ES512": (66, 0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409),
}


def _strict_b64(part: str) -> bytes | None:
    """The bytes of one segment spelled exactly as RFC 7515 §2 base64url (no padding, nothing
    outside the alphabet, unused trailing bits zero), else None.

    `base64.urlsafe_b64decode` skips characters outside the alphabet and ignores the unused bits
    of the last character, so `sig====`, `sig!!!!`, `si$$$$g` or a changed last character decoded
    to the same bytes: one token had unlimited spellings that all verified, each a miss of the
    verified-token cache. Exactly one spelling decodes here.
    """
    if len(part) % 4 == 1 or not _B64URL.fullmatch(part):
        return None
    rest = len(part) % 4
    if (rest == 2 and part[-1] not in _END_OF_2) or (rest == 3 and part[-1] not in _END_OF_3):
        return None
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        return None


def _b64(part: str) -> bytes:
    raw = _strict_b64(part)
    if raw is None:
        raise AuthError("the token is not a well-formed JWT", "invalid_token")
    return raw


def token_cache_key(token: str) -> str:
    """The one spelling of `token` the verified-token cache is keyed by.

    Segments are decoded strictly (`_strict_b64`), and RSA signatures must be exactly the modulus
    length (SigningKey.verify), so the only second spelling left that verifies is an ECDSA
    signature's twin: (r, s) and (r, n - s) are both valid (ECDSA is malleable, and IdPs sign
    with either). For an ES* token the key is the token with s replaced by min(s, n - s), which
    verifies exactly when the token does; every other string is its own key. Cheap: a split and,
    for ES* tokens only, one short header decode.
    """
    parts = token.split(".")
    if len(parts) != 3 or len(parts[2]) not in (86, 128, 176):  # 64, 96 or 132 signature bytes
        return token
    header_raw = _strict_b64(parts[0])
    signature = _strict_b64(parts[2])
    if header_raw is None or signature is None:
        return token
    try:
        header = orjson.loads(header_raw)
    except orjson.JSONDecodeError:
        return token
    alg = header.get("alg") if isinstance(header, dict) else None
    order = _EC_ORDER.get(alg) if isinstance(alg, str) else None
    if order is None or len(signature) != 2 * order[0]:
        return token
    size, n = order
    s = int.from_bytes(signature[size:], "big")
    if not 0 < s < n or s <= n // 2:
        return token
    low = signature[:size] + (n - s).to_bytes(size, "big")
    return f"{parts[0]}.{parts[1]}.{base64.urlsafe_b64encode(low).rstrip(b'=').decode('ascii')}"


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AuthError(f"the token's {what} is not JSON", "invalid_token") from None
    if not isinstance(value, dict):
        raise AuthError(f"the token's {what} is not a JSON object", "invalid_token")
    return value


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthError(f"the token has no '{name}' claim", "invalid_token")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthError(f"the token's '{name}' claim is not a number", "invalid_token")
    return float(value)


class OidcVerifier:
    """Verifies JWTs from the configured issuers, fetching keys on demand (rate-limited)."""

    def __init__(self, issuers: list[IssuerKeys], clock: Callable[[], float] = time.time) -> None:
        self._by_iss: dict[str, IssuerKeys] = {}
        for keys in issuers:
            self._by_iss[keys.settings.issuer] = keys
            self._by_iss.setdefault(keys.settings.issuer.rstrip("/"), keys)
        self._clock = clock

    async def verify(self, token: str) -> Verified:
        """The verified principal for a compact JWS, or AuthError with the precise reason."""
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("the token is too large", "invalid_token")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise AuthError("the token is not a well-formed JWT", "invalid_token")
        header = _json_object(_b64(parts[0]), "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            # a known name is quoted; anything else is the caller's text (it reaches the ledger and the 401), and a
            # prefix of it could be most of a card number: only its kind is said
            known = isinstance(alg, str) and alg in _KNOWN_ALGORITHMS
            said = repr(alg) if known else "(a name that is no JWS algorithm)"
            raise AuthError(f"signing algorithm {said} is not allowed", "alg_not_allowed")
        if "crit" in header:
            raise AuthError("the token uses critical header extensions ledgergate does not understand",
                            "invalid_token")
        claims = _json_object(_b64(parts[1]), "payload")
        iss = claims.get("iss")
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("the token's issuer is not trusted here", "unknown_issuer")
        settings = issuer.settings
        if alg not in settings.algorithms:
            raise AuthError(f"signing algorithm {alg!r} is not allowed for this issuer", "alg_not_allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("the token's key id is malformed", "invalid_token")

        key = await self._find_key(issuer, kid, alg, (parts[0] + "." + parts[1]).encode("ascii"),
                                   _b64(parts[2]))

        now = self._clock()
        leeway = settings.leeway
        exp = _number(claims, "exp", required=True)
        assert exp is not None
        nbf = _number(claims, "nbf", required=False)
        iat = _number(claims, "iat", required=False)
        if now > exp + leeway:
            raise AuthError("the token has expired", "expired")
        if nbf is not None and now + leeway < nbf:
            raise AuthError("the token is not valid yet", "not_yet_valid")
        if iat is not None and now + leeway < iat:
            raise AuthError("the token was issued in the future", "not_yet_valid")
        aud = claims.get("aud")
        auds = {aud} if isinstance(aud, str) else {a for a in aud if isinstance(a, str)} \
            if isinstance(aud, list) else set()
        if not auds & settings.audiences:
            raise AuthError("the token is not meant for this gateway (audience)", "wrong_audience")
        start = iat if iat is not None else (nbf if nbf is not None else now)
        if exp - start > settings.max_token_lifetime:
            raise AuthError(
                f"the token's lifetime exceeds the allowed {int(settings.max_token_lifetime)} s",
                "lifetime_too_long",
            )
        for name in settings.required_claims:
            if name not in claims:
                raise AuthError(f"the token has no '{name}' claim", "invalid_token")
        principal = principal_from_claims(settings, claims, exp)
        return Verified(principal=principal, valid_until=exp, issuer=issuer, key=key)

    async def _find_key(self, issuer: IssuerKeys, kid: str | None, alg: str,
                        signing_input: bytes, signature: bytes) -> SigningKey:
        """The key that verifies the signature; refreshes the JWKS once (rate-limited) if needed."""
        now = self._clock()
        candidates = issuer.candidates(kid, alg, now)
        if not candidates:
            # Unknown kid (rotation at the IdP) or no usable keys at all: one refresh, rate-limited.
            await issuer.refresh()
            now = self._clock()
            candidates = issuer.candidates(kid, alg, now)
            if not candidates:
                if not issuer.usable(now):
                    raise AuthError("no usable signing keys for the token's issuer right now", "no_keys")
                raise AuthError("the token was signed with a key the issuer does not publish",
                                "bad_signature")
        for key in candidates:
            if alg not in key.algorithms:
                raise AuthError(f"signing algorithm {alg!r} does not match the issuer's key",
                                "alg_not_allowed")
            if key.verify(alg, signing_input, signature):
                return key
        raise AuthError("the token's signature is not valid", "bad_signature")
