"""`ledgergate policy check` warns of a rule naming a tool the server never listed (as far as the store,
filled by the gateway's drift guard, knows); the decision and the exit status stay what they were."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgergate.cli import app
from ledgergate.gateway.drift import observe
from ledgergate.store.fingerprints_store import FingerprintStore

CONFIG = """\
storage: sqlite:///./ledgergate.db
identity:
  api_keys: true
servers:
  bank:
    url: http://127.0.0.1:1/mcp
  sandbox:
    url: http://127.0.0.1:2/mcp
policies:
  - name: tellers
    match:
      groups: [tellers]
      servers: [bank]
      tools: [lookup_customer, transfer_funds]
    effect: allow
  - name: approve-transfers
    match:
      servers: [bank]
      tools:
        - lookup_*
        - transfer_fund
    effect: approve
    approvers: {groups: [approvers]}
"""
BANK_TOOLS = ["lookup_customer", "list_transactions", "transfer_funds"]
WARNING = ("line 21: policies[1].match.tools[1]: policy rule 'approve-transfers' names tool 'transfer_fund', "
           "which server 'bank' has not listed (did you mean 'transfer_funds'?)")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ledgergate.yaml"
    path.write_text(CONFIG)
    return path


def seen(config: Path, server: str, names: list[str]) -> None:
    """What the gateway's drift guard records of a `tools/list` answer."""
    with FingerprintStore.open(f"sqlite:///{config.parent / 'ledgergate.db'}") as store:
        observe(store, server, [{"name": n, "inputSchema": {"type": "object"}} for n in names], "block", time.time())


def check(config: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["policy", "check", "--config", str(config), "--subject", "tom",
                                      "--groups", "tellers", "--server", "bank", "--tool", "transfer_funds", *extra])
    return result.exit_code, result.stdout, result.stderr


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_rule_naming_a_tool_the_server_never_listed_is_warned_with_its_line(config: Path) -> None:
    seen(config, "bank", BANK_TOOLS)
    status, out, err = check(config)
    assert status == 0, out + err  # allowed: the approve rule never matches `transfer_funds`, hence the warning
    assert "decision: allow (rule tellers)" in out
    assert WARNING in one_line(err)
    assert one_line(err).count("warning") == 1


def test_json_output_carries_the_warnings_and_stdout_stays_one_object(config: Path) -> None:
    seen(config, "bank", BANK_TOOLS)
    status, out, err = check(config, "--json")
    assert status == 0
    doc = json.loads(out)
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith(WARNING)
    assert WARNING in one_line(err)


def test_no_store_or_no_listing_of_the_server_says_nothing_and_creates_nothing(config: Path) -> None:
    status, _out, err = check(config)
    assert status == 0 and "warning" not in err
    assert not (config.parent / "ledgergate.db").exists()
    seen(config, "sandbox", ["echo"])  # a store, but not the bank's tools
    status, _out, err = check(config)
    assert status == 0 and "warning" not in err


def test_a_correct_policy_gets_no_warning(config: Path) -> None:
    config.write_text(CONFIG.replace("- transfer_fund\n", "- transfer_funds\n"))
    seen(config, "bank", BANK_TOOLS)
    status, _out, err = check(config)
    assert status == 3 and "warning" not in err  # now the approve rule matches


def test_config_validate_warns_too_once_per_rule_entry_and_still_succeeds(config: Path) -> None:
    seen(config, "bank", BANK_TOOLS)
    seen(config, "sandbox", ["echo"])
    result = CliRunner().invoke(app, ["config", "validate", "--config", str(config)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "ok" in result.stdout
    assert WARNING in one_line(result.stderr)
    assert one_line(result.stderr).count("transfer_fund'") == 1


def test_config_validate_says_nothing_of_tool_names_before_any_listing(config: Path) -> None:
    result = CliRunner().invoke(app, ["config", "validate", "--config", str(config)])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr
    assert not (config.parent / "ledgergate.db").exists()
