"""Authentication, once, for every entry (`/mcp`, `/api`, and later `/ui`), in the manner of
Starlette's AuthenticationMiddleware with a backend: the bearer credential becomes a `Principal`
here and nowhere else, and every refusal is an `auth.denied` record."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from urllib.parse import parse_qs

from ledgergate.errors import AuthError, GatewayError
from ledgergate.gateway.stages.base import AuditPort, IdentityPort
from ledgergate.principal import Principal


def bearer_credential(authorization: str | None) -> str | None:
    """None when no credential was sent; "" when one was sent in a form we do not take."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


class Authenticator:
    def __init__(self, ledger: AuditPort, challenge: Callable[[str, str | None, str], str]) -> None:
        self.ledger = ledger
        self._challenge = challenge

    async def authenticate(self, identity: IdentityPort, authorization: str | None, query_string: bytes,
                           realm: str, remote: str | None) -> Principal:
        """The caller's principal; raises AuthError (already recorded) with the 401 challenge attached."""
        if b"access_token" in query_string and "access_token" in parse_qs(query_string.decode("latin-1")):
            refusal = AuthError("tokens in the query string are refused; send them in the Authorization header",
                                "token_in_query")
            with contextlib.suppress(GatewayError):  # refused either way; recorded when the ledger can
                await self._record(refusal, realm, remote)
            raise refusal
        try:
            return await identity.authenticate(bearer_credential(authorization))
        except AuthError as exc:
            await self._record(exc, realm, remote)
            raise

    async def _record(self, exc: AuthError, realm: str, remote: str | None) -> None:
        await self.ledger.append("auth.denied", {"server": realm, "reason": exc.reason, "detail": exc.message,
                                                 "remote": remote})

    def challenge(self, exc: AuthError, metadata_url: str) -> tuple[tuple[bytes, bytes], ...]:
        """The RFC 9728 `WWW-Authenticate` header for a 401."""
        error_code = ("invalid_request" if exc.reason in ("missing_token", "invalid_request", "token_in_query")
                      else "invalid_token")
        value = self._challenge(metadata_url, None if exc.reason == "missing_token" else error_code, exc.message)
        return ((b"www-authenticate", value.encode("latin-1", "replace")),)
