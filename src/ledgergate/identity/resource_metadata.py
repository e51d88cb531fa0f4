"""RFC 9728 OAuth 2.0 Protected Resource Metadata and the 401 challenge that points to it.

An MCP client that receives 401 reads `resource_metadata` from the
`WWW-Authenticate` header, fetches the document, and learns which
authorization servers can issue tokens for this resource: that is how it
starts its OAuth flow without any out-of-band configuration.
"""

from __future__ import annotations

from typing import Any

from ledgergate.errors import AuthError

#: OAuth error codes (RFC 6750 §3.1) for identity refusal reasons.
_ERROR_FOR_REASON = {
    "missing_token": None,  # RFC 6750 §3.1: no error code when no credential was sent
}


def protected_resource_metadata(resource_url: str, issuers: list[str], scopes: list[str]) -> dict[str, Any]:
    """The RFC 9728 §2 document for one protected resource (e.g. `https://gw/mcp/bank`).

    Bearer tokens are accepted in the Authorization header only: RFC 9728
    `bearer_methods_supported` says so, and query-string tokens are refused.
    """
    doc: dict[str, Any] = {
        "resource": resource_url,
        "authorization_servers": list(dict.fromkeys(issuers)),
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
        ],
    }
    if scopes:
        doc["scopes_supported"] = list(dict.fromkeys(scopes))
    return doc


def _quoted(value: str) -> str:
    """An RFC 9110 quoted-string: no control characters, `"` and `\\` escaped."""
    clean = "".join(ch if (" " <= ch <= "~") else " " for ch in value)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(resource_metadata_url: str, error: str | None, description: str | None) -> str:
    """The `WWW-Authenticate` value for a 401: `Bearer resource_metadata="…", error="…", error_description="…"`."""
    params = [f"resource_metadata={_quoted(resource_metadata_url)}"]
    if error:
        params.append(f"error={_quoted(error)}")
    if description:
        params.append(f"error_description={_quoted(description[:300])}")
    return "Bearer " + ", ".join(params)


def challenge_for(exc: AuthError, resource_metadata_url: str) -> str:
    """The challenge for an identity refusal: `invalid_token` with the error's safe message,
    or only the metadata pointer when no credential was presented (RFC 6750 §3.1)."""
    error = _ERROR_FOR_REASON.get(exc.reason, "invalid_token")
    return www_authenticate(resource_metadata_url, error, exc.message if error else None)


def metadata_url(base_url: str, resource_path: str) -> str:
    """`https://gw` + `/mcp/bank` → `https://gw/.well-known/oauth-protected-resource/mcp/bank` (RFC 9728 §3.1)."""
    return base_url.rstrip("/") + "/.well-known/oauth-protected-resource/" + resource_path.lstrip("/")
