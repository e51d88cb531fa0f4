"""One issuer's signing keys: discovery, JWKS fetch, cache lifetime, rate-limited refresh.

Why a separate module: key handling is where fail-closed matters most. Keys
are used only until their cache lifetime ends; a failed refresh keeps the old
keys until then and records why (for /readyz), after which the issuer has no
keys and its tokens are refused. Refreshes caused by tokens (unknown `kid`)
are single-flight and rate-limited per issuer so garbage key ids cannot make
the gateway hammer the IdP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from jwt.algorithms import get_default_algorithms

from ledgergate.identity.redact import redact_text, redact_url
from ledgergate.identity.settings import OidcIssuerSettings

_ALGS = get_default_algorithms()
_MIN_RSA_BITS = 2048
_EC_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_OKP_CURVES = {"Ed25519", "Ed448"}
_MAX_JWKS_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A public key from the JWKS with the algorithms it may verify."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    key: Any  # cryptography public key object
    jwk: Mapping[str, Any]

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True when `signature` is valid for `alg`; the alg must be one this key allows.

        An RSA signature is exactly as long as the modulus (RFC 8017 §8.1.1/§8.2.1, k octets):
        OpenSSL also accepts an RSASSA-PSS signature with its leading zero octets left off, which
        would give one token a second spelling that verifies.
        """
        if alg not in self.algorithms:
            return False
        if self.kty == "RSA" and len(signature) != (getattr(self.key, "key_size", 0) + 7) // 8:
            return False
        try:
            return bool(_ALGS[alg].verify(signing_input, self.key, signature))
        except Exception:  # malformed signatures raise inside cryptography
            return False


