"""What an approver is shown of masked values: a real gateway, real OIDC tokens, server-everything.

Two calls that differ only in a value masking hides (the IBAN a payment goes to) used to show the
approver the same preview and the same `preview_digest`, so approving "the" payment could release
either. Masked values are now shown as keyed pseudonyms: different values differ, the same value
reads the same in every approval, and no digit of it is shown or recorded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.support import gateway as gw
from tests.support.client import connect
from tests.support.oidc import Provider
from tests.support.procs import Proc

pytestmark = pytest.mark.node

POLICIES = [
    {"name": "staff-echo", "match": {"groups": ["staff"], "servers": ["everything"], "tools": ["echo"]},
     "effect": "allow"},
    {"name": "payments-need-approval", "match": {"servers": ["everything"], "tools": ["echo"]},
     "when": 'args.message.startsWith("pay")', "effect": "approve", "approvers": {"groups": ["approvers"]}},
]
#: three valid IBANs (mod-97): the first two differ, the third is the first written with spaces
FIRST, SECOND, FIRST_SPACED = "GB82WEST12345698765432", "GB33BUKB20201555555555", "GB82 WEST 1234 5698 7654 32"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, idp: Provider, upstream: Proc) -> Iterator[gw.RunningGateway]:
    running = gw.start(tmp_path_factory.mktemp("previews"), idp.issuer,
                       {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES,
                       {"approvals": {"hold": "1s", "timeout": "10m"}})
    yield running
    running.stop()


async def _ask(gateway: gw.RunningGateway, token: str, message: str) -> None:
    """One held call; the hold ends (pending) and the approval stays for an approver."""
    async with connect(gateway.url("everything"), token, "legacy") as client:
        with pytest.raises(MCPError, match="waiting for approval"):
            await client.call_tool("echo", {"message": message})


async def _pending(gateway: gw.RunningGateway, token: str) -> list[dict[str, Any]]:
    async with gateway.http(token) as http:
        r = await http.get(f"{gateway.base}/api/v1/approvals", params={"status": "pending"})
    assert r.status_code == 200, r.text
    approvals: list[dict[str, Any]] = r.json()["approvals"]
    return approvals


def _records(gateway: gw.RunningGateway) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "tail", "--config",
                          str(gateway.dir / "ledgergate.yaml"), "-n", "100000"],
                         cwd=gateway.dir, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]


async def test_payments_to_two_ibans_look_different_to_the_approver_and_show_no_digit(
        gateway: gw.RunningGateway, idp: Provider) -> None:
    alice, bob = idp.token("alice", ["staff"]), idp.token("bob", ["approvers"])
    for iban in (FIRST, SECOND, FIRST_SPACED):
        await _ask(gateway, alice, f"pay 50 to {iban}")
    approvals = sorted(await _pending(gateway, bob), key=lambda a: a["created"])  # in the order asked
    assert len(approvals) == 3, approvals
    first, second, spaced = (a["arguments"]["message"] for a in approvals)
    assert first != second, "two destinations read the same to the approver"
    assert approvals[0]["preview_digest"] != approvals[1]["preview_digest"]
    assert first == spaced, "one account written two ways reads as two accounts"
    assert first.startswith("pay 50 to ") and "IBAN" in first
    everything_shown = json.dumps(approvals)
    for iban in (FIRST, SECOND):
        assert re.search(r"\d{4}", iban[4:]) and iban[4:] not in everything_shown
        for group in re.findall(r"\d{4,}", iban):
            assert group not in everything_shown, f"digits {group} of an IBAN shown to the approver"
    requested = [r for r in _records(gateway) if r["event"] == "approval.requested"]
    assert len(requested) == 3
    ledger_text = json.dumps(requested)
    for iban in (FIRST, SECOND):
        for group in re.findall(r"\d{4,}", iban):
            assert group not in ledger_text

