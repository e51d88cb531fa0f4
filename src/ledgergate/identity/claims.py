"""From verified claims to a Principal: subject, kind and groups.

Pure functions, no I/O, so claim mappings for every kind of issuer
(plain OIDC, Keycloak, Entra ID, Kubernetes, GitHub Actions) are unit-tested
without a token in sight. Signature and time checks happen before this runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledgergate.errors import AuthError
from ledgergate.principal import Principal, PrincipalKind
from ledgergate.identity.settings import OidcIssuerSettings

_MISSING = object()


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a claim path, or None.

    A claim whose own name contains dots ("kubernetes.io", URL-named Auth0
    claims) is matched literally first; otherwise the path is walked one
    dotted segment at a time ("realm_access.roles").
    """
    value = claims.get(path, _MISSING)
    if value is not _MISSING:
        return value
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str) and v]
    return []


def groups_from(claims: Mapping[str, Any], paths: tuple[str, ...]) -> set[str]:
    """Union of the string values found at each path (a string is one group)."""
    out: set[str] = set()
    for path in paths:
        out.update(_strings(claim_at(claims, path)))
    return out


def kubernetes_identity(claims: Mapping[str, Any]) -> tuple[str, set[str], dict[str, Any]]:
    """Subject, groups and convenience claims of a projected service-account token.

    The `kubernetes.io` claim is authoritative: the subject becomes
    `system:serviceaccount:<ns>:<name>` and the groups are the ones Kubernetes
    itself gives a service account (`system:serviceaccounts`,
    `system:serviceaccounts:<ns>`), so policies read like RBAC bindings.
    """
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, Mapping):
        raise AuthError("the token is not a Kubernetes service-account token", "invalid_token")
    namespace = k8s.get("namespace")
    sa = k8s.get("serviceaccount")
    name = sa.get("name") if isinstance(sa, Mapping) else None
    if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
        raise AuthError("the Kubernetes token names no namespace or service account", "invalid_token")
    subject = f"system:serviceaccount:{namespace}:{name}"
    sub = claims.get("sub")
    if sub is not None and sub != subject:
        raise AuthError("the Kubernetes token's subject does not match its service account", "invalid_token")
    groups = {"system:serviceaccounts", f"system:serviceaccounts:{namespace}"}
    extra: dict[str, Any] = {"namespace": namespace, "serviceaccount": name}
    pod = k8s.get("pod")
    if isinstance(pod, Mapping) and isinstance(pod.get("name"), str):
        extra["pod"] = pod["name"]
    return subject, groups, extra


_GITHUB_FIELDS = (
    "repository", "repository_owner", "ref", "ref_type", "workflow", "workflow_ref",
    "job_workflow_ref", "environment", "event_name", "actor", "run_id", "sha",
)


def github_actions_identity(claims: Mapping[str, Any]) -> tuple[str, set[str], dict[str, Any]]:
    """Subject, groups and policy-facing claims of a GitHub Actions OIDC token.

    The subject stays GitHub's own (`repo:org/name:ref:refs/heads/main`, ...).
    Groups name the repository, its owner and the deployment environment so a
    rule can match "any job of org/name" without parsing subjects; repository,
    ref and workflow stay in `claims` for CEL conditions.
    """
    repository = claims.get("repository")
    sub = claims.get("sub")
    if not isinstance(repository, str) or not repository or not isinstance(sub, str) or not sub:
        raise AuthError("the token is not a GitHub Actions token (no repository)", "invalid_token")
    groups = {f"github:repo:{repository}"}
    owner = claims.get("repository_owner")
    if isinstance(owner, str) and owner:
        groups.add(f"github:org:{owner}")
    env = claims.get("environment")
    if isinstance(env, str) and env:
        groups.add(f"github:env:{env}")
    extra = {k: claims[k] for k in _GITHUB_FIELDS if k in claims}
    return sub, groups, extra


def principal_from_claims(issuer: OidcIssuerSettings, claims: Mapping[str, Any],
                          expires_at: float | None) -> Principal:
    """Map verified claims to a Principal according to the issuer's settings."""
    groups = groups_from(claims, issuer.groups_paths)
    kind: PrincipalKind = "human"
    extra: dict[str, Any] = {}
    if issuer.service_kind == "kubernetes":
        subject, more, extra = kubernetes_identity(claims)
        groups |= more
        kind = "service"
    elif issuer.service_kind == "github-actions":
        subject, more, extra = github_actions_identity(claims)
        groups |= more
        kind = "service"
    else:
        raw = claim_at(claims, issuer.subject_claim)
        if not isinstance(raw, str) or not raw:
            raise AuthError(f"the token has no '{issuer.subject_claim}' claim", "invalid_token")
        subject = raw
        if issuer.service_kind == "all":
            kind = "service"
        elif issuer.kind_claim is not None and claim_at(claims, issuer.kind_claim) == "service":
            kind = "service"
    merged = dict(claims)
    for key, value in extra.items():
        merged.setdefault(key, value)
    return Principal(issuer=issuer.issuer, subject=subject, kind=kind, groups=frozenset(groups),
                     claims=merged, expires_at=expires_at)
