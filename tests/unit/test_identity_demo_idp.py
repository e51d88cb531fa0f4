"""The embedded development issuer issues real tokens the real verification path accepts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ledgergate.demo.idp import DevIdentityProvider
from ledgergate.errors import AuthError
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings

ISSUER = "http://127.0.0.1:9400"


async def test_dev_idp_tokens_verify_through_discovery_and_jwks() -> None:
    idp = DevIdentityProvider(ISSUER)
    other = DevIdentityProvider(ISSUER)  # same issuer URL, different key: an impostor
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app))
    svc = IdentityService(IdentitySettings(api_keys=False, oidc=[idp.issuer_settings()]), None, Path("."),
                          http_client=client)
    await svc.start()
    try:
        assert svc.readiness() == {ISSUER: "ok"}
        alice = await svc.authenticate(idp.mint("alice", ["staff"]))
        assert (alice.subject, alice.kind, alice.groups) == ("alice", "human", frozenset({"staff"}))
        bot = await svc.authenticate(idp.mint("nightly-job", ["ci"], kind="service", lifetime=300))
        assert bot.kind == "service" and bot.groups == frozenset({"ci"})
        with pytest.raises(AuthError) as info:
            await svc.authenticate(other.mint("alice", ["admin"]))
        assert info.value.reason == "bad_signature"
        with pytest.raises(ValueError):
            idp.mint("alice", lifetime=7200)
    finally:
        await svc.close()
        await client.aclose()


def test_jwks_has_no_private_material() -> None:
    keys = DevIdentityProvider(ISSUER).jwks()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(keys[0])
