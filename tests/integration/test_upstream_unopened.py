"""An upstream that cannot be opened (a stdio command that does not exist, a URL nobody listens on): the
502 quotes a request id, as the README promises for "upstream unreachable", the operator gets a log line
naming it (the URL redacted, the command by its path only), and the refusal is recorded under that id.
Before, the refusal carried no request id and the gateway logged nothing; the stdio one did not even name
the missing command. `config validate` warns of such a command, and still passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.client import MODERN
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import free_port

MISSING = "/nonexistent/mcp-server"
#: what must never reach a log line, an answer or a record: a command's arguments and environment, a
#: URL's userinfo and query
SECRETS = ("ARGSECRET", "ENVSECRET", "USERSECRET", "QUERYSECRET")


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()  # nothing listens on it


@pytest.fixture(scope="module")
def unopened(tmp_path_factory: pytest.TempPathFactory, provider: Provider, closed_port: int) -> Iterator[gw.RunningGateway]:
    servers = {
        "local": {"command": MISSING, "args": ["--token=ARGSECRET"], "env": {"API_KEY": "ENVSECRET"}},
        "closed": {"url": f"http://user:USERSECRET@127.0.0.1:{closed_port}/mcp?key=QUERYSECRET"},
    }
    running = gw.start(tmp_path_factory.mktemp("unopened"), provider.issuer, servers, POLICIES)
    yield running
    running.stop()


def _headers(token: str, modern: bool, method: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    if modern:
        headers.update({"MCP-Protocol-Version": MODERN, "Mcp-Method": method, "Mcp-Name": "echo"})
    return headers


def _initialize() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def _stateless_call() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "hi"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {},
                  "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}}}


def _log_line_naming(running: gw.RunningGateway, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in running.log().splitlines() if request_id in line]
        if lines:
            return "\n".join(lines)
        time.sleep(0.05)
    raise AssertionError(f"no log line names {request_id}:\n{running.log()[-3000:]}")


CASES = [
    pytest.param("local", False, id="stdio-initialize"),
    pytest.param("local", True, id="stdio-stateless-call"),
    pytest.param("closed", False, id="url-initialize"),
    pytest.param("closed", True, id="url-stateless-call"),
]


@pytest.mark.parametrize(("server", "modern"), CASES)
async def test_a_refused_opening_quotes_a_request_id_is_logged_and_recorded(
        unopened: gw.RunningGateway, token: str, server: str, modern: bool) -> None:
    body = _stateless_call() if modern else _initialize()
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(unopened.url(server), json=body,
                               headers=_headers(token, modern, body["method"]))
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["code"] == -32011, error
    request_id = (error.get("data") or {}).get("requestId")
    assert isinstance(request_id, str) and request_id.startswith("req_"), error
    assert f"quote request id {request_id}" in error["message"], error
    if server == "local":
        assert MISSING in error["message"], error  # the missing command, named by its path
    else:
        assert "cannot connect to 127.0.0.1:" in error["message"], error
    logged = _log_line_naming(unopened, request_id)
    assert "could not be opened" in logged, logged
    if server == "local":
        assert MISSING in logged, logged
    else:
        assert "http://127.0.0.1:" in logged, logged  # the URL, redacted
    refused = [r for r in unopened.records() if r["event"] == "request.refused" and r.get("request_id") == request_id]
    assert len(refused) == 1, refused
    assert refused[0]["server"] == server and refused[0]["status"] == 502, refused
    for secret in SECRETS:
        assert secret not in resp.text and secret not in logged and secret not in json.dumps(refused), secret


def test_config_validate_warns_of_a_missing_command_and_passes(tmp_path: Path) -> None:
    config = gw.write_config(tmp_path, free_port(), "https://issuer.example", {
        "local": {"command": MISSING, "args": ["--token=ARGSECRET"], "env": {"API_KEY": "ENVSECRET"}},
        "notexec": {"command": "./plain.txt"},
        "onpath": {"command": [sys.executable, "-c", "pass"]},
        "named": {"command": "no-such-mcp-server-anywhere"},
    }, POLICIES)
    (tmp_path / "plain.txt").write_text("not a program\n")
    out = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config", str(config)],
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "ok" in out.stdout, out.stdout
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning")]
    assert any("servers.local.command" in w and MISSING in w for w in warnings), out.stderr
    assert any("servers.notexec.command" in w and "not executable" in w for w in warnings), out.stderr
    assert any("servers.named.command" in w and "PATH" in w for w in warnings), out.stderr
    assert not any("servers.onpath" in w for w in warnings), out.stderr
    for secret in SECRETS:
        assert secret not in out.stdout + out.stderr
