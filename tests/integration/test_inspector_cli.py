"""The TypeScript SDK's inspector CLI (`mcp-inspector-cli --cli`) against the gateway over Streamable HTTP,
with a bearer token from the real OpenID provider, to the real server-everything upstream."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.support import gateway as gw
from tests.support.procs import NODE22, NODE_BIN

pytestmark = pytest.mark.node

INSPECTOR = NODE_BIN / "mcp-inspector-cli"


def inspect(gateway: gw.RunningGateway, token: str | None, *args: str,
            transport: str = "http") -> subprocess.CompletedProcess[str]:
    if not INSPECTOR.exists():
        raise RuntimeError("inspector CLI missing: run `npm ci --prefix tests/peers` (done by .ci/run)")
    node = NODE22 if NODE22.exists() else "node"
    # the launcher re-spawns `node`: put Node 22 first on PATH so both halves run on it
    env = {**os.environ, "PATH": f"{NODE22.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # In --cli mode the launcher passes only the positional target on (it ignores --server-url).
    url = gateway.url("everything") + ("/sse" if transport == "sse" else "")
    argv = [str(node), str(INSPECTOR), "--cli", url, "--transport", transport]
    if token is not None:
        argv += ["--header", f"Authorization: Bearer {token}"]
    # index.js checks `../package.json` against the working directory but imports it relative to itself:
    # run it from its own build/ folder so both agree (from anywhere else it cannot find its package.json).
    return subprocess.run([*argv, *args], cwd=INSPECTOR.resolve().parent, env=env, capture_output=True, text=True, timeout=60)


def output(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def test_lists_tools_through_the_gateway(gateway: gw.RunningGateway, token: str) -> None:
    listed = output(inspect(gateway, token, "--method", "tools/list"))
    names = {tool["name"] for tool in listed["tools"]}
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= names


def test_calls_echo_through_the_gateway(gateway: gw.RunningGateway, token: str) -> None:
    called = output(inspect(gateway, token, "--method", "tools/call", "--tool-name", "echo",
                            "--tool-arg", "message=hi from the inspector"))
    assert not called.get("isError")
    assert called["content"][0]["text"] == "Echo: hi from the inspector"


def test_without_a_token_the_inspector_is_refused(gateway: gw.RunningGateway) -> None:
    proc = inspect(gateway, None, "--method", "tools/list")
    assert proc.returncode != 0
    assert "Unauthorized: a bearer token is required" in proc.stderr


def test_calls_echo_over_the_legacy_sse_transport(gateway: gw.RunningGateway, token: str) -> None:
    """The TypeScript SDK's legacy HTTP+SSE client against `/mcp/{server}/sse`."""
    listed = output(inspect(gateway, token, "--method", "tools/list", transport="sse"))
    assert "echo" in {tool["name"] for tool in listed["tools"]}
    called = output(inspect(gateway, token, "--method", "tools/call", "--tool-name", "echo",
                            "--tool-arg", "message=legacy", transport="sse"))
    assert called["content"][0]["text"] == "Echo: legacy"
