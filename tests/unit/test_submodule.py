"""`serve` loads the MCP SDK's request validation and the CEL interpreter without their packages'
heavy `__init__`; a process that imports those packages in full later still sees one module each."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import ledgergate.app  # what `serve` imports
import ledgergate.gateway.transport.modern
heavy = [m for m in ("mcp", "mcp.client", "mcp.server", "cel", "cel.cli", "prompt_toolkit") if m in sys.modules]
assert not heavy, heavy
from ledgergate.wire import mcp_inbound
from ledgergate.policy import cel as policy_cel
import mcp.shared.inbound
import mcp.client.client
import cel
assert mcp.shared.inbound.classify_inbound_request is mcp_inbound.classify_inbound_request
from mcp.shared.inbound import InboundLadderRejection
assert InboundLadderRejection is mcp_inbound.InboundLadderRejection
assert cel.cel is policy_cel._cel and cel.compile is policy_cel._cel.compile
print("ok")
"""


def test_serve_leaves_the_sdk_and_the_cel_shell_unloaded_and_a_later_full_import_shares_the_modules() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
