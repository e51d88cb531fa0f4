"""An embedded development OpenID issuer for `ledgergate demo` and tests.

It exists so the demo exercises the real identity path, not a bypass: tokens
are real RS256 JWTs, verified by the same discovery + JWKS code that trusts a
production IdP. The signing key is generated at start and never written to
disk, so demo tokens die with the process. Not for production: anyone who can
call `mint` can be anyone.

For the web console it also speaks the OAuth 2.0 authorization-code flow
with PKCE (RFC 7636, S256 only): `/authorize` shows a small page where the
demo user is chosen (no password: a development issuer), then redirects
back with a one-time code that `/token` exchanges, given the matching
`code_verifier`, for an access token (audience: the gateway) and an ID token
(audience: the client). Codes live 60 s in memory and work once.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ledgergate.principal import PrincipalKind
from ledgergate.identity.settings import OidcIssuerSettings

KIND_CLAIM = "ledgergate_kind"
CODE_LIFETIME = 60.0


@dataclass(frozen=True)
class DevUser:
    groups: tuple[str, ...]
    kind: PrincipalKind = "human"


@dataclass(frozen=True)
class _Grant:
    user: str
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    expires: float


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class DevIdentityProvider:
    """A development issuer: `/.well-known/openid-configuration`, `/jwks`, and `mint()`.

    `issuer` is the public URL the app is reachable at (it may be mounted under
    a path, e.g. `http://127.0.0.1:8080/idp`); discovery and JWKS URLs are
    derived from it.
    """

    def __init__(self, issuer: str, audience: str = "ledgergate", max_lifetime: float = 3600.0,
                 users: Mapping[str, DevUser] | None = None, login_lifetime: float = 3600.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.users = dict(users or {})
        self.login_lifetime = min(login_lifetime, max_lifetime)
        self._codes: dict[str, _Grant] = {}
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
            Route("/authorize", self._authorize, methods=["GET", "POST"]),
            Route("/token", self._token, methods=["POST"]),
        ])

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (only what a resource server needs)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + "/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "scopes_supported": ["openid", "profile"],
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

    # ── authorization code + PKCE (for the web console) ───────────────────────
    @staticmethod
    def _redirect_ok(uri: str) -> bool:
        # a development issuer on loopback: it sends codes back to loopback URLs only
        parts = urlsplit(uri)
        return parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost", "::1")

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params) if request.method == "GET" else {
            k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        redirect_uri = params.get("redirect_uri", "")
        if not self._redirect_ok(redirect_uri):
            return HTMLResponse("<p>redirect_uri must be a loopback http(s) URL</p>", status_code=400)
        state = params.get("state", "")

        def back(**answer: str) -> Response:
            return RedirectResponse(redirect_uri + ("&" if "?" in redirect_uri else "?")
                                    + urlencode({**answer, "state": state}), status_code=303)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if params.get("code_challenge_method") != "S256" or len(params.get("code_challenge", "")) != 43:
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        if not params.get("client_id"):
            return back(error="invalid_request", error_description="client_id is required")
        user = params.get("user")
        if request.method == "POST" and user in self.users:
            code = secrets.token_urlsafe(32)
            now = time.time()
            self._codes = {c: g for c, g in self._codes.items() if g.expires > now}
            self._codes[code] = _Grant(user, params["client_id"], redirect_uri, params["code_challenge"],
                                       params.get("nonce"), now + CODE_LIFETIME)
            return back(code=code)
        back_to = urlsplit(redirect_uri)
        # form-action covers the redirect that follows the post: the client's origin must be allowed too
        return HTMLResponse(self._login_page(params), headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                       f"form-action 'self' {back_to.scheme}://{back_to.netloc}",
            "Cache-Control": "no-store"})

    def _login_page(self, params: Mapping[str, str]) -> str:
        keep = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                       for k, v in params.items() if k != "user")
        buttons = "".join(
            f'<button type="submit" name="user" value="{html.escape(name)}">{html.escape(name)}'
            f'<small>{html.escape(", ".join(u.groups))}</small></button>'
            for name, u in self.users.items() if u.kind == "human")
        return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>Sign in (development issuer)</title>"
                "<style>body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;color:#1a1a1a}"
                "button{display:block;width:100%;margin:.5rem 0;padding:.8rem;font-size:1rem;text-align:left;"
                "border:1px solid #888;border-radius:6px;background:#f6f6f6;cursor:pointer}"
                "small{float:right;color:#555}p.note{color:#8a4b00}</style></head><body>"
                "<h1>Sign in</h1><p class=note>ledgergate demo's development issuer: choose who you are. "
                "No password: never use this issuer outside a demo.</p>"
                f'<form method="post" action="{html.escape(self.issuer)}/authorize">{keep}{buttons}</form>'
                "</body></html>")

    async def _token(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

        def refuse(error: str, description: str) -> JSONResponse:
            return JSONResponse({"error": error, "error_description": description}, status_code=400,
                                headers={"Cache-Control": "no-store"})

        if form.get("grant_type") != "authorization_code":
            return refuse("unsupported_grant_type", "only authorization_code")
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant.expires < time.time():
            return refuse("invalid_grant", "unknown, used or expired code")
        if form.get("client_id") != grant.client_id or form.get("redirect_uri") != grant.redirect_uri:
            return refuse("invalid_grant", "client_id or redirect_uri differ from the authorization request")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not 43 <= len(verifier) <= 128 or not secrets.compare_digest(challenge, grant.challenge):
            return refuse("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")
        user = self.users[grant.user]
        extra: dict[str, Any] = {"name": grant.user, "preferred_username": grant.user}
        if grant.nonce:
            extra["nonce"] = grant.nonce
        access = self.mint(grant.user, user.groups, kind=user.kind, lifetime=self.login_lifetime, **extra)
        id_token = self._id_token(grant.user, grant.client_id, user.groups, grant.nonce)
        return JSONResponse({"access_token": access, "id_token": id_token, "token_type": "Bearer",
                             "expires_in": int(self.login_lifetime)}, headers={"Cache-Control": "no-store"})

    def _id_token(self, subject: str, client_id: str, groups: Iterable[str], nonce: str | None) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.issuer, "aud": client_id, "sub": subject, "iat": now,
                                   "exp": now + int(self.login_lifetime), "groups": sorted(set(groups)),
                                   "preferred_username": subject}
        if nonce:
            payload["nonce"] = nonce
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})
