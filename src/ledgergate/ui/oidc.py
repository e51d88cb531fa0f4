"""The console's OpenID Connect client: authorization code with PKCE (RFC 7636, S256).

Discovery gives the authorization and token endpoints. The code is exchanged
for tokens at the token endpoint with the `code_verifier` (and the client
secret, `client_secret_post`, when the console is a confidential client).
Who signed in is decided by the gateway's own token verification of the
access token (issuer, audience, signature, lifetime, groups): the same rules
as a bearer token on /mcp and /api, nothing looser for the browser.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from ledgergate.config import ConsoleSettings


class LoginError(Exception):
    """The login did not complete; the message is safe to show."""


#: how long a discovery document is kept before it is read again
_METADATA_TTL = 3600.0
#: how long a failed discovery is repeated to every sign-in without asking the IdP again: anyone may
#: load /ui/login, and without it each load while the IdP is down or slow sent it one more request
_FAILURE_TTL = 5.0


@dataclass
class OidcClient:
    settings: ConsoleSettings
    issuer: str
    _metadata: dict[str, Any] | None = None
    _fetched: float = 0.0
    _failure: LoginError | None = None
    _failed_at: float = 0.0
    # one discovery read at a time: sign-ins arriving while it runs wait for its answer instead of each
    # sending the IdP its own request (at start-up, after the hour, or while the IdP is slow)
    _reading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def metadata(self) -> dict[str, Any]:
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._reading:
            fresh = self._fresh()  # read by the sign-in this one waited behind
            if fresh is not None:
                return fresh
            try:
                doc = await self._discover()
            except LoginError as exc:
                self._failure, self._failed_at = exc, time.monotonic()
                raise
            self._metadata, self._fetched, self._failure = doc, time.monotonic(), None
            return doc

    def _fresh(self) -> dict[str, Any] | None:
        """The document still good to use; raises the last failure while it is recent."""
        now = time.monotonic()
        if self._metadata is not None and now - self._fetched <= _METADATA_TTL:
            return self._metadata
        if self._failure is not None and now - self._failed_at < _FAILURE_TTL:
            raise LoginError(str(self._failure))
        return None

    async def _discover(self) -> dict[str, Any]:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=self.settings.http_timeout) as http:
                resp = await http.get(url)
                resp.raise_for_status()
                doc = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginError(f"the identity provider's discovery document cannot be read "
                             f"({type(exc).__name__})") from None
        if not isinstance(doc, dict) or not doc.get("authorization_endpoint") or not doc.get("token_endpoint"):
            raise LoginError("the identity provider offers no authorization code flow")
        return doc

    async def authorize_url(self, redirect_uri: str, state: str, nonce: str, challenge: str) -> str:
        meta = await self.metadata()
        query = urlencode({"response_type": "code", "client_id": self.settings.client_id,
                           "redirect_uri": redirect_uri, "scope": self.settings.scopes, "state": state,
                           "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
        endpoint = str(meta["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + query

    async def exchange(self, code: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.settings.client_id, "code_verifier": verifier}
        if self.settings.client_secret:
            form["client_secret"] = self.settings.client_secret
        try:
            async with httpx.AsyncClient(timeout=self.settings.http_timeout) as http:
                resp = await http.post(str(meta["token_endpoint"]), data=form,
                                       headers={"Accept": "application/json"})
                doc = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginError(f"the identity provider's token endpoint did not answer ({type(exc).__name__})") from None
        if resp.status_code != 200 or not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            error = doc.get("error") if isinstance(doc, dict) else None
            raise LoginError(f"the identity provider refused the code exchange ({str(error)[:80]})")
        return doc


__all__ = ["LoginError", "OidcClient"]
