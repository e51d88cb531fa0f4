"""URLs the identity package puts into text are redacted: `/readyz` answers without authentication
and log lines travel, yet a JWKS or discovery URL (or the store URL) may carry credentials.

Userinfo is dropped and a query or fragment becomes `?…`/`#…`; scheme, host, port and path stay, so
an operator can still tell which endpoint failed. An upstream's response body is never quoted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings, OidcIssuerSettings

ISSUER = "http://127.0.0.1:18111"
SECRETS = ("PASSWD", "URLSECRET", "user:", "FRAGSECRET", "BODYSECRET", "STOREPW", "DISCOSECRET")


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (secret, text)


async def readiness_after_start(handler: Callable[[httpx.Request], httpx.Response], caplog: pytest.LogCaptureFixture,
                                **issuer: object) -> dict[str, str]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = IdentitySettings(api_keys=False, oidc=[OidcIssuerSettings(**{"issuer": ISSUER, **issuer})])
    svc = IdentityService(settings, None, Path("."), http_client=client)
    with caplog.at_level(logging.INFO):  # httpx's own "HTTP Request: GET <url>" lines included
        await svc.start()
    try:
        ready = svc.readiness()
        assert_clean(repr(ready))
        assert_clean(caplog.text)
        return ready
    finally:
        await svc.close()
        await client.aclose()


async def test_a_jwks_uri_with_credentials_is_redacted_in_readiness_and_log(caplog: pytest.LogCaptureFixture) -> None:
    """The reported case: the JWKS answers 404 and /readyz quoted its URL with password and query key."""
    ready = await readiness_after_start(
        lambda request: httpx.Response(404), caplog,
        jwks_uri="http://user:PASSWD@127.0.0.1:18111/nokeys?key=URLSECRET#FRAGSECRET")
    assert ready == {ISSUER: "no usable keys: ValueError: JWKS at http://127.0.0.1:18111/nokeys?…#… answered HTTP 404"}
    assert "http://127.0.0.1:18111/nokeys?…#… answered HTTP 404" in caplog.text
    assert "HTTP Request: GET http://127.0.0.1:18111/nokeys?…#… " in caplog.text


async def test_a_discovered_jwks_uri_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER,
                                             "jwks_uri": "https://user:PASSWD@keys.example:8443/k/v1?sig=URLSECRET"})
        return httpx.Response(503, text="BODYSECRET")

    ready = await readiness_after_start(handler, caplog)
    assert ready[ISSUER] == "no usable keys: ValueError: JWKS at https://keys.example:8443/k/v1?… answered HTTP 503"


async def test_a_transport_error_quoting_the_url_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url} (user:PASSWD, key=URLSECRET)", request=request)

    ready = await readiness_after_start(handler, caplog, jwks_uri="http://user:PASSWD@127.0.0.1:18111/k?key=URLSECRET")
    assert ready[ISSUER].startswith("no usable keys: cannot reach the issuer: ConnectError: cannot connect to "
                                    "http://127.0.0.1:18111/k?…"), ready


async def test_an_upstream_body_is_never_quoted(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": "https://admin:DISCOSECRET@evil.example/?token=URLSECRET",
                                             "jwks_uri": ISSUER + "/keys"})
        return httpx.Response(404)

    ready = await readiness_after_start(handler, caplog)
    assert ready[ISSUER] == ("no usable keys: ValueError: discovery names issuer 'https://evil.example/?…', "
                             "not the configured one")

    ready = await readiness_after_start(lambda request: httpx.Response(200, text="BODYSECRET not json"), caplog,
                                        jwks_uri=ISSUER + "/keys?key=URLSECRET")
    assert ready[ISSUER] == "no usable keys: ValueError: JWKS at http://127.0.0.1:18111/keys?… is not JSON"


async def test_an_issuer_with_credentials_is_named_redacted(caplog: pytest.LogCaptureFixture) -> None:
    ready = await readiness_after_start(lambda request: httpx.Response(404), caplog,
                                        issuer="https://user:PASSWD@idp.example:8443/realms/bank")
    assert list(ready) == ["https://idp.example:8443/realms/bank"]
    assert "https://idp.example:8443/realms/bank/.well-known/openid-configuration answered HTTP 404" in caplog.text


async def test_the_api_key_store_url_is_not_quoted(tmp_path: Path) -> None:
    svc = IdentityService(IdentitySettings(api_keys=True), "postgresql://lg:STOREPW@127.0.0.1:1/db?sslpassword=STOREPW",
                          tmp_path)
    await svc.start()
    try:
        assert_clean(repr(svc.readiness()))
    finally:
        await svc.close()


def test_redact_url_keeps_the_endpoint_and_drops_the_secrets() -> None:
    from ledgergate.identity.redact import redact_text, redact_url

    assert redact_url("http://user:PASSWD@127.0.0.1:18111/nokeys?key=URLSECRET") == "http://127.0.0.1:18111/nokeys?…"
    assert redact_url("https://idp.example/realms/bank") == "https://idp.example/realms/bank"
    assert redact_url("https://[::1]:8443/k#FRAGSECRET") == "https://[::1]:8443/k#…"
    assert redact_url("https://:PASSWD@h/?") == "https://h/?…"
    assert redact_url("http://[::1/x?a=URLSECRET") == "(an unparseable URL)"
    assert redact_url("https://h/\x1b[31m") == "https://h/?[31m"
    text = redact_text("GET http://user:PASSWD@h:1/p?key=URLSECRET failed; password PASSWD, value URLSECRET, "
                       "'user:PASSWD'", "http://user:PASSWD@h:1/p?key=URLSECRET")
    assert text == "GET http://h:1/p?… failed; password …, value …, '…'"
