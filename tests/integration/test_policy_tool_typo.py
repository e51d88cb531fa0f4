"""A rule naming `transfer_fund` while the bank lists `transfer_funds` matched nothing, silently: the risky
call ran under the other rules. Now the gateway logs it once, at the first `tools/list` answer it sees, naming
the rule and the listed name it probably meant, and `ledgergate policy check` warns of it from the store.

A real gateway (`ledgergate serve`) with the demo bank server over stdio, behind a real OpenID provider.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.oidc import Provider

pytestmark = [pytest.mark.timeout(180)]

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
POLICIES: list[dict[str, Any]] = [
    {"name": "tellers", "match": {"groups": ["tellers"], "servers": ["bank"]}, "effect": "allow"},
    {"name": "large-transfers-need-approval", "match": {"servers": ["bank"], "tools": ["transfer_fund"]},
     "when": "double(args.amount) > 10000.0", "effect": "approve", "approvers": {"groups": ["approvers"]}},
]
SUGGESTION = "did you mean 'transfer_funds'?"


@pytest.fixture
def running(tmp_path: Path, idp: Provider) -> Iterator[gw.RunningGateway]:
    gateway = gw.start(tmp_path, idp.issuer, {"bank": {"command": gw.BANK_ARGV}}, POLICIES)
    yield gateway
    gateway.stop()


def policy_warnings(gateway: gw.RunningGateway) -> list[dict[str, Any]]:
    out = []
    for line in gateway.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("logger") == "ledgergate.policy":
            out.append(entry)
    return out


async def tools_list(http: httpx.AsyncClient, url: str, rpc_id: int) -> list[str]:
    r = await http.post(url, headers=HEADERS,
                        json={"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list", "params": {"_meta": META}})
    assert r.status_code == 200, r.text
    return [t["name"] for t in r.json()["result"]["tools"]]


async def test_the_first_tools_list_logs_the_typo_once_with_the_listed_name(running: gw.RunningGateway,
                                                                            idp: Provider) -> None:
    assert policy_warnings(running) == []  # nothing is known before the bank has listed its tools
    async with running.http(idp.token("tom", ["tellers"])) as http:
        assert "transfer_funds" in await tools_list(http, running.url("bank"), 1)
        for _ in range(50):  # the line is written before the answer leaves; give the pipe a moment
            if policy_warnings(running):
                break
            await asyncio.sleep(0.1)
        [warning] = policy_warnings(running)
        assert warning["level"] == "warning"
        message = warning["message"]
        assert message.startswith("policies[1].match.tools[0]: policy rule 'large-transfers-need-approval' names "
                                  "tool 'transfer_fund', which server 'bank' has not listed"), message
        assert SUGGESTION in message
        assert "amount" not in message  # names only, never a call's arguments or conditions
        # later listings, by the same or another caller, say nothing new
        await tools_list(http, running.url("bank"), 2)
    async with running.http(idp.token("ann", ["tellers"])) as http:
        await tools_list(http, running.url("bank"), 3)
    await asyncio.sleep(0.5)
    assert len(policy_warnings(running)) == 1

    # offline, from what the gateway recorded: `policy check` warns the same way, its decision unchanged
    config = running.dir / "ledgergate.yaml"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ledgergate.cli", "policy", "check", "--config", str(config),
                         "--subject", "tom", "--groups", "tellers", "--server", "bank", "--tool", "transfer_funds",
                         "--args", '{"from_account": "a", "to_account": "b", "amount": 50000}'],
        cwd=running.dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr  # allow: the approve rule does not match, as served
    stderr = " ".join(done.stderr.split())
    assert "policies[1].match.tools[0]: policy rule 'large-transfers-need-approval' names tool 'transfer_fund'" \
        in stderr and SUGGESTION in stderr