def _algorithms_for(jwk: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        candidates = {a for a in allowed if a[:2] in ("RS", "PS")}
    elif kty == "EC":
        candidates = {a for a in allowed if _EC_CURVE_FOR_ALG.get(a) == jwk.get("crv")}
    elif kty == "OKP":
        candidates = {"EdDSA"} & allowed if jwk.get("crv") in _OKP_CURVES else set()
    else:  # "oct" (HMAC secrets) and anything unknown are never signing keys here
        candidates = set()
    declared = jwk.get("alg")
    if declared is not None:
        candidates &= {declared}
    return frozenset(candidates)


def parse_jwks(document: Any, allowed: frozenset[str]) -> dict[str | None, SigningKey]:
    """Usable signing keys of a JWK Set, by kid; unusable entries are skipped, not fatal."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS document has no 'keys' list")
    keys: dict[str | None, SigningKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        algs = _algorithms_for(jwk, allowed)
        if not algs:
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            any_alg = next(iter(algs))
            key = _ALGS[any_alg].from_jwk(dict(jwk))
        except Exception:
            continue
        if jwk.get("kty") == "RSA" and getattr(key, "key_size", 0) < _MIN_RSA_BITS:
            continue
        if hasattr(key, "private_bytes"):  # a JWKS must never carry private keys; use the public half
            key = key.public_key()
        keys[kid] = SigningKey(kid=kid, kty=str(jwk.get("kty")), algorithms=algs, key=key, jwk=dict(jwk))
    return keys


class IssuerKeys:
    """Keys of one issuer and the state /readyz reports about them."""

    def __init__(self, settings: OidcIssuerSettings, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.client = client  # set by the service at start; no network before that
        self._clock = clock
        self._allowed = frozenset(settings.algorithms)
        self.keys: dict[str | None, SigningKey] = {}
        self.expires_at = 0.0  # keys are usable while clock() < expires_at
        self.fetched_at = 0.0
        self.last_attempt = float("-inf")
        self.error: str | None = "keys not fetched yet"
        self._jwks_uri: str | None = settings.jwks_uri
        self._lock = asyncio.Lock()

    # -- state --------------------------------------------------------------------------

    def usable(self, now: float) -> bool:
        return bool(self.keys) and now < self.expires_at

    def current(self, kid: str | None, now: float) -> SigningKey | None:
        """The key for `kid` if it is still published and its cache lifetime has not ended."""
        if now >= self.expires_at:
            return None
        return self.keys.get(kid)

    def candidates(self, kid: str | None, alg: str, now: float) -> list[SigningKey]:
        """Keys to try: the one named by kid, or (no kid in the token) every key allowing alg."""
        if now >= self.expires_at:
            return []
        if kid is not None:
            key = self.keys.get(kid)
            return [key] if key is not None else []
        return [k for k in self.keys.values() if alg in k.algorithms]

    def status(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        if self.usable(now):
            return "ok"
        if self.keys and now >= self.expires_at:
            why = f"; last refresh failed: {self.error}" if self.error else ""
            return f"no usable keys: cached keys expired{why}"
        return f"no usable keys: {self.error or 'the JWKS has no usable signing keys'}"

    def stale(self, now: float) -> bool:
        """Past half the cache lifetime: time for a background refresh."""
        return now >= self.fetched_at + self.settings.jwks_cache_ttl / 2

    # -- fetching -----------------------------------------------------------------------

    async def refresh(self, *, rate_limited: bool = True) -> bool:
        """Fetch the JWKS now unless one was attempted too recently.

        Returns True when a fetch happened (or completed while we waited for
        the lock), so the caller should look for its key again.
        """
        started = self._clock()
        if rate_limited and started - self.last_attempt < self.settings.jwks_min_refresh_interval:
            return False
        async with self._lock:
            if self.last_attempt >= started:  # someone else refreshed while we waited
                return True
            now = self._clock()
            if rate_limited and now - self.last_attempt < self.settings.jwks_min_refresh_interval:
                return False
            self.last_attempt = now
            try:
                keys = await self._fetch()
            except Exception as exc:  # recorded for /readyz; old keys live out their lifetime
                self.error = _describe(exc, self.settings.issuer, self.settings.jwks_uri, self._jwks_uri)
                self._jwks_uri = self.settings.jwks_uri  # rediscover next time
                return True
            self._install(keys, now)
            return True

    def _install(self, keys: dict[str | None, SigningKey], now: float) -> None:
        # Keep the same objects for unchanged keys so verified-token cache entries stay valid.
        merged = {}
        for kid, key in keys.items():
            old = self.keys.get(kid)
            merged[kid] = old if old is not None and old.jwk == key.jwk else key
        self.keys = merged
        self.fetched_at = now
        self.expires_at = now + self.settings.jwks_cache_ttl
        self.error = None if merged else "the JWKS has no usable signing keys"

    async def _fetch(self) -> dict[str | None, SigningKey]:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        doc = await self._get_json(self._jwks_uri, "JWKS")
        return parse_jwks(doc, self._allowed)

    async def _discover(self) -> str:
        issuer = self.settings.issuer.rstrip("/")
        doc = await self._get_json(issuer + "/.well-known/openid-configuration", "discovery")
        if not isinstance(doc, Mapping):
            raise ValueError("discovery document is not a JSON object")
        if str(doc.get("issuer", "")).rstrip("/") != issuer:
            raise ValueError(f"discovery names issuer {redact_url(str(doc.get('issuer'))[:400])!r}, "
                             "not the configured one")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("discovery document has no jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str, what: str) -> Any:
        if self.client is None:
            raise RuntimeError("the identity service has not been started")
        headers = {"Accept": "application/json"}
        if self.settings.auth_token_file is not None:
            with open(self.settings.auth_token_file, encoding="utf-8") as fh:
                headers["Authorization"] = "Bearer " + fh.read().strip()
        response = await self.client.get(url, timeout=self.settings.http_timeout, headers=headers)
        # The URL is redacted here and again in _describe: error text reaches /readyz and the log.
        if response.status_code != 200:
            raise ValueError(f"{what} at {redact_url(url)} answered HTTP {response.status_code}")
        if len(response.content) > _MAX_JWKS_BYTES:
            raise ValueError(f"{what} at {redact_url(url)} is too large")
        try:
            return response.json()
        except ValueError:  # never quote the body: it is the upstream's text, not ours
            raise ValueError(f"{what} at {redact_url(url)} is not JSON") from None


def _describe(exc: BaseException, *urls: str | None) -> str:
    """Why a fetch failed, for /readyz and the log: any URL in the text redacted, and the secret
    parts of `urls` (the endpoints involved) scrubbed wherever an exception quoted them."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out fetching keys ({type(exc).__name__})"
    if isinstance(exc, httpx.TransportError):
        return redact_text(f"cannot reach the issuer: {type(exc).__name__}: {str(exc)[:200]}", *urls)
    return redact_text(f"{type(exc).__name__}: {str(exc)[:300]}", *urls)
