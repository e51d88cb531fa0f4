"""The `identity` section of the config.

Validation here is the first line of the algorithm allow-list: a config that
names `none` or an HMAC algorithm for an OIDC issuer is refused at load time,
because a public-key issuer can never legitimately sign with a shared secret
(that is the classic key-confusion attack).
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ledgergate.durations import Duration
from ledgergate.identity.redact import redact_url

#: Asymmetric JWS algorithms ledgergate can verify. Never `none`, never HS*.
ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)


#: The issuer of API-key principals (identity.apikeys.API_KEY_ISSUER; repeated here, which imports nothing).
API_KEY_ISSUER = "ledgergate:apikey"
#: An API-key principal's subject is this prefix + the key's name (identity.apikeys.subject_for).
API_KEY_SUBJECT_PREFIX = "apikey:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def issuer_key(issuer: str) -> str:
    """An issuer as off-boarding entries compare it: trailing slashes removed.

    The verifier accepts a token whose `iss` is the configured issuer or that issuer without its
    trailing slash, and `_unique_issuers` refuses two issuers differing only there, so matching
    with trailing slashes removed on both sides can never name a second issuer's people.
    """
    return issuer.rstrip("/")


def _entry_issuer(entry: str, known: dict[str, str]) -> tuple[str, str] | None:
    """(issuer key, subject) when `entry` is `issuer#subject` for an issuer in `known` (keyed by
    issuer_key), else None. Issuers have no fragment (OpenID Discovery §3), so the issuer part ends at
    the first `#` after which the rest is the subject; later `#`s belong to the subject."""
    at = entry.find("#")
    while at >= 0:
        key = issuer_key(entry[:at])
        if key in known:
            return key, entry[at + 1:]
        at = entry.find("#", at + 1)
    return None


def _refuse(problems: list[tuple[int, str, str]]) -> None:
    """Raise one validation error per (index, entry, message), each located at its list item so the
    config error names the item's own line (`identity.disabled_subjects[2]`)."""
    if problems:
        raise ValidationError.from_exception_data("disabled_subjects", [
            InitErrorDetails(type=PydanticCustomError("value_error", "{message}", {"message": message}),
                             loc=(index,), input=entry)
            for index, entry, message in problems])


def _api_key_problem(entry: str, subject: str) -> str | None:
    if subject.startswith(API_KEY_SUBJECT_PREFIX) and len(subject) > len(API_KEY_SUBJECT_PREFIX):
        return None
    return (f"{entry!r} can never match: API-key principals are named {API_KEY_ISSUER}#apikey:<name> "
            f"(or just apikey:<name>), e.g. '{API_KEY_ISSUER}#{API_KEY_SUBJECT_PREFIX}{subject}'")


