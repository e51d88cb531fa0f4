"""The identity stage: a bearer credential in, a verified Principal out.

This is the one object the gateway holds. It routes API keys (by prefix) to the
store and everything else to the OIDC verifier, remembers verified tokens by
their SHA-256 until they expire so a repeated token costs a hash and a dict
lookup, and re-checks on every call what can change while a token is still
valid: disabled subjects and whether the signing key is still published and
within its cache lifetime. API keys are read from the store on every call, so
a revocation is honoured on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from ledgergate.errors import AuthError
from ledgergate.identity.apikeys import check_key, is_api_key
from ledgergate.identity.jwks import IssuerKeys, SigningKey
from ledgergate.identity.oidc import OidcVerifier, token_cache_key
from ledgergate.identity.redact import redact_text, redact_url
from ledgergate.identity.settings import IdentitySettings, disabled_keys
from ledgergate.principal import Principal
from ledgergate.store.apikeys_store import ApiKeyStore
from ledgergate.store.db import StoreURL

log = logging.getLogger("ledgergate.identity")

_CacheEntry = tuple[Principal, float, IssuerKeys, SigningKey]


class IdentityService:
    """Authenticates bearer credentials; see the module docstring for the guarantees."""

    def __init__(self, settings: IdentitySettings, store_url: str | None, base_dir: Path, *,
                 http_client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """Builds state only; no network or database access happens before `start()`."""
        self.settings = settings
        self._clock = clock
        self._issuers = [IssuerKeys(s, None, clock) for s in settings.oidc]
        self._verifier = OidcVerifier(self._issuers, clock)
        self._given_client = http_client
        self._store_url = store_url
        self._owned_clients: list[httpx.AsyncClient] = []
        self._store: ApiKeyStore | None = None
        self._store_error: str | None = None
        if settings.api_keys and store_url:
            try:
                self._store = ApiKeyStore(StoreURL.parse(store_url, base_dir))
            except ValueError as exc:
                self._store_error = redact_text(str(exc), store_url)
        elif settings.api_keys:
            self._store_error = "no storage configured"
        self._disabled, self._issuer_disabled = disabled_keys(settings)
        self._cache: dict[bytes, _CacheEntry] = {}
        self._cache_size = settings.token_cache_size
        self._touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._started = False
        #: Refusals by reason, for metrics (never holds credentials).
        self.refusals: Counter[str] = Counter()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch every issuer's keys and open the key store; failures are recorded, not raised."""
        default_client = self._given_client
        for keys in self._issuers:
            if keys.settings.ca_file is not None and self._given_client is None:
                try:
                    client = httpx.AsyncClient(verify=keys.settings.ca_file, follow_redirects=False)
                except Exception as exc:  # unreadable CA file: this issuer stays without keys
                    keys.error = redact_text(f"cannot load ca_file: {type(exc).__name__}: {exc}")
                    continue
                self._owned_clients.append(client)
                keys.client = client
                continue
            if default_client is None:
                default_client = httpx.AsyncClient(follow_redirects=False)
                self._owned_clients.append(default_client)
            keys.client = default_client
        await asyncio.gather(*(k.refresh(rate_limited=False) for k in self._issuers if k.client is not None))
        for keys in self._issuers:
            if not keys.usable(self._clock()):
                log.warning("identity issuer %s: %s", redact_url(keys.settings.issuer), keys.status())
        if self._store is not None:
            try:
                await asyncio.to_thread(self._store.open)
            except Exception as exc:
                self._store_error = redact_text(f"{type(exc).__name__}: {str(exc)[:300]}", self._store_url)
                log.warning("API key store unavailable: %s", self._store_error)
        if self._issuers:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="ledgergate-jwks-refresh")
        self._started = True

    async def close(self) -> None:
        """Stop background refreshes and release connections."""
        tasks = [t for t in ([self._refresher] if self._refresher else []) + list(self._background)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._refresher = None
        for client in self._owned_clients:
            await client.aclose()
        self._owned_clients.clear()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
        self._cache.clear()

    def readiness(self) -> dict[str, str]:
        """Per issuer "ok" or why its tokens are refused; "api_keys" likewise when enabled.

        /readyz shows this without authentication, so issuers are named by their redacted URL and the
        reasons carry only redacted URLs (see identity.redact)."""
        now = self._clock()
        out: dict[str, str] = {}
        for k in self._issuers:
            name = redact_url(k.settings.issuer)
            if name in out:  # two issuers differing only in what redaction removes
                name = f"{name} [{len(out) + 1}]"
            out[name] = redact_text(k.status(now) if self._started else "not started",
                                    k.settings.issuer, k.settings.jwks_uri)
        if self.settings.api_keys:
            out["api_keys"] = self._store_error or ("ok" if self._started else "not started")
        return out

    def unready(self) -> str | None:
        """Why this replica cannot authenticate the callers it is there for, or None (for /readyz).

        With issuers configured (people, agents and workloads: identity.oidc), one of them must have usable
        keys. API keys do not stand in for them: they are the last resort, and their store is the ledger's
        own database, so "API keys ok" holds whenever the ledger does; a replica whose IdP keys cannot be
        loaded (a wrong ca_file, egress blocked on its node) would otherwise stay in the Service and answer
        401 to nearly everyone. With no issuer (an API-key-only gateway), the key store must answer. With
        neither, nothing can be authenticated (the config refuses that: config.no_identity_problem)."""
        if not self._started:
            return "identity not started"
        if self._issuers:
            now = self._clock()
            if any(keys.usable(now) for keys in self._issuers):
                return None
            return ("no issuer's keys are loaded: every token would be refused (identity.oidc; see each "
                    "issuer's state under identity)")
        if self.settings.api_keys:
            return None if self._store is not None and self._store_error is None else \
                f"API keys cannot be checked: {self._store_error or 'no key store'}"
        return "no identity source is configured (identity.oidc is empty and identity.api_keys is false)"

    async def _refresh_loop(self) -> None:
        """Refresh each issuer's keys at half their cache lifetime; retry failures at the rate limit."""
        tick = max(0.05, min(1.0, *(k.settings.jwks_cache_ttl / 4 for k in self._issuers)))
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            due = [k for k in self._issuers
                   if k.client is not None and (k.stale(now) or not k.usable(now))
                   and now - k.last_attempt >= k.settings.jwks_min_refresh_interval]
            if due:
                await asyncio.gather(*(k.refresh() for k in due), return_exceptions=True)

    # -- the hot path -------------------------------------------------------------------

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal for a bearer credential, or AuthError(message, reason).

        The message is safe to show to the caller and never contains the credential.
        """
        try:
            if not credential:
                raise AuthError("a bearer token is required", "missing_token")
            if is_api_key(credential):
                return await self._api_key(credential)
            # Keyed by the token's one canonical spelling: a second spelling that verifies (an ECDSA
            # signature's (r, n-s) twin) finds the same entry instead of costing a verification.
            digest = hashlib.sha256(token_cache_key(credential).encode("utf-8", "surrogatepass")).digest()
            entry = self._cache.get(digest)
            now = self._clock()
            if entry is not None:
                principal, valid_until, issuer, key = entry
                if now <= valid_until and issuer.current(key.kid, now) is key:
                    self._check_disabled(principal)
                    return principal
                self._cache.pop(digest, None)
            verified = await self._verifier.verify(credential)
            principal = verified.principal
            self._check_disabled(principal)
            if self._cache_size:
                if len(self._cache) >= self._cache_size:
                    self._evict(now)
                self._cache[digest] = (principal, verified.valid_until, verified.issuer, verified.key)
            return principal
        except AuthError as exc:
            self.refusals[exc.reason] += 1
            raise

    def can_reconfigure(self, settings: IdentitySettings) -> bool:
        """Whether `reconfigure` can apply these settings in place (same issuers and key settings)."""
        def strip(s: IdentitySettings) -> dict:
            data = s.model_dump()
            data.pop("disabled_subjects", None)
            for issuer in data.get("oidc", []):
                issuer.pop("disabled_subjects", None)
            return data

        return strip(settings) == strip(self.settings)

    def reconfigure(self, settings: IdentitySettings) -> None:
        """Apply a reloaded config's off-boarding lists: the next request of a disabled subject is refused."""
        self._disabled, self._issuer_disabled = disabled_keys(settings)
        self.settings = settings

    def check_disabled(self, principal: Principal) -> None:
        """AuthError("disabled") when the current config off-boards `principal`: for what holds an identity
        past its token's check (a console session cookie), so off-boarding reaches it on its next request."""
        self._check_disabled(principal)

    def _check_disabled(self, principal: Principal) -> None:
        """Refuse a principal the off-boarding lists name (see settings.disabled_keys for the forms).

        `issuer#subject` entries are compared with the issuer's trailing slashes removed on both sides,
        as a token's `iss` is, so `https://idp/#alice` and `https://idp#alice` name the same person."""
        disabled = self._disabled
        if principal.subject in disabled or principal.key in disabled \
                or f"{principal.issuer.rstrip('/')}#{principal.subject}" in disabled:
            raise AuthError("this identity has been disabled", "disabled")
        per_issuer = self._issuer_disabled.get(principal.issuer.rstrip("/"))
        if per_issuer and principal.subject in per_issuer:
            raise AuthError("this identity has been disabled", "disabled")

    def _evict(self, now: float) -> None:
        """Drop expired entries; if still full, the oldest tenth (dicts keep insertion order)."""
        for digest in [d for d, e in self._cache.items() if e[1] < now]:
            del self._cache[digest]
        if len(self._cache) >= self._cache_size:
            for digest in list(self._cache)[: max(1, self._cache_size // 10)]:
                del self._cache[digest]

    async def _api_key(self, credential: str) -> Principal:
        if not self.settings.api_keys:
            raise AuthError("API keys are not accepted by this gateway", "invalid_token")
        store = self._store
        if store is None:
            raise AuthError("API keys cannot be checked right now", "no_keys")
        now = self._clock()
        try:
            principal, record = await asyncio.to_thread(check_key, store, credential, now)
        except AuthError:
            raise
        except Exception as exc:  # the store is down: fail closed, say so on /readyz
            self._store_error = redact_text(f"{type(exc).__name__}: {str(exc)[:300]}", self._store_url)
            raise AuthError("API keys cannot be checked right now", "no_keys") from None
        self._store_error = None
        self._check_disabled(principal)
        last = self._touched.get(record.id, record.last_used_at or 0.0)
        if now - last >= self.settings.api_key_last_used_interval:
            self._touched[record.id] = now
            task = asyncio.create_task(self._touch(store, record.id, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return principal

    @staticmethod
    async def _touch(store: ApiKeyStore, key_id: str, when: float) -> None:
        try:
            await asyncio.to_thread(store.touch, key_id, when)
        except Exception as exc:  # last-used is informational; never fail a request for it
            log.warning("could not record API key last use: %s", type(exc).__name__)
