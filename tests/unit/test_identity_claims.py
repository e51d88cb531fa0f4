"""Claim mapping: groups paths, Kubernetes service-account tokens, GitHub Actions tokens, kinds."""

from __future__ import annotations

import pytest

from ledgergate.errors import AuthError
from ledgergate.identity.claims import (
    claim_at,
    github_actions_identity,
    groups_from,
    kubernetes_identity,
    principal_from_claims,
)
from ledgergate.identity.settings import OidcIssuerSettings

# The shape of a real projected service-account token (kubectl create token, audience set).
K8S_CLAIMS = {
    "aud": ["ledgergate"],
    "exp": 1795577164,
    "iat": 1795573564,
    "iss": "https://kubernetes.default.svc.cluster.local",
    "jti": "0d6e6f0a-6f5e-4a43-8f7e-6a2f1c1f8b11",
    "kubernetes.io": {
        "namespace": "payments",
        "node": {"name": "worker-1", "uid": "6c1a"},
        "pod": {"name": "settlement-7d9f8", "uid": "1e0b"},
        "serviceaccount": {"name": "settlement", "uid": "9a3c"},
    },
    "nbf": 1795573564,
    "sub": "system:serviceaccount:payments:settlement",
}

# The shape of a real GitHub Actions OIDC token.
GHA_CLAIMS = {
    "jti": "example-id",
    "sub": "repo:octo-bank/ledger-jobs:environment:prod",
    "environment": "prod",
    "aud": "ledgergate",
    "ref": "refs/heads/main",
    "sha": "example-sha",
    "repository": "octo-bank/ledger-jobs",
    "repository_owner": "octo-bank",
    "actor_id": "12",
    "repository_visibility": "private",
    "repository_id": "74",
    "repository_owner_id": "65",
    "run_id": "example-run-id",
    "run_number": "10",
    "run_attempt": "2",
    "runner_environment": "github-hosted",
    "actor": "octocat",
    "workflow": "nightly-reconcile",
    "head_ref": "",
    "base_ref": "",
    "event_name": "schedule",
    "ref_type": "branch",
    "job_workflow_ref": "octo-bank/ledger-jobs/.github/workflows/nightly.yml@refs/heads/main",
    "iss": "https://token.actions.githubusercontent.com",
    "nbf": 1632492967,
    "exp": 1632493867,
    "iat": 1632493567,
}


def issuer(**fields: object) -> OidcIssuerSettings:
    return OidcIssuerSettings(issuer="https://idp.example", **fields)  # type: ignore[arg-type]


def test_claim_paths() -> None:
    claims = {"realm_access": {"roles": ["a", "b"]}, "kubernetes.io": {"namespace": "x"},
              "https://example.com/groups": ["c"], "groups": "solo"}
    assert claim_at(claims, "realm_access.roles") == ["a", "b"]
    assert claim_at(claims, "kubernetes.io") == {"namespace": "x"}  # dotted name matched literally
    assert claim_at(claims, "kubernetes.io.namespace") is None
    assert claim_at(claims, "https://example.com/groups") == ["c"]
    assert claim_at(claims, "realm_access.missing") is None
    assert claim_at(claims, "groups.deeper") is None


def test_groups_flat_nested_and_entra() -> None:
    assert groups_from({"groups": ["staff", "ops", 3, ""]}, ("groups",)) == {"staff", "ops"}
    assert groups_from({"groups": "staff"}, ("groups",)) == {"staff"}
    assert groups_from({"realm_access": {"roles": ["teller"]}}, ("realm_access.roles",)) == {"teller"}
    entra = {"roles": ["Ledger.Approver"], "groups": ["0f5c2a1e-guid"]}
    assert groups_from(entra, ("roles", "groups")) == {"Ledger.Approver", "0f5c2a1e-guid"}
    assert groups_from({"groups": {"not": "a list"}}, ("groups",)) == set()
    assert groups_from({}, ("groups",)) == set()


def test_keycloak_style_issuer_maps_nested_roles() -> None:
    claims = {"sub": "u1", "realm_access": {"roles": ["staff", "approvers"]},
              "resource_access": {"ledgergate": {"roles": ["admin"]}}}
    p = principal_from_claims(issuer(groups_claim=["realm_access.roles", "resource_access.ledgergate.roles"]),
                              claims, 10.0)
    assert p.groups == frozenset({"staff", "approvers", "admin"})
    assert p.kind == "human" and p.subject == "u1" and p.expires_at == 10.0


def test_kubernetes_service_account_token() -> None:
    subject, groups, extra = kubernetes_identity(K8S_CLAIMS)
    assert subject == "system:serviceaccount:payments:settlement"
    assert groups == {"system:serviceaccounts", "system:serviceaccounts:payments"}
    assert extra == {"namespace": "payments", "serviceaccount": "settlement", "pod": "settlement-7d9f8"}
    p = principal_from_claims(issuer(service_kind="kubernetes"), K8S_CLAIMS, None)
    assert p.kind == "service" and p.subject == subject
    assert p.claims["namespace"] == "payments"
    assert p.claims["kubernetes.io"]["pod"]["name"] == "settlement-7d9f8"


@pytest.mark.parametrize("broken", [
    {k: v for k, v in K8S_CLAIMS.items() if k != "kubernetes.io"},
    {**K8S_CLAIMS, "kubernetes.io": {"namespace": "payments"}},
    {**K8S_CLAIMS, "sub": "system:serviceaccount:other:settlement"},  # subject contradicts the claim
])
def test_kubernetes_token_without_a_service_account_is_refused(broken: dict[str, object]) -> None:
    with pytest.raises(AuthError) as info:
        principal_from_claims(issuer(service_kind="kubernetes"), broken, None)
    assert info.value.reason == "invalid_token"


def test_github_actions_token() -> None:
    p = principal_from_claims(issuer(service_kind="github-actions", groups_claim="groups"), GHA_CLAIMS, None)
    assert p.kind == "service"
    assert p.subject == "repo:octo-bank/ledger-jobs:environment:prod"
    assert p.groups == frozenset({"github:repo:octo-bank/ledger-jobs", "github:org:octo-bank", "github:env:prod"})
    # Available to policy conditions as claims.
    assert p.claims["repository"] == "octo-bank/ledger-jobs"
    assert p.claims["ref"] == "refs/heads/main"
    assert p.claims["workflow"] == "nightly-reconcile"
    assert p.claims["job_workflow_ref"].endswith("@refs/heads/main")
    with pytest.raises(AuthError):
        github_actions_identity({"sub": "x"})


def test_kind_from_claim_or_issuer() -> None:
    assert principal_from_claims(issuer(kind_claim="k"), {"sub": "a", "k": "service"}, None).kind == "service"
    assert principal_from_claims(issuer(kind_claim="k"), {"sub": "a", "k": "human"}, None).kind == "human"
    assert principal_from_claims(issuer(), {"sub": "a", "k": "service"}, None).kind == "human"
    assert principal_from_claims(issuer(service_kind="all"), {"sub": "a"}, None).kind == "service"


def test_subject_claim_is_configurable_and_required() -> None:
    p = principal_from_claims(issuer(subject_claim="preferred_username"), {"sub": "x", "preferred_username": "ann"},
                              None)
    assert p.subject == "ann"
    with pytest.raises(AuthError):
        principal_from_claims(issuer(), {"groups": ["a"]}, None)
