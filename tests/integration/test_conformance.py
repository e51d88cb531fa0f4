"""The protocol's own conformance suite (@modelcontextprotocol/conformance, Node 22), run against
server-everything directly and through the gateway in the same test: every scenario that passes
direct must pass through us, and DNS-rebinding protection must pass whole through us.

The suite has no option to send a bearer token, so a preload (tests/peers/bearer.cjs) adds the
Authorization header to its requests to the gateway, as a configured client would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import gateway as gw
from tests.support.procs import NODE22, PEERS, Proc

pytestmark = pytest.mark.node

SUITE = PEERS / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


def run_suite(url: str, out: Path, env: dict[str, str] | None = None) -> dict[str, bool]:
    proc = subprocess.run([str(NODE22), str(SUITE), "server", "--url", url, "-o", str(out)],
                          cwd=PEERS, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})})
    results: dict[str, bool] = {}
    for checks_file in out.glob("*/checks.json"):
        scenario = checks_file.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        checks = json.loads(checks_file.read_text())
        # The suite's own verdict: a scenario passes when none of its checks failed
        # (INFO marks an optional behaviour, e.g. JSON instead of SSE responses).
        results[scenario] = any(c.get("status") == "SUCCESS" for c in checks) and not any(
            c.get("status") in ("FAILURE", "ERROR") for c in checks)
    assert results, f"the suite produced no results: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    return results


def test_what_passes_direct_passes_through_the_gateway(gateway: gw.RunningGateway, everything: Proc,
                                                        token: str, tmp_path: Path) -> None:
    direct = run_suite(f"http://127.0.0.1:{everything.port}/mcp", tmp_path / "direct")
    through = run_suite(gateway.url("everything"), tmp_path / "through",
                        {"NODE_OPTIONS": f"--require {PEERS / 'bearer.cjs'}",
                         "LEDGERGATE_URL": gateway.base, "LEDGERGATE_TOKEN": token})
    passing_direct = {s for s, ok in direct.items() if ok}
    assert len(passing_direct) >= 10, direct  # the suite really ran against the upstream
    regressions = sorted(s for s in passing_direct if not through.get(s))
    assert not regressions, f"pass direct but fail through the gateway: {regressions}"
    assert through.get("dns-rebinding-protection"), "the gateway checks Host and Origin"
