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


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified token: the principal, when it stops being valid, and the key that signed it."""

    principal: Principal
    valid_until: float
    issuer: IssuerKeys
    key: SigningKey


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("the token is not a well-formed JWT", "invalid_token") from None


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
            raise AuthError(f"signing algorithm {str(alg)[:20]!r} is not allowed", "alg_not_allowed")
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