class OidcIssuerSettings(_Strict):
    """One trusted token issuer (an OIDC provider, a Kubernetes API server, GitHub Actions, ...)."""

    issuer: str
    audience: str | list[str] = "ledgergate"
    # One dotted path ("groups", "realm_access.roles") or several whose values are merged
    # (Entra: ["roles", "groups"]). A claim whose own name contains dots is matched first.
    groups_claim: str | list[str] = "groups"
    subject_claim: str = "sub"
    max_token_lifetime: Duration = Field(default=3600.0, gt=0)  # 0 would refuse every token
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
    http_timeout: Duration = Field(default=5.0, gt=0)  # 0: no key could ever be fetched
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

    @field_validator("audience", "groups_claim")
    @classmethod
    def _named(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        # an empty audience list refuses every token; an empty groups claim path finds no groups
        what = "an audience" if info.field_name == "audience" else "a claim name (a dotted path)"
        if isinstance(value, list) and not value:
            raise ValueError(f"an empty list names nothing; give {what}, or omit the key for the default")
        if any(not v.strip() for v in ([value] if isinstance(value, str) else value)):
            raise ValueError(f"must be non-empty: give {what}, or omit the key for the default")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("'issuer' must be an http(s) URL")
        return value

    @field_validator("disabled_subjects")
    @classmethod
    def _own_subjects(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """A per-issuer list holds bare subjects of this issuer.

        `issuer#subject` naming this same issuer (trailing slashes aside) is accepted and matches
        like the bare subject (see `disabled_keys`): an operator who writes the full name means that
        person. Naming another issuer (or the API keys) here would never match anyone, so it is
        refused and pointed at `identity.disabled_subjects`; so is any entry shaped like a URL
        followed by `#` whose URL is not this issuer (a typo of it). A subject that really contains
        `#` after a URL is written `issuer#that-subject`.
        """
        issuer = info.data.get("issuer")
        if not isinstance(issuer, str):
            return value  # the issuer itself was refused; that error is reported
        own = {issuer_key(issuer): issuer}
        problems: list[tuple[int, str, str]] = []
        for index, entry in enumerate(value):
            if _entry_issuer(entry, own) is not None:
                continue
            head = entry.partition("#")[0]
            if "#" in entry and ("://" in head or head == API_KEY_ISSUER):
                problems.append((index, entry, (
                    f"{redact_url(head)!r} is not this list's issuer ({redact_url(issuer)!r}), so "
                    f"{_shown(entry)!r} would never match: list the bare subject "
                    f"{entry.partition('#')[2]!r} here, or put the entry under identity.disabled_subjects "
                    f"with an issuer configured in identity.oidc")))
        _refuse(problems)
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
    # Subjects refused everywhere: a bare subject ("alice", "apikey:ci") or issuer#subject
    # (an identity.oidc issuer, or ledgergate:apikey#apikey:<name>); see `_known_subjects`.
    disabled_subjects: list[str] = Field(default_factory=list)
    # Verified tokens remembered (by SHA-256 of the token) until they expire.
    token_cache_size: int = Field(default=10000, ge=0)
    # API keys' last-used time is written at most this often per key.
    api_key_last_used_interval: Duration = 60.0

    @field_validator("disabled_subjects")
    @classmethod
    def _known_subjects(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Off-boarding must not fail open on a typo: every entry must be able to match.

        Accepted: a bare subject (`alice`, `apikey:ci`; matches that subject from any issuer),
        `issuer#subject` for an issuer in `identity.oidc` (trailing slashes on either side do not
        matter, as for a token's `iss`), and `ledgergate:apikey#apikey:<name>`. Refused, naming what
        would match: an entry whose part before a `#` names no configured issuer (a different
        scheme, host, port, case or path is a different issuer, whose people this gateway never
        sees), and `ledgergate:apikey#<name>` without the `apikey:` prefix of key subjects. A bare
        subject that itself contains `#` is written `issuer#subject` for its issuer.
        """
        oidc = info.data.get("oidc")
        if not isinstance(oidc, list):
            return value  # identity.oidc was refused; that error is reported
        known = {issuer_key(s.issuer): s.issuer for s in oidc if isinstance(s, OidcIssuerSettings)}
        known[API_KEY_ISSUER] = API_KEY_ISSUER
        problems: list[tuple[int, str, str]] = []
        for index, entry in enumerate(value):
            if "#" not in entry:
                continue
            found = _entry_issuer(entry, known)
            if found is not None:
                problem = _api_key_problem(entry, found[1]) if found[0] == API_KEY_ISSUER else \
                    (None if found[1] else f"{_shown(entry)!r} names no subject after '#'")
                if problem:
                    problems.append((index, entry, problem))
                continue
            head, _, subject = entry.partition("#")
            configured = [v for k, v in known.items() if k != API_KEY_ISSUER]
            close = [v for v in configured if issuer_key(v).lower() == issuer_key(head).lower()]
            if close:
                hint = f"did you mean {close[0] + '#' + subject!r}?"
            elif configured:
                hint = "configured issuers: " + ", ".join(repr(redact_url(v)) for v in configured)
            else:
                hint = "no identity.oidc issuer is configured"
            if "://" in head:
                advice = (f"write issuer#subject with a configured issuer, {API_KEY_ISSUER}#apikey:<name> "
                          f"for an API key, or the bare subject {subject!r} to match it from every issuer")
            else:
                example = configured[0] if configured else "https://issuer"
                advice = f"a subject that itself contains '#' is written issuer#subject, e.g. {example + '#' + entry!r}"
            problems.append((index, entry, (
                f"{_shown(entry)!r} would never match anyone: {redact_url(head)!r} is not an issuer "
                f"configured in identity.oidc ({hint}); {advice}")))
        _refuse(problems)
        return value

    @model_validator(mode="after")
    def _unique_issuers(self) -> IdentitySettings:
        seen: set[str] = set()
        for entry in self.oidc:
            key = entry.issuer.rstrip("/")
            if key in seen:
                raise ValueError(f"issuer {entry.issuer!r} is listed twice")
            seen.add(key)
        return self


def _shown(entry: str) -> str:
    """An entry as an error quotes it: its issuer part redacted like any URL."""
    head, sep, subject = entry.partition("#")
    return (redact_url(head) if "://" in head else head) + sep + subject


def disabled_keys(settings: IdentitySettings) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """The off-boarding lists as the service matches them.

    Global: each entry as written (a bare subject matches `principal.subject`, and a full key
    `principal.key`), plus for `issuer#subject` entries the form `issuer_key(issuer)#subject`,
    compared with the principal's issuer likewise normalised. Per issuer (keyed by issuer_key):
    bare subjects, and `issuer#subject` entries naming that issuer reduced to the subject.
    """
    known = {issuer_key(s.issuer): s.issuer for s in settings.oidc}
    known[API_KEY_ISSUER] = API_KEY_ISSUER
    globally: set[str] = set()
    for entry in settings.disabled_subjects:
        globally.add(entry)
        found = _entry_issuer(entry, known)
        if found is not None:
            globally.add(f"{found[0]}#{found[1]}")
    per_issuer: dict[str, frozenset[str]] = {}
    for issuer in settings.oidc:
        own = {issuer_key(issuer.issuer): issuer.issuer}
        subjects: set[str] = set()
        for entry in issuer.disabled_subjects:
            subjects.add(entry)
            found = _entry_issuer(entry, own)
            if found is not None:
                subjects.add(found[1])
        per_issuer[issuer_key(issuer.issuer)] = frozenset(subjects)
    return frozenset(globally), per_issuer
