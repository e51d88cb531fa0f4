"""`config validate` passes a config that protects nothing yet (no servers, or no rule that allows), but
says so: a new operator read "ok" and then met 404s or default-deny refusals with no hint why."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgergate.cli import app

SERVER = "servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\n"


def validate(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "ledgergate.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", "validate", "--config", str(path)])
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def test_no_servers_is_valid_and_warned(tmp_path: Path) -> None:
    status, out, err = validate(tmp_path, "servers: {}\n")
    assert status == 0 and out.startswith("ok")
    assert "warning" in err and "no servers are configured" in err and "404" in err


@pytest.mark.parametrize("policies", [
    "policies: []\n",
    "policies:\n  - name: no-delete\n    match: {tools: [delete_*]}\n    effect: deny\n",
    "policies:\n  - name: held\n    match: {tools: [transfer_funds]}\n    effect: approve\n    approvers: {groups: [ops]}\n",
])
def test_rules_none_of_which_allow_are_warned(tmp_path: Path, policies: str) -> None:
    status, out, err = validate(tmp_path, SERVER + policies)
    assert status == 0 and out.startswith("ok")
    assert "no policy rule allows anything" in err and "default deny" in err


def test_a_config_that_allows_something_is_not_warned(tmp_path: Path) -> None:
    status, out, err = validate(tmp_path, SERVER + "policies:\n  - name: all\n    match: {}\n    effect: allow\n")
    assert status == 0 and out.startswith("ok")
    assert err == ""
