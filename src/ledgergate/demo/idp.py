"""An embedded development OpenID issuer for `ledgergate demo` and tests.

It exists so the demo exercises the real identity path, not a bypass: tokens
are real RS256 JWTs, verified by the same discovery + JWKS code that trusts a
production IdP. The signing key is generated at start and never written to
disk, so demo tokens die with the process. Not for production: anyone who can
call `mint` can be anyone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledgergate.principal import PrincipalKind
from ledgergate.identity.settings import OidcIssuerSettings

KIND_CLAIM = "ledgergate_kind"


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class DevIdentityProvider:
    """A development issuer: `/.well-known/openid-configuration`, `/jwks`, and `mint()`.

    `issuer` is the public URL the app is reachable at (it may be mounted under
    a path, e.g. `http://127.0.0.1:8080/idp`); discovery and JWKS URLs are
    derived from it.
    """

    def __init__(self, issuer: str, audience: str = "ledgergate", max_lifetime: float = 3600.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.max_lifetime = max_lifetime
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self._key.public_key().public_numbers()
        self._public_jwk = {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}
        # RFC 7638 thumbprint as kid: stable for this key, different for the next one.
        canonical = json.dumps({"e": self._public_jwk["e"], "kty": "RSA", "n": self._public_jwk["n"]},
                               separators=(",", ":"), sort_keys=True)
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
        self.app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self._discovery_endpoint),
            Route("/jwks", self._jwks_endpoint),
        ])

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (only what a resource server needs)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + "/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
        }

    def jwks(self) -> dict[str, Any]:
        """The public key set (never the private key)."""
        return {"keys": [{**self._public_jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def mint(self, subject: str, groups: Iterable[str] = (), kind: PrincipalKind = "human",
             lifetime: float = 3600.0, **claims: Any) -> str:
        """A signed token for `subject`, valid for `lifetime` seconds from now."""
        if lifetime > self.max_lifetime:
            raise ValueError(f"lifetime {lifetime} s exceeds the issuer's maximum of {self.max_lifetime} s")
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "jti": uuid.uuid4().hex,
            "groups": sorted(set(groups)),
            KIND_CLAIM: kind,
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def issuer_settings(self) -> OidcIssuerSettings:
        """The `identity.oidc` entry that trusts this issuer."""
        return OidcIssuerSettings(
            issuer=self.issuer, audience=self.audience, groups_claim="groups",
            max_token_lifetime=self.max_lifetime, kind_claim=KIND_CLAIM, algorithms=["RS256"],
        )

    async def _discovery_endpoint(self, request: Request) -> JSONResponse:
        return JSONResponse(self.discovery())

    async def _jwks_endpoint(self, request: Request) -> JSONResponse:
        return JSONResponse(self.jwks(), headers={"Cache-Control": "public, max-age=300"})
