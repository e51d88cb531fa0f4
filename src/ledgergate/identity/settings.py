"""The `identity` section of the config.

Validation here is the first line of the algorithm allow-list: a config that
names `none` or an HMAC algorithm for an OIDC issuer is refused at load time,
because a public-key issuer can never legitimately sign with a shared secret
(that is the classic key-confusion attack).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ledgergate.durations import Duration

#: Asymmetric JWS algorithms ledgergate can verify. Never `none`, never HS*.
ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OidcIssuerSettings(_Strict):
    """One trusted token issuer (an OIDC provider, a Kubernetes API server, GitHub Actions, ...)."""

    issuer: str
    audience: str | list[str] = "ledgergate"
    # One dotted path ("groups", "realm_access.roles") or several whose values are merged
    # (Entra: ["roles", "groups"]). A claim whose own name contains dots is matched first.
    groups_claim: str | list[str] = "groups"
    subject_claim: str = "sub"
    max_token_lifetime: Duration = 3600.0
    algorithms: list[str] = Field(default_factory=lambda: list(ASYMMETRIC_ALGORITHMS))
    leeway: Duration = 30.0
    jwks_cache_ttl: Duration = 300.0
    # Refreshes caused by an unknown `kid` (or by having no keys) happen at most this often,
    # so tokens with garbage key ids cannot turn the gateway into a DoS tool against the IdP.
    jwks_min_refresh_interval: Duration = 10.0
    # Skip discovery and fetch keys from here (Kubernetes API servers often need this).
    jwks_uri: str | None = None
    # PEM bundle to trust for this issuer's HTTPS endpoints (e.g. the cluster CA).
    ca_file: str | None = None
    # A bearer token file sent when fetching discovery/JWKS (re-read each fetch because projected
    # tokens rotate), e.g. /var/run/secrets/kubernetes.io/serviceaccount/token for an API server.
    auth_token_file: str | None = None
    http_timeout: Duration = 5.0
    required_claims: list[str] = Field(default_factory=list)
    # How the principal's kind and extra groups are derived (see identity.claims):
    #   "kubernetes"     projected service-account tokens (subject system:serviceaccount:ns:name)
    #   "github-actions" GitHub Actions OIDC tokens (repository, ref, workflow kept for policy)
    #   "all"            every token from this issuer is a service identity
    #   None             human unless `kind_claim` says "service"
    service_kind: Literal["kubernetes", "github-actions", "all"] | None = None
    # A claim whose value "service" or "human" decides the kind (used by the demo IdP).
    kind_claim: str | None = None
    disabled_subjects: list[str] = Field(default_factory=list)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is needed")
        for alg in value:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(
                    f"algorithm {alg!r} is not allowed; use asymmetric ones: {', '.join(ASYMMETRIC_ALGORITHMS)}"
                )
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("'issuer' must be an http(s) URL")
        return value

    @property
    def audiences(self) -> frozenset[str]:
        return frozenset([self.audience] if isinstance(self.audience, str) else self.audience)

    @property
    def groups_paths(self) -> tuple[str, ...]:
        return (self.groups_claim,) if isinstance(self.groups_claim, str) else tuple(self.groups_claim)


class IdentitySettings(_Strict):
    oidc: list[OidcIssuerSettings] = Field(default_factory=list)
    api_keys: bool = True
    # Subjects refused everywhere: a bare subject ("alice", "apikey:ci") or issuer#subject.
    disabled_subjects: list[str] = Field(default_factory=list)
    # Verified tokens remembered (by SHA-256 of the token) until they expire.
    token_cache_size: int = Field(default=10000, ge=0)
    # API keys' last-used time is written at most this often per key.
    api_key_last_used_interval: Duration = 60.0

    @model_validator(mode="after")
    def _unique_issuers(self) -> IdentitySettings:
        seen: set[str] = set()
        for entry in self.oidc:
            key = entry.issuer.rstrip("/")
            if key in seen:
                raise ValueError(f"issuer {entry.issuer!r} is listed twice")
            seen.add(key)
        return self
