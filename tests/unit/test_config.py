"""The one config file: the example loads unchanged, and every problem names its key and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ledgergate.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ledgergate.yaml"


def test_example_config_loads_unchanged_with_its_secret_from_the_environment() -> None:
    loaded = load_config(EXAMPLE, env={"EVERYTHING_KEY": "s3cret"})
    s = loaded.settings
    assert s.listen == "127.0.0.1:8080" and s.port == 8080
    assert s.servers["everything"].url == "http://127.0.0.1:3001/mcp"
    assert s.servers["everything"].headers == {"X-Upstream-Key": "s3cret"}
    assert [r.name for r in s.policies] == ["staff-read", "large-sums-need-approval", "no-env-for-contractors"]
    assert s.policies[1].when == "args.a > 1000" and s.policies[1].approvers.groups == ["approvers"]
    assert s.identity.oidc[0].issuer == "http://localhost:9400" and s.identity.oidc[0].max_token_lifetime == 3600
    assert s.approvals.timeout == 600 and s.audit.checkpoint_interval == 5
    assert loaded.resolve(s.audit.signing_key) == ROOT / "examples" / "data" / "ledger.key"


def test_missing_secret_names_the_variable_key_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE, env={})
    assert str(info.value).endswith(
        "line 14: servers.everything.headers.X-Upstream-Key: environment variable EVERYTHING_KEY is not set")


@pytest.mark.parametrize(("text", "expected"), [
    ("listen: nope\n", "line 1: listen: 'listen' must be host:port"),
    ("servers:\n  a:\n    url: ftp://x\n", "line 2: servers.a: 'url' must start with http:// or https://"),
    ("servers:\n  a:\n    url: http://x\n    command: y\n", "line 2: servers.a: a server needs exactly one of"),
    ("policies:\n  - name: a\n    effect: maybe\n", "line 3: policies[0].effect: Input should be"),
    ("policies:\n  - name: a\n    effect: allow\n    bogus: 1\n", "line 4: policies[0].bogus: unknown key"),
    ("policies:\n  - {name: a, effect: allow}\n  - {name: a, effect: deny}\n", "is used twice"),
    ("approvals:\n  timeout: soon\n", "line 2: approvals.timeout: expected a duration"),
    ("servers:\n  bad name!:\n    url: http://x\n", "server name 'bad name!'"),
    ("listen: [unclosed\n", "line 2: invalid YAML"),
    ("- just\n- a list\n", "line 1: the config must be a mapping"),
])
def test_errors_name_the_key_and_the_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert expected in str(info.value), str(info.value)


def test_env_default_is_used_when_unset() -> None:
    s = parse_config('servers:\n  a:\n    url: "http://${HOST:-127.0.0.1}:1/mcp"\n', env={})
    assert s.servers["a"].url == "http://127.0.0.1:1/mcp"


def test_cli_validate_reports_problems_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: x\npolicies:\n  - name: a\n    effect: allow\n    when: 'args.a >'\n")
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "line 1: listen" in run.stderr
    bad.write_text("policies:\n  - name: big\n    effect: deny\n    when: 'args.a >'\n")
    cel = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config", str(bad)],
                         capture_output=True, text=True)
    assert cel.returncode == 2 and "big" in cel.stderr and "CEL" in cel.stderr, cel.stderr
    ok = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config", str(EXAMPLE)],
                        capture_output=True, text=True, env={"EVERYTHING_KEY": "k", "PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr
    assert "1 server(s), 3 policy rule(s)" in ok.stdout


@pytest.mark.parametrize(("text", "line", "key"), [
    ("audit:\n  signing_key: ./a.key\nlisten: 127.0.0.1:8080\naudit:\n  replica: gw\n", 4, "audit"),
    ("policies: []\npolicies:\n  - {name: r, match: {}, effect: allow}\n", 2, "policies"),
    ("servers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\n  'bank': {url: 'http://127.0.0.1:2/mcp'}\n", 3, "bank"),
    ("audit: {replica: a, replica: b}\n", 1, "replica"),
])
def test_a_key_written_twice_is_refused_not_overwritten(text: str, line: int, key: str) -> None:
    """YAML's loaders keep the last copy of a repeated key without a word: a second `audit:` block
    would drop the first one's signing key. A config names the repetition instead."""
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "t.yaml")
    assert f"line {line}: key {key!r} appears twice" in str(refused.value)


