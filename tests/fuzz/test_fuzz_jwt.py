"""Fuzzing JWT verification (`identity/oidc.py` through `identity/service.py`) with generated tokens:
raw junk, malformed segments, and well-formed tokens with mutated headers and claims, signed for
real by the embedded development issuer (`demo/idp.py`, served in-process over ASGI) or not.

Properties: `authenticate` returns a Principal or raises AuthError — no other exception, no message
that echoes the token — and a Principal comes only from a token this issuer really signed with an
allowed algorithm, for this audience, unexpired.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.demo.idp import KIND_CLAIM, DevIdentityProvider
from ledgergate.errors import AuthError
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings, OidcIssuerSettings
from ledgergate.principal import Principal
from tests.fuzz.conftest import examples

ISSUER = "http://127.0.0.1:9400"
AUDIENCE = "ledgergate"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
ODD = st.sampled_from([None, "", 0, -1, 1e308, -1e308, 2**63, 2**64, True, [], {}, "x" * 300, "\u0000", [AUDIENCE, 1],
                       {"iss": ISSUER}, "1700000000", ISSUER + "/", "HTTP://127.0.0.1:9400"])
CLAIMS = ["iss", "aud", "exp", "nbf", "iat", "sub", "groups", KIND_CLAIM, "kubernetes.io", "repository",
          "repository_owner", "environment", "realm_access", "jti"]


@st.composite
def tokens(draw: st.DrawFn, idp: DevIdentityProvider) -> tuple[str, bool]:
    """A token and whether it is one the gateway must accept (signed here, RS256, claims intact)."""
    shape = draw(st.sampled_from(["raw", "segments", "jws", "jws", "jws"]))
    if shape == "raw":
        return draw(st.text(max_size=60) | st.sampled_from(["a.b.c", "..", "e30.e30.", "e30.e30.e30", "Bearer x"])), False
    if shape == "segments":
        seg = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.é\u0000 ",
                      max_size=30)
        return ".".join(draw(st.lists(seg, min_size=1, max_size=5))), False
    now = int(time.time())
    header: dict[str, Any] = {"alg": "RS256", "kid": idp.kid, "typ": "JWT"}
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "nbf": now,
                              "exp": now + 600, "groups": ["staff"], KIND_CLAIM: "human"}
    intact = True
    for key in draw(st.lists(st.sampled_from(["alg", "kid", "typ", "crit", "jku", "jwk", "x5u"]), max_size=2,
                             unique=True)):
        value = draw(ODD | JSONISH | st.sampled_from(["none", "HS256", "RS384", "ES256", "PS256", "EdDSA", "rs256"]))
        if key in ("alg", "crit") or (key == "kid" and value != idp.kid):
            intact = False
        header[key] = value
    for key in draw(st.lists(st.sampled_from(CLAIMS), max_size=3, unique=True)):
        if draw(st.booleans()):
            claims.pop(key, None)
            if key in ("iss", "aud", "exp", "sub"):
                intact = False
        else:
            claims[key] = draw(ODD | JSONISH)
            if key in ("iss", "aud", "exp", "nbf", "iat", "sub"):
                intact = False
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    signature = idp._key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())  # noqa: SLF001
    how = draw(st.sampled_from(["valid", "valid", "empty", "junk", "truncated", "other-key", "resegmented"]))
    if how == "valid":
        return f"{head}.{body}.{b64(signature)}", intact
    if how == "empty":
        return f"{head}.{body}.", False
    if how == "junk":
        return f"{head}.{body}.{b64(draw(st.binary(max_size=300)))}", False
    if how == "truncated":
        return f"{head}.{body}.{b64(signature[: draw(st.integers(0, len(signature) - 1))])}", False
    if how == "other-key":
        return f"{head}.{body}.{b64(OTHER._key.sign(f'{head}.{body}'.encode(), padding.PKCS1v15(), hashes.SHA256()))}", False  # noqa: SLF001
    return f"{head}.{body}.{b64(signature)}.{draw(st.text(max_size=5))}", False


OTHER = DevIdentityProvider(ISSUER)  # same issuer URL, another key: an impostor


def test_any_token_is_a_principal_from_a_real_signature_or_an_auth_error() -> None:
    idp = DevIdentityProvider(ISSUER)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app))
    flavours = [idp.issuer_settings(),
                OidcIssuerSettings(issuer=ISSUER, audience=[AUDIENCE, "other"], groups_claim=["groups", "realm_access.roles"],
                                   max_token_lifetime=3600, algorithms=["RS256", "ES256"], service_kind="all"),
                OidcIssuerSettings(issuer=ISSUER, audience=AUDIENCE, max_token_lifetime=3600, service_kind="kubernetes"),
                OidcIssuerSettings(issuer=ISSUER, audience=AUDIENCE, max_token_lifetime=3600,
                                   service_kind="github-actions")]
    services = [IdentityService(IdentitySettings(api_keys=False, oidc=[f]), None, Path("."), http_client=client)
                for f in flavours]
    for svc in services:
        loop.run_until_complete(svc.start())

    async def verify(svc: IdentityService, token: str) -> Principal | AuthError:
        try:
            return await asyncio.wait_for(svc.authenticate(token), 5)
        except AuthError as exc:
            return exc

    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(tokens(idp))
    def check(case: tuple[str, bool]) -> None:
        token, intact = case
        for n, svc in enumerate(services):
            outcome = loop.run_until_complete(verify(svc, token))
            seen["refused" if isinstance(outcome, AuthError) else "accepted"] += 1
            if isinstance(outcome, AuthError):
                assert outcome.message and len(outcome.message) < 300
                assert len(token) < 12 or token not in outcome.message
                if n == 0 and intact:
                    raise AssertionError(f"a good token was refused: {outcome.message}")
            else:
                assert isinstance(outcome, Principal) and outcome.issuer == ISSUER
                head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
                assert head["alg"] == "RS256" and token.count(".") == 2
                assert token.rsplit(".", 1)[1], "accepted without a signature"

    try:
        check()
        assert seen["accepted"] and seen["refused"], seen  # both sides of the property were exercised
    finally:
        for svc in services:
            loop.run_until_complete(svc.close())
        loop.run_until_complete(client.aclose())
        loop.close()
