"""The console's OpenID Connect client: authorization code with PKCE (RFC 7636, S256).

Discovery gives the authorization and token endpoints. The code is exchanged
for tokens at the token endpoint with the `code_verifier` (and the client
secret, `client_secret_post`, when the console is a confidential client).
Who signed in is decided by the gateway's own token verification of the
access token (issuer, audience, signature, lifetime, groups): the same rules
as a bearer token on /mcp and /api, nothing looser for the browser.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from ledgergate.config import ConsoleSettings


class LoginError(Exception):
    """The login did not complete; the message is safe to show."""


@dataclass
class OidcClient:
    settings: ConsoleSettings
    issuer: str
    _metadata: dict[str, Any] | None = None
    _fetched: float = 0.0

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._fetched > 3600:
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
            self._metadata, self._fetched = doc, time.monotonic()
        return self._metadata

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