def test_merge_keys_and_same_names_in_different_mappings_are_fine() -> None:
    text = ("x-common: &upstream {url: 'http://127.0.0.1:1/mcp'}\n"
            "servers:\n  a: {<<: *upstream}\n  b: {<<: *upstream, url: 'http://127.0.0.1:2/mcp'}\n")
    with pytest.raises(ConfigError) as refused:  # x-common is not a config key: the only complaint
        parse_config(text, "t.yaml")
    assert "appears twice" not in str(refused.value)
    settings = parse_config("servers:\n  a: {url: 'http://127.0.0.1:1/mcp'}\n  b: {url: 'http://127.0.0.1:1/mcp'}\n")
    assert set(settings.servers) == {"a", "b"}


@pytest.mark.parametrize("match, where, says", [
    ({"servers": ["Bank"]}, "policies[0].match.servers[0]", "did you mean 'bank'"),
    ({"servers": ["banks"]}, "policies[0].match.servers[0]", "did you mean 'bank'"),
    ({"servers": ["bnak"], "tools": ["export_*"]}, "policies[0].match.servers[0]", "names no configured server"),
    ({"servers": ["bank"], "methods": ["tool/call"]}, "policies[0].match.methods[0]", "names no MCP method"),
    ({"subjects": ["https://idp.example#mallory"]}, "policies[0].match.subjects[0]", "write 'mallory'"),
])
def test_a_rule_that_could_never_match_is_refused_with_its_line(match: dict[str, Any], where: str, says: str) -> None:
    """A deny rule naming a server or method that does not exist was silently inert, and the call it was
    written to stop went through (`policy check` said allow)."""
    text = yaml.safe_dump({"servers": {"bank": {"url": "http://127.0.0.1:1/mcp"}},
                           "policies": [{"name": "freeze", "match": match, "effect": "deny"}]}, sort_keys=False)
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    [problem] = refused.value.problems
    assert problem.startswith("line ") and where in problem and says in problem, problem


@pytest.mark.parametrize("match", [{"servers": ["bank"]}, {"servers": ["b*"]}, {"servers": ["*"]},
                                   {"servers": ["hr-records"]},  # configured on another gateway sharing the policy
                                   {"methods": ["tools/*"]}, {"methods": ["notifications/message"]},
                                   {"methods": ["sampling/createMessage"]}, {"subjects": ["system:serviceaccount:*"]},
                                   {"subjects": ["apikey:ci"]}])
def test_rules_that_can_match_are_accepted(match: dict[str, Any]) -> None:
    text = yaml.safe_dump({"servers": {"bank": {"url": "http://127.0.0.1:1/mcp"}},
                           "policies": [{"name": "r", "match": match, "effect": "allow"}]}, sort_keys=False)
    assert parse_config(text).policies[0].name == "r"


@pytest.mark.parametrize("text", ["", "\n\n   \n", "# only a comment\n", "null\n", "~", "---\n", "--- # nothing\n...\n"])
def test_an_empty_document_is_a_config_error_naming_the_file(text: str) -> None:
    """Taken as "every default", an empty file ran a gateway with no issuer, no server and no policy
    (every caller 401), and a reload applied it (probe report, defect 2)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/ledgergate/ledgergate.yaml", env={})
    assert str(caught.value).startswith("/etc/ledgergate/ledgergate.yaml: line 1: the config is empty")


def test_an_explicit_mapping_of_defaults_still_loads() -> None:
    """`{}` is written on purpose (tests and tools read the defaults with it); API keys are on by default."""
    s = parse_config("{}", env={})
    assert s.identity.api_keys and not s.identity.oidc and s.limits.drain_timeout == 60


def test_a_config_with_no_way_to_authenticate_anyone_is_refused() -> None:
    text = "servers:\n  a: {url: 'http://127.0.0.1:1/mcp'}\nidentity:\n  api_keys: false\n  token_cache_size: 5\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml", env={})
    assert caught.value.problems == [(
        "line 3: identity: no caller could ever be authenticated: identity.oidc lists no issuer and "
        "identity.api_keys is false, so every request would be refused (401). Add your IdP (Kubernetes service "
        "accounts and GitHub Actions are issuers too) to identity.oidc, or set identity.api_keys: true")]
    with_issuer = text + "  oidc:\n    - {issuer: 'https://idp.example'}\n"
    assert parse_config(with_issuer, env={}).identity.oidc[0].issuer == "https://idp.example"


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("2s", 2.0), ("5m", 300.0)])
def test_the_drain_timeout_is_a_duration(value: str, seconds: float) -> None:
    assert parse_config(f"limits:\n  drain_timeout: {value}\n", env={}).limits.drain_timeout == seconds
    with pytest.raises(ConfigError, match="line 2: limits.drain_timeout"):
        parse_config("limits:\n  drain_timeout: soon\n", env={})
