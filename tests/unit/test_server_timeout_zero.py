"""A server's `timeout: 0` was refused at the server (`line 3: servers.bank: 'timeout' must be a positive
duration`), the line of its name, not of the key: with several keys under a server, an operator was sent to
the wrong line. It is now refused at `servers.<name>.timeout` and that key's line, as the other durations
that cannot be 0 are (`audit.checkpoint_interval`, `approvals.grant_window`, …)."""

from __future__ import annotations

import pytest

from ledgergate.config import ConfigError, parse_config

IDENTITY = "identity: {api_keys: true}\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml", env={})
    return caught.value.problems


@pytest.mark.parametrize("value", ["0", "0s", "0ms", "0.0"])
def test_a_zero_server_timeout_is_refused_at_its_key_and_line(value: str) -> None:
    text = (IDENTITY + "servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\n    headers: {x-a: b}\n"
            f"    timeout: {value}\n")
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith("line 6: servers.bank.timeout: "), problems
    assert "positive" in problems[0], problems


def test_a_zero_stdio_server_timeout_is_refused_at_its_key_too() -> None:
    text = IDENTITY + "servers:\n  tools:\n    command: [echo, hi]\n    timeout: 0\n"
    assert _problems(text)[0].startswith("line 5: servers.tools.timeout: ")


def test_a_positive_server_timeout_still_loads() -> None:
    text = IDENTITY + "servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\n    timeout: 30s\n"
    assert parse_config(text, "t.yaml", env={}).servers["bank"].timeout == 30.0
