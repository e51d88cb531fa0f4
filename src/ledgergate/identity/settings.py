"""The `identity` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ledgergate.durations import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OidcIssuerSettings(_Strict):
    issuer: str
    audience: str | list[str] = "ledgergate"
    groups_claim: str = "groups"
    subject_claim: str = "sub"
    max_token_lifetime: Duration = 3600.0
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
    )
    leeway: Duration = 30.0
    jwks_cache_ttl: Duration = 300.0
    required_claims: list[str] = Field(default_factory=list)
    # kind=service when any of these claims/values is present (see identity.oidc).
    service_kind: str | None = None  # "kubernetes" | "github-actions" | None
    disabled_subjects: list[str] = Field(default_factory=list)


class IdentitySettings(_Strict):
    oidc: list[OidcIssuerSettings] = Field(default_factory=list)
    api_keys: bool = True
    disabled_subjects: list[str] = Field(default_factory=list)
