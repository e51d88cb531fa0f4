"""examples/kubernetes-serviceaccount.yaml and examples/github-actions.yaml load with
`ledgergate config validate`, and their policies mean what their comments say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgergate.cli import app
from ledgergate.config import load_config
from tests.support.procs import ROOT

runner = CliRunner()
K8S = ROOT / "examples" / "kubernetes-serviceaccount.yaml"
GHA = ROOT / "examples" / "github-actions.yaml"
ENV = {"RISK_MCP_TOKEN": "x", "DEPLOY_MCP_TOKEN": "x"}


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=ENV if env is None else env)
    return result.exit_code, result.output


@pytest.mark.parametrize("path", [K8S, GHA], ids=lambda p: p.name)
def test_validates(path: Path) -> None:
    code, out = cli("config", "validate", "--config", str(path))
    assert code == 0, out
    assert "1 OIDC issuer(s)" in out


def test_upstream_secret_must_come_from_the_environment() -> None:
    result = runner.invoke(app, ["config", "validate", "--config", str(K8S)], env={"RISK_MCP_TOKEN": None})
    out = " ".join(result.output.split())
    assert result.exit_code == 2, out
    assert "servers.risk.headers.Authorization: environment variable RISK_MCP_TOKEN is not set" in out


def test_issuers_are_the_workload_kinds() -> None:
    k8s = load_config(K8S, env=ENV).settings.identity.oidc[0]
    assert k8s.service_kind == "kubernetes" and k8s.audience == "ledgergate" and k8s.max_token_lifetime <= 3600
    assert k8s.auth_token_file and k8s.ca_file and k8s.jwks_uri
    gha = load_config(GHA, env=ENV).settings.identity.oidc[0]
    assert gha.service_kind == "github-actions" and gha.audience == "ledgergate" and gha.max_token_lifetime <= 900


def check(config: Path, subject: str, groups: str, tool: str, args: dict[str, object] | None = None,
          claims: dict[str, object] | None = None, server: str = "risk") -> tuple[int, dict[str, object]]:
    code, out = cli("policy", "check", "--config", str(config), "--subject", subject, "--groups", groups,
                    "--kind", "service", "--server", server, "--tool", tool, "--args", json.dumps(args or {}),
                    "--claims", json.dumps(claims or {}), "--json")
    return code, json.loads(out)


def test_service_account_policies() -> None:
    sa = "system:serviceaccounts,system:serviceaccounts:"
    code, got = check(K8S, "system:serviceaccount:batch:reconciler", sa + "batch", "get_exposure")
    assert code == 0 and got["rule"] == "reconciler-reads-exposures"
    code, got = check(K8S, "system:serviceaccount:batch:other", sa + "batch", "get_exposure")
    assert code == 1, got
    code, got = check(K8S, "system:serviceaccount:trading:pricer", sa + "trading", "price_trade", {"notional": 5000})
    assert code == 0 and got["rule"] == "trading-prices-small-notionals"
    code, got = check(K8S, "system:serviceaccount:trading:pricer", sa + "trading", "price_trade", {"notional": 5e7})
    assert code == 1, got
    code, got = check(K8S, "system:serviceaccount:default:reconciler", sa + "default", "get_exposure")
    assert code == 1 and got["rule"] == "nothing-for-default-namespace"


def test_github_actions_policies() -> None:
    groups = "github:repo:bank/payments,github:org:bank"
    release = {"repository": "bank/payments", "ref": "refs/heads/main", "event_name": "push",
               "workflow_ref": "bank/payments/.github/workflows/release.yml@refs/heads/main"}
    subject = "repo:bank/payments:ref:refs/heads/main"
    code, got = check(GHA, subject, groups, "deploy", claims=release, server="deployments")
    assert code == 0 and got["rule"] == "payments-release-from-main"
    code, got = check(GHA, subject, groups, "deploy", claims={**release, "ref": "refs/heads/feature"},
                      server="deployments")
    assert code == 1, got
    code, got = check(GHA, "repo:bank/payments:pull_request", groups, "get_status",
                      claims={**release, "event_name": "pull_request"}, server="deployments")
    assert code == 1 and got["rule"] == "no-pull-requests"
    code, got = check(GHA, "repo:bank/ledger:ref:refs/heads/main", "github:repo:bank/ledger,github:org:bank",
                      "get_status", claims={**release, "repository": "bank/ledger"}, server="deployments")
    assert code == 0 and got["rule"] == "org-reads-status"
