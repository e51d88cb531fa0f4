"""The OIDC verifier with every allowed key type, served from an in-process JWKS.

The integration suite covers RS256 against a real provider; here the key-type
rules are checked for PS/ES/EdDSA, plus the verified-token cache's bounds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ledgergate.errors import AuthError
from ledgergate.identity.jwks import parse_jwks
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import ASYMMETRIC_ALGORITHMS, IdentitySettings, OidcIssuerSettings

ISSUER = "https://idp.test"


def _jwk(private: Any, kid: str, alg: str | None) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        d = json.loads(RSAAlgorithm.to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        d = json.loads(ECAlgorithm.to_jwk(public))
    else:
        d = json.loads(OKPAlgorithm.to_jwk(public))
    d["kid"] = kid
    if alg:
        d["alg"] = alg
    return d


KEYS = {
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "ed": ed25519.Ed25519PrivateKey.generate(),
}


def jwks_doc() -> dict[str, Any]:
    return {"keys": [
        _jwk(KEYS["rsa"], "rsa", None),
        _jwk(KEYS["p256"], "p256", "ES256"),
        _jwk(KEYS["p384"], "p384", None),
        _jwk(KEYS["ed"], "ed", "EdDSA"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # never a signing key here
        _jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "weak", None),
    ]}


def transport() -> httpx.MockTransport:
    doc = jwks_doc()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/keys"})
        if request.url.path == "/keys":
            return httpx.Response(200, json=doc)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def token(key: str, alg: str, kid: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": "ledgergate", "sub": "svc", "iat": now, "exp": now + 600, **claims}
    headers = {"kid": kid if kid is not None else key} if kid != "" else {}
    return jwt.encode(payload, KEYS[key], algorithm=alg, headers=headers)


@pytest.fixture
async def svc() -> Any:
    client = httpx.AsyncClient(transport=transport())
    settings = IdentitySettings(api_keys=False, token_cache_size=4,
                                oidc=[OidcIssuerSettings(issuer=ISSUER, jwks_min_refresh_interval=60)])
    service = IdentityService(settings, None, Path("."), http_client=client)
    await service.start()
    yield service
    await service.close()
    await client.aclose()


def test_parse_jwks_keeps_only_usable_signing_keys() -> None:
    keys = parse_jwks(jwks_doc(), frozenset(ASYMMETRIC_ALGORITHMS))
    assert set(keys) == {"rsa", "p256", "p384", "ed"}
    assert keys["rsa"].algorithms == frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    assert keys["p256"].algorithms == frozenset({"ES256"})
    assert keys["p384"].algorithms == frozenset({"ES384"})
    assert keys["ed"].algorithms == frozenset({"EdDSA"})
    with pytest.raises(ValueError):
        parse_jwks({"nokeys": []}, frozenset(ASYMMETRIC_ALGORITHMS))


@pytest.mark.parametrize(("key", "alg"), [
    ("rsa", "RS256"), ("rsa", "RS512"), ("rsa", "PS256"), ("p256", "ES256"), ("p384", "ES384"), ("ed", "EdDSA"),
])
async def test_each_key_type_verifies(svc: IdentityService, key: str, alg: str) -> None:
    assert (await svc.authenticate(token(key, alg))).subject == "svc"


async def test_token_without_kid_tries_matching_keys(svc: IdentityService) -> None:
    assert (await svc.authenticate(token("p256", "ES256", kid=""))).subject == "svc"


async def test_alg_must_fit_the_key(svc: IdentityService) -> None:
    # An ES256 signature presented as from the RSA key, and RS256 claimed for the P-256 key.
    with pytest.raises(AuthError) as info:
        await svc.authenticate(token("p256", "ES256", kid="rsa"))
    assert info.value.reason == "alg_not_allowed"
    with pytest.raises(AuthError) as info:
        await svc.authenticate(token("rsa", "RS256", kid="p256"))
    assert info.value.reason == "alg_not_allowed"
    # The HMAC "key" in the JWKS is never usable, whatever the header says.
    head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "hmac"}).encode()).decode()
    with pytest.raises(AuthError) as info:
        await svc.authenticate(head + ".e30.c2ln")
    assert info.value.reason == "alg_not_allowed"


async def test_crit_header_is_refused(svc: IdentityService) -> None:
    t = jwt.encode({"iss": ISSUER, "aud": "ledgergate", "sub": "x", "exp": int(time.time()) + 60},
                   KEYS["rsa"], algorithm="RS256", headers={"kid": "rsa", "crit": ["exp"]})
    with pytest.raises(AuthError) as info:
        await svc.authenticate(t)
    assert info.value.reason == "invalid_token"


async def test_missing_exp_and_audience_lists(svc: IdentityService) -> None:
    with pytest.raises(AuthError) as info:
        await svc.authenticate(token("rsa", "RS256", exp=None))
    assert info.value.reason == "invalid_token"
    assert (await svc.authenticate(token("rsa", "RS256", aud=["x", "ledgergate"]))).subject == "svc"
    with pytest.raises(AuthError) as info:
        await svc.authenticate(token("rsa", "RS256", aud=None))
    assert info.value.reason == "wrong_audience"


async def test_verified_token_cache_is_bounded(svc: IdentityService) -> None:
    tokens = [token("ed", "EdDSA", sub=f"s{i}") for i in range(10)]
    for t in tokens:
        await svc.authenticate(t)
    assert len(svc._cache) <= 4
    assert (await svc.authenticate(tokens[0])).subject == "s0"


async def test_api_keys_never_reach_the_jwt_path(svc: IdentityService) -> None:
    with pytest.raises(AuthError) as info:
        await svc.authenticate("lgk_" + token("rsa", "RS256"))
    assert info.value.reason == "invalid_token" and "API key" in info.value.message


def test_config_refuses_none_and_hmac() -> None:
    from ledgergate.config import ConfigError, parse_config

    text = "identity:\n  oidc:\n    - issuer: https://idp.example\n      algorithms: [RS256, HS256]\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert "line 4" in str(info.value) and "HS256" in str(info.value)
    with pytest.raises(ConfigError):
        parse_config(text.replace("HS256", "none"), env={})
    loaded = parse_config("identity:\n  oidc:\n    - issuer: https://idp.example\n"
                          "      groups_claim: [roles, groups]\n      max_token_lifetime: 15m\n", env={})
    assert loaded.identity.oidc[0].groups_paths == ("roles", "groups")
    assert loaded.identity.oidc[0].max_token_lifetime == 900


async def test_kubernetes_api_server_keys_with_jwks_uri_and_token_file(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    doc = jwks_doc()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("authorization") != "Bearer sa-token":
            return httpx.Response(401)
        return httpx.Response(200, json=doc) if request.url.path == "/openid/v1/jwks" else httpx.Response(404)

    token_file = tmp_path / "token"
    token_file.write_text("sa-token\n")
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = IdentitySettings(api_keys=False, oidc=[OidcIssuerSettings(
        issuer=ISSUER, jwks_uri="https://kubernetes.default.svc/openid/v1/jwks",
        auth_token_file=str(token_file), service_kind="kubernetes")])
    svc = IdentityService(settings, None, tmp_path, http_client=client)
    await svc.start()
    try:
        assert svc.readiness() == {ISSUER: "ok"}
        assert [r.url.path for r in seen] == ["/openid/v1/jwks"]  # no discovery
        t = token("rsa", "RS256", sub="system:serviceaccount:ops:agent",
                  **{"kubernetes.io": {"namespace": "ops", "serviceaccount": {"name": "agent"}}})
        p = await svc.authenticate(t)
        assert p.subject == "system:serviceaccount:ops:agent" and "system:serviceaccounts:ops" in p.groups
    finally:
        await svc.close()
        await client.aclose()
