"""The identity stage against a real OpenID provider (oauth2-mock-server) issuing real RS256 tokens.

The provider runs as a Node process on 127.0.0.1 (tests/peers/oidc_server.mjs);
every refusal must carry the precise reason the audit record and the RFC 9728
challenge are built from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ledgergate.errors import AuthError
from ledgergate.identity.resource_metadata import challenge_for
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings, OidcIssuerSettings
from tests.support.oidc import Provider
from tests.support.procs import free_port

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "tests" / "peers"


# -- the provider -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.stop()


def settings_for(issuer: str, **overrides: Any) -> IdentitySettings:
    issuer_fields = {"issuer": issuer, "audience": "ledgergate", "max_token_lifetime": "1h",
                     "jwks_min_refresh_interval": "0.2s"}
    identity_fields = {k: overrides.pop(k) for k in list(overrides) if k in ("disabled_subjects", "api_keys")}
    issuer_fields.update(overrides)
    return IdentitySettings(oidc=[OidcIssuerSettings(**issuer_fields)], api_keys=False, **identity_fields)


async def started(settings: IdentitySettings, **kwargs: Any) -> IdentityService:
    svc = IdentityService(settings, None, ROOT, **kwargs)
    await svc.start()
    return svc


async def refused(svc: IdentityService, credential: str | None, reason: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await svc.authenticate(credential)
    exc = info.value
    assert exc.reason == reason, (exc.reason, exc.message)
    assert exc.http_status == 401
    if credential:
        assert credential not in exc.message
        assert all(part not in exc.message for part in credential.split(".") if len(part) > 8)
    header = challenge_for(exc, "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp/x")
    assert header.startswith('Bearer resource_metadata="http://127.0.0.1:8080/.well-known/')
    if credential:
        assert 'error="invalid_token"' in header and "error_description=" in header
    return exc


def b64(data: bytes | dict[str, Any]) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# -- tests --------------------------------------------------------------------------------


async def test_valid_token_passes_with_groups(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer))
    try:
        assert svc.readiness() == {provider.issuer: "ok"}
        token = provider.token_with({"sub": "alice", "groups": ["staff", "approvers"]})
        principal = await svc.authenticate(token)
        assert principal.issuer == provider.issuer
        assert principal.subject == "alice"
        assert principal.kind == "human"
        assert principal.groups == frozenset({"staff", "approvers"})
        assert principal.expires_at is not None and principal.expires_at > time.time()
        assert "groups" in principal.claims
        assert await svc.authenticate(token) is principal  # served from the verified-token cache
    finally:
        await svc.close()


async def test_nested_groups_path_from_real_token(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer, groups_claim="realm_access.roles"))
    try:
        token = provider.token_with({"groups": None, "realm_access": {"roles": ["ops", "staff"]}})
        assert (await svc.authenticate(token)).groups == frozenset({"ops", "staff"})
    finally:
        await svc.close()


async def test_refusals_carry_the_right_reason(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer))
    now = int(time.time())
    try:
        await refused(svc, None, "missing_token")
        await refused(svc, "", "missing_token")
        await refused(svc, "not-a-jwt", "invalid_token")
        await refused(svc, provider.token_with({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}), "expired")
        await refused(svc, provider.token_with({"iat": now, "nbf": now + 600, "exp": now + 1800}), "not_yet_valid")
        await refused(svc, provider.token_with({"iat": now + 600, "nbf": None, "exp": now + 1800}), "not_yet_valid")
        await refused(svc, provider.token_with(aud="someone-else"), "wrong_audience")
        await refused(svc, provider.token_with({"iss": "https://evil.example"}), "unknown_issuer")
        await refused(svc, provider.token_with({"iat": now, "exp": now + 7200}), "lifetime_too_long")
    finally:
        await svc.close()


async def test_leeway_accepts_small_clock_skew(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer, leeway="30s"))
    now = int(time.time())
    try:
        # Issued by a clock 10 s ahead of ours, expired 10 s ago by ours: both within leeway.
        ahead = await svc.authenticate(provider.token_with({"sub": "ahead", "iat": now + 10, "nbf": now + 10,
                                                            "exp": now + 600}))
        late = await svc.authenticate(provider.token_with({"sub": "late", "iat": now - 600, "nbf": now - 600,
                                                           "exp": now - 10}))
        assert (ahead.subject, late.subject) == ("ahead", "late")
        # ... and the leeway is a bound: a minute off is refused either way
        await refused(svc, provider.token_with({"iat": now + 60, "nbf": now + 60, "exp": now + 600}), "not_yet_valid")
        await refused(svc, provider.token_with({"iat": now - 600, "nbf": now - 600, "exp": now - 60}), "expired")
    finally:
        await svc.close()


async def test_tampered_and_forged_tokens_are_refused(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer))
    try:
        token = provider.token_with({"sub": "mallory", "groups": ["staff"]})
        h, p, s = token.split(".")
        payload = unb64(p)
        payload["groups"] = ["staff", "admin"]
        await refused(svc, f"{h}.{b64(payload)}.{s}", "bad_signature")

        # Forged: a key of our own, but the header names the provider's real kid.
        own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(payload, own, algorithm="RS256", headers={"kid": provider.kid})
        await refused(svc, forged, "bad_signature")

        # alg=none, with and without a kid, with and without a trailing signature.
        for header in ({"alg": "none", "kid": provider.kid}, {"alg": "none"}, {"alg": "None"}):
            await refused(svc, f"{b64(header)}.{b64(payload)}.", "alg_not_allowed")
            await refused(svc, f"{b64(header)}.{b64(payload)}.{s}", "alg_not_allowed")

        # An `alg` of the caller's own text: a prefix of it was quoted (and recorded in `auth.denied`), cut before
        # any masking, so 14 digits of a card number reached the ledger (leak probe L1). Only known names are quoted.
        for alg in ("HS256-4111111111111111", "4111111111111111", "RS256\u001b[2J"):
            exc = await refused(svc, f"{b64({'alg': alg})}.{b64(payload)}.{s}", "alg_not_allowed")
            assert "41111" not in exc.message and "\u001b" not in exc.message and "no JWS algorithm" in exc.message
        exc = await refused(svc, f"{b64({'alg': 'HS256'})}.{b64(payload)}.{s}", "alg_not_allowed")
        assert "'HS256'" in exc.message  # a real algorithm's name is still said

        # HS256 keyed with the provider's RSA public key (PEM and raw JWK): key confusion.
        jwk = provider.public_jwk(provider.kid)
        public = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for secret in (pem, json.dumps(jwk).encode(), pem.strip()):
            head = b64({"alg": "HS256", "typ": "JWT", "kid": provider.kid})
            body = b64(payload)
            mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
            await refused(svc, f"{head}.{body}.{b64(mac)}", "alg_not_allowed")

        # An allowed algorithm the key's type cannot do (ES256 with an RSA kid).
        await refused(svc, f"{b64({'alg': 'ES256', 'kid': provider.kid})}.{b64(payload)}.{s}", "alg_not_allowed")
        # Only RS256 allowed for this issuer: PS256 refused before any key is touched.
        strict = await started(settings_for(provider.issuer, algorithms=["RS256"]))
        try:
            await refused(strict, f"{b64({'alg': 'PS256', 'kid': provider.kid})}.{b64(payload)}.{s}",
                          "alg_not_allowed")
        finally:
            await strict.close()
    finally:
        await svc.close()


async def test_required_claims(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer, required_claims=["email"]))
    try:
        await refused(svc, provider.token_with(), "invalid_token")
        assert (await svc.authenticate(provider.token_with({"email": "a@example.com"}))).subject == "alice"
    finally:
        await svc.close()


async def test_disabled_subjects_are_refused_even_when_cached(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer, disabled_subjects=["bob"]))
    try:
        await refused(svc, provider.token_with({"sub": "bob"}), "disabled")
        await refused(svc, provider.token_with({"sub": "bob"}), "disabled")
    finally:
        await svc.close()
    svc = await started(IdentitySettings(api_keys=False, oidc=[OidcIssuerSettings(
        issuer=provider.issuer, disabled_subjects=["carol"], jwks_min_refresh_interval=0.2)]))
    try:
        await refused(svc, provider.token_with({"sub": "carol"}), "disabled")
        assert (await svc.authenticate(provider.token_with({"sub": "dave"}))).subject == "dave"
    finally:
        await svc.close()


async def test_key_rotation_without_restart() -> None:
    provider = Provider()
    svc = await started(settings_for(provider.issuer, jwks_cache_ttl="1s", jwks_min_refresh_interval="0.2s"))
    try:
        old_kid = provider.kid
        old_token = provider.token_with({"sub": "alice"})
        assert (await svc.authenticate(old_token)).subject == "alice"

        await _after_rate_limit()
        new_kid = provider.rotate()
        assert new_kid != old_kid
        new_token = provider.token_with({"sub": "erin"})
        assert unb64(new_token.split(".")[0])["kid"] == new_kid
        assert (await svc.authenticate(new_token)).subject == "erin"  # unknown kid → refresh → ok
        assert (await svc.authenticate(old_token)).subject == "alice"  # old key still published

        # The IdP stops publishing the old key: after the next refresh its tokens stop working,
        # even though the token is in the verified-token cache.
        provider.retire(old_kid)
        await _wait_for(lambda: old_kid not in {k for k in svc._issuers[0].keys}, 5)
        await refused(svc, old_token, "bad_signature")
        assert (await svc.authenticate(new_token)).subject == "erin"
    finally:
        await svc.close()
        provider.stop()


async def test_unknown_kid_refresh_is_rate_limited(provider: Provider) -> None:
    fetches: list[str] = []

    async def count(request: httpx.Request) -> None:
        if request.url.path == "/jwks":
            fetches.append(str(request.url))

    client = httpx.AsyncClient(event_hooks={"request": [count]})
    svc = await started(settings_for(provider.issuer, jwks_min_refresh_interval="10s"), http_client=client)
    try:
        assert len(fetches) == 1
        payload = unb64(provider.token_with().split(".")[1])
        for _ in range(50):
            garbage = f"{b64({'alg': 'RS256', 'kid': secrets.token_hex(8)})}.{b64(payload)}.{b64(b'x' * 256)}"
            await refused(svc, garbage, "bad_signature")
        assert len(fetches) <= 2, fetches
    finally:
        await svc.close()
        await client.aclose()


async def test_jwks_unreachable_at_start_fails_closed_then_recovers() -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    svc = await started(settings_for(issuer, jwks_min_refresh_interval="0.3s"))
    other = Provider()
    try:
        ready = svc.readiness()[issuer]
        assert ready != "ok" and "cannot reach" in ready, ready
        # A well-signed token naming this issuer is refused: there are no keys to check it with.
        token = other.token_with({"iss": issuer})
        await refused(svc, token, "no_keys")

        # The IdP comes up on that port: tokens pass without restarting the gateway.
        provider = Provider(port)
        try:
            assert provider.issuer == issuer
            good = provider.token_with({"sub": "frank"})
            await _wait_for(lambda: svc.readiness()[issuer] == "ok", 5)
            assert (await svc.authenticate(good)).subject == "frank"
            await refused(svc, token, "bad_signature")  # other provider's key, unknown kid
        finally:
            provider.stop()
    finally:
        await svc.close()
        other.stop()


async def test_cached_keys_used_until_their_lifetime_ends() -> None:
    provider = Provider()
    svc = await started(settings_for(provider.issuer, jwks_cache_ttl="1.5s", jwks_min_refresh_interval="0.2s"))
    try:
        token = provider.token_with({"sub": "gina"})
        fresh = provider.token_with({"sub": "hank"})
        assert (await svc.authenticate(token)).subject == "gina"
        provider.stop()  # the IdP disappears
        assert (await svc.authenticate(fresh)).subject == "hank"  # cached keys still valid
        await _wait_for(lambda: svc.readiness()[provider.issuer] != "ok", 5)
        assert "expired" in svc.readiness()[provider.issuer]
        await refused(svc, token, "no_keys")  # even the verified-token cache does not let it through
        await refused(svc, fresh, "no_keys")
    finally:
        await svc.close()


async def test_kubernetes_style_service_token(provider: Provider) -> None:
    svc = await started(settings_for(provider.issuer, service_kind="kubernetes", audience=["ledgergate", "api"]))
    try:
        claims = {"sub": "system:serviceaccount:payments:batch", "groups": None,
                  "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "batch", "uid": "u1"},
                                    "pod": {"name": "batch-7f9", "uid": "p1"}}}
        principal = await svc.authenticate(provider.token_with(claims, aud="api"))
        assert principal.kind == "service"
        assert principal.subject == "system:serviceaccount:payments:batch"
        assert {"system:serviceaccounts", "system:serviceaccounts:payments"} <= principal.groups
        assert principal.claims["namespace"] == "payments"
    finally:
        await svc.close()


async def _after_rate_limit() -> None:
    import asyncio

    await asyncio.sleep(0.25)


async def _wait_for(predicate: Any, timeout: float) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_a_real_token_verifies_only_in_its_own_spelling(provider: Provider) -> None:
    """Padding, characters outside base64url or a non-canonical last character used to be dropped by the
    decoder: the same token had unlimited spellings, each a verified-token cache miss."""
    svc = await started(settings_for(provider.issuer))
    try:
        token = provider.token_with({"sub": "alice"})
        h, p, s = token.split(".")
        principal = await svc.authenticate(token)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        spellings = [f"{token}====", token + "=" * 2000, f"{token}!!!!", f"{h}.{p}.{s[:20]}$$$${s[20:]}",
                     f"{h}==.{p}.{s}", f"{h}.{p}.{s[:20]}\t{s[20:]}", f"{h}.{p}=.{s}", f" {token}"]
        if len(s) % 4 in (2, 3):  # a 2048-bit RS256 signature: 342 characters, 4 unused bits in the last one
            spellings.append(f"{h}.{p}.{s[:-1]}{alphabet[alphabet.index(s[-1]) + 1]}")
        for spelled in spellings:
            exc = await refused(svc, spelled, "invalid_token")
            assert exc.message == "the token is not a well-formed JWT"
        assert len(svc._cache) == 1
        assert await svc.authenticate(token) is principal
    finally:
        await svc.close()


async def test_readiness_and_log_never_quote_a_jwks_urls_credentials(provider: Provider,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    port = provider.issuer.rsplit(":", 1)[1]
    jwks_uri = f"http://user:PASSWD@127.0.0.1:{port}/nokeys?key=URLSECRET"
    with caplog.at_level("WARNING", logger="ledgergate.identity"):
        svc = await started(settings_for(provider.issuer, jwks_uri=jwks_uri))
    try:
        ready = svc.readiness()[provider.issuer]
        assert ready == f"no usable keys: ValueError: JWKS at http://127.0.0.1:{port}/nokeys?… answered HTTP 404"
        for text in (ready, caplog.text):
            assert "PASSWD" not in text and "URLSECRET" not in text and "user:" not in text
        assert f"http://127.0.0.1:{port}/nokeys?… answered HTTP 404" in caplog.text
    finally:
        await svc.close()


async def test_offboarding_entries_match_however_the_issuers_trailing_slash_is_written(provider: Provider) -> None:
    """`issuer/#alice` when the issuer is configured without the slash (or `issuer#carol` in the issuer's
    own list) used to be accepted and never match: alice kept working."""
    svc = await started(IdentitySettings(api_keys=False, disabled_subjects=[provider.issuer + "/#alice"], oidc=[
        OidcIssuerSettings(issuer=provider.issuer, jwks_min_refresh_interval=0.2,
                           disabled_subjects=[provider.issuer + "#carol"])]))
    try:
        await refused(svc, provider.token_with({"sub": "alice"}), "disabled")
        await refused(svc, provider.token_with({"sub": "carol"}), "disabled")
        assert (await svc.authenticate(provider.token_with({"sub": "dave"}))).subject == "dave"
        # a reload reaches a token already in the verified-token cache
        erin = provider.token_with({"sub": "erin"})
        assert (await svc.authenticate(erin)).subject == "erin"
        svc.reconfigure(IdentitySettings(api_keys=False, disabled_subjects=[provider.issuer + "/#erin"], oidc=[
            OidcIssuerSettings(issuer=provider.issuer, jwks_min_refresh_interval=0.2)]))
        await refused(svc, erin, "disabled")
    finally:
        await svc.close()
