"""Durations that cannot be 0 are refused at load, naming the key and its line: each one at 0 made the
gateway run unusably rather than refuse to start (`audit.checkpoint_interval: 0` turned the periodic
checkpoints off, so no record was ever signed or witnessed; `identity.oidc[].max_token_lifetime: 0` refused every token, `http_timeout: 0` every
key fetch; an approval's `grant_window: 0` let no approved call run; a webhook `timeout: 0` failed every
notification)."""

from __future__ import annotations

import pytest

from ledgergate.config import ConfigError, parse_config

OIDC = "identity:\n  oidc:\n    - issuer: https://idp.example\n      audience: ledgergate\n"
SERVERS = "servers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\n"
WEBHOOK = ("approvals:\n  webhooks:\n    - url: https://hooks.example/a\n      secret: 0123456789abcdef0123\n")


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml", env={})
    return caught.value.problems


@pytest.mark.parametrize(("text", "line", "key"), [
    ("audit:\n  checkpoint_interval: 0s\n" + OIDC + SERVERS, 2, "audit.checkpoint_interval"),
    ("approvals:\n  grant_window: 0\n" + OIDC + SERVERS, 2, "approvals.grant_window"),
    (OIDC + "      max_token_lifetime: 0s\n" + SERVERS, 5, "identity.oidc[0].max_token_lifetime"),
    (OIDC + "      http_timeout: 0\n" + SERVERS, 5, "identity.oidc[0].http_timeout"),
    (WEBHOOK + "      timeout: 0\n" + OIDC + SERVERS, 5, "approvals.webhooks[0].timeout"),
])
def test_a_duration_that_cannot_be_zero_is_refused_with_its_key_and_line(text: str, line: int, key: str) -> None:
    problems = _problems(text)
    assert any(p.startswith(f"line {line}: {key}: ") for p in problems), problems


def test_the_same_settings_load_when_positive() -> None:
    text = ("audit:\n  checkpoint_interval: 1s\napprovals:\n  grant_window: 1m\n"
            "  webhooks:\n    - url: https://hooks.example/a\n      secret: 0123456789abcdef0123\n      timeout: 2s\n"
            + OIDC + "      max_token_lifetime: 15m\n      http_timeout: 3s\n" + SERVERS)
    settings = parse_config(text, "t.yaml", env={})
    assert settings.audit.checkpoint_interval == 1.0 and settings.approvals.grant_window == 60.0
    assert settings.approvals.webhooks[0].timeout == 2.0
    assert settings.identity.oidc[0].max_token_lifetime == 900.0 and settings.identity.oidc[0].http_timeout == 3.0
