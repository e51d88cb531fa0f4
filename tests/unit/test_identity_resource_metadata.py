"""RFC 9728 metadata document and the 401 challenge."""

from __future__ import annotations

from ledgergate.errors import AuthError
from ledgergate.identity.resource_metadata import (
    challenge_for,
    metadata_url,
    protected_resource_metadata,
    www_authenticate,
)


def test_metadata_document() -> None:
    doc = protected_resource_metadata("https://gw.example/mcp/bank",
                                      ["https://idp.example", "https://idp.example"], ["mcp:tools"])
    assert doc["resource"] == "https://gw.example/mcp/bank"
    assert doc["authorization_servers"] == ["https://idp.example"]
    assert doc["scopes_supported"] == ["mcp:tools"]
    assert doc["bearer_methods_supported"] == ["header"]
    assert "scopes_supported" not in protected_resource_metadata("https://gw.example/mcp/bank", [], [])


def test_metadata_url() -> None:
    assert metadata_url("https://gw.example/", "/mcp/bank") == \
        "https://gw.example/.well-known/oauth-protected-resource/mcp/bank"


def test_www_authenticate() -> None:
    url = "https://gw.example/.well-known/oauth-protected-resource/mcp/bank"
    assert www_authenticate(url, None, None) == f'Bearer resource_metadata="{url}"'
    value = www_authenticate(url, "invalid_token", 'the "token" has\r\nexpired \\ ok')
    assert value == (f'Bearer resource_metadata="{url}", error="invalid_token", '
                     'error_description="the \\"token\\" has  expired \\\\ ok"')
    assert "\n" not in value and "\r" not in value


def test_challenge_for_refusals() -> None:
    url = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp/x"
    assert challenge_for(AuthError("a bearer token is required", "missing_token"), url) == \
        f'Bearer resource_metadata="{url}"'
    assert challenge_for(AuthError("the token has expired", "expired"), url) == \
        f'Bearer resource_metadata="{url}", error="invalid_token", error_description="the token has expired"'
