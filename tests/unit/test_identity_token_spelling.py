"""One token, one spelling: nothing but the issuer's exact bytes verifies, and what still may (an
ECDSA signature's (r, n-s) twin) finds the same verified-token cache entry.

`base64.urlsafe_b64decode` skips characters outside the alphabet and ignores padding and the
unused bits of the last character, so a token with `====`, 2000 `=`, `!!!!` or `$$$$` added to
its signature still verified: unlimited spellings, each a miss of the cache keyed by the token
string (a full signature check, evicting someone else's entry). RFC 7515 §2 base64url has no
padding and nothing outside the alphabet.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ledgergate.errors import AuthError
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings, OidcIssuerSettings

ISSUER = "https://idp.test"
KEYS: dict[str, Any] = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "p521": ec.generate_private_key(ec.SECP521R1()),
    "ed": ed25519.Ed25519PrivateKey.generate(),
}
ORDER = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    "ES512": 0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409,
}
KEY_FOR = {"RS256": "rsa", "PS256": "rsa", "ES256": "p256", "ES384": "p384", "ES512": "p521", "EdDSA": "ed"}
MALFORMED = "the token is not a well-formed JWT"


def _jwk(private: Any, kid: str) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        d = json.loads(RSAAlgorithm.to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        d = json.loads(ECAlgorithm.to_jwk(public))
    else:
        d = json.loads(OKPAlgorithm.to_jwk(public))
    return {**d, "kid": kid}


def _transport(verifications: list[str] | None = None) -> httpx.MockTransport:
    doc = {"keys": [_jwk(k, name) for name, k in KEYS.items()]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/keys"})
        if request.url.path == "/keys":
            return httpx.Response(200, json=doc)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def token(alg: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": "ledgergate", "sub": "svc", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, KEYS[KEY_FOR[alg]], algorithm=alg, headers={"kid": KEY_FOR[alg]})


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
async def svc() -> AsyncIterator[IdentityService]:
    client = httpx.AsyncClient(transport=_transport())
    settings = IdentitySettings(api_keys=False, token_cache_size=100,
                                oidc=[OidcIssuerSettings(issuer=ISSUER, jwks_min_refresh_interval=60)])
    service = IdentityService(settings, None, Path("."), http_client=client)
    await service.start()
    yield service
    await service.close()
    await client.aclose()


def _non_canonical_last(part: str) -> str:
    """The same bytes with the unused low bits of the last character set (another spelling)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(part) % 4]
    index = alphabet.index(part[-1])
    assert index % (1 << unused) == 0
    return part[:-1] + alphabet[index + 1]


def respellings(t: str) -> dict[str, str]:
    """Spellings the lenient decoder read as the same token, by what was done to it."""
    h, p, s = t.split(".")
    out = {
        "padding on the signature": f"{h}.{p}.{s}====",
        "2000 '=' after the signature": f"{h}.{p}.{s}" + "=" * 2000,
        "'!!!!' after the signature": f"{h}.{p}.{s}!!!!",
        "'$$$$' inside the signature": f"{h}.{p}.{s[:10]}$$$${s[10:]}",
        "a newline inside the signature": f"{h}.{p}.{s[:10]}\n{s[10:]}",
        "a space inside the signature": f"{h}.{p}.{s[:10]} {s[10:]}",
        "padding on the header": f"{h}{'=' * (-len(h) % 4) or '===='}.{p}.{s}",
        "padding on the payload": f"{h}.{p}{'=' * (-len(p) % 4) or '===='}.{s}",
        "a '+' alphabet character": f"{h}.{p}.{s[:5]}+{s[5:]}",
        "'@' inside the payload": f"{h}.{p[:7]}@{p[7:]}",
        "trailing newline": t + "\n",
        "leading space": " " + t,
    }
    for name, part in (("signature", s), ("header", h), ("payload", p)):
        if len(part) % 4 in (2, 3):
            spelled = _non_canonical_last(part)
            assert unb64(spelled) == unb64(part)  # the lenient decoder sees the same bytes
            out[f"a non-canonical last character of the {name}"] = t.replace(part, spelled, 1) \
                if name != "signature" else f"{h}.{p}.{spelled}"
    return out


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"])
async def test_a_token_verifies_only_in_its_own_spelling(svc: IdentityService, alg: str) -> None:
    t = token(alg)
    principal = await svc.authenticate(t)
    checked = 0
    for what, spelled in respellings(t).items():
        with pytest.raises(AuthError) as info:
            await svc.authenticate(spelled)
        assert info.value.reason == "invalid_token", (alg, what, info.value.message)
        assert info.value.message == MALFORMED, (alg, what, info.value.message)
        checked += 1
    assert checked >= 12
    assert len(svc._cache) == 1  # only the real spelling was ever verified and remembered
    assert await svc.authenticate(t) is principal


async def test_non_canonical_trailing_bits_are_refused_in_every_segment(svc: IdentityService) -> None:
    # Find tokens whose segments end on a partial group, so each segment has a non-canonical twin.
    seen: set[str] = set()
    for i in range(40):
        t = token("ES256", sub=f"s{i:0{i % 7 + 1}}")
        for what, spelled in respellings(t).items():
            if "non-canonical" not in what:
                continue
            seen.add(what)
            with pytest.raises(AuthError) as info:
                await svc.authenticate(spelled)
            assert (info.value.reason, info.value.message) == ("invalid_token", MALFORMED), what
    assert {"a non-canonical last character of the header", "a non-canonical last character of the payload",
            "a non-canonical last character of the signature"} <= seen


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
async def test_an_ecdsa_signature_and_its_twin_share_one_cache_entry(svc: IdentityService, alg: str) -> None:
    """(r, s) and (r, n-s) both verify (ECDSA is malleable; an IdP may sign with either), so the
    cache is keyed by the low-s spelling: the twin is served from the entry, not verified again."""
    size = {"ES256": 32, "ES384": 48, "ES512": 66}[alg]
    t = token(alg)
    h, p, s = t.split(".")
    sig = unb64(s)
    twin_s = ORDER[alg] - int.from_bytes(sig[size:], "big")
    twin = f"{h}.{p}.{b64(sig[:size] + twin_s.to_bytes(size, 'big'))}"
    assert twin != t
    first = await svc.authenticate(t)
    assert await svc.authenticate(twin) is first
    assert len(svc._cache) == 1

    # ... and the key is no shortcut: same header and payload, any other s, is verified and refused.
    for other in (1, twin_s + 1, ORDER[alg] - 1, int.from_bytes(sig[size:], "big") ^ 1):
        forged = f"{h}.{p}.{b64(sig[:size] + other.to_bytes(size, 'big'))}"
        with pytest.raises(AuthError) as info:
            await svc.authenticate(forged)
        assert info.value.reason == "bad_signature"


async def test_an_rsa_signature_must_be_as_long_as_the_modulus(svc: IdentityService) -> None:
    """OpenSSL accepts an RSASSA-PSS signature with its leading zero octet left off: a second spelling."""
    for i in range(4000):
        t = token("PS256", sub=f"s{i}")
        h, p, s = t.split(".")
        if unb64(s)[0] == 0:
            break
    else:
        pytest.skip("no PS256 signature with a leading zero octet in 4000 tries")
    assert (await svc.authenticate(t)).subject == f"s{i}"
    short = f"{h}.{p}.{b64(unb64(s)[1:])}"
    with pytest.raises(AuthError) as info:
        await svc.authenticate(short)
    assert info.value.reason == "bad_signature"
    with pytest.raises(AuthError):
        await svc.authenticate(f"{h}.{p}.{b64(bytes(1) + unb64(s))}")
