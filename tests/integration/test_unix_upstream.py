"""Upstreams on a Unix socket (`url: unix:///path/mcp.sock:/mcp`), the Kubernetes sidecar layout:
real SDK servers served by uvicorn on a socket, the real gateway, the official SDK client in
both protocol eras."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import gateway as gw
from tests.support.client import MODERN, connect
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import ROOT, Proc

pytestmark = pytest.mark.node

UNIX_SERVER = [sys.executable, str(ROOT / "tests" / "servers" / "unix_server.py")]


def _wait_socket(path: Path, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"unix server exited: {proc.log_path.read_text() if proc.log_path else ''}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                if s.connect_ex(str(path)) == 0:
                    return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {path}")


@pytest.fixture(scope="module")
def sockets() -> Iterator[Path]:
    # short: a socket path holds at most 107 bytes, and pytest's tmp_path can be longer
    folder = Path(tempfile.mkdtemp(prefix="lg-uds-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def unix_servers(sockets: Path) -> Iterator[dict[str, Path]]:
    procs, paths = [], {}
    try:
        for mode in ("stateless", "session", "sse"):
            path = sockets / f"{mode}.sock"
            proc = Proc([*UNIX_SERVER, "--socket", str(path), "--mode", mode], log=sockets / f"{mode}.log")
            procs.append(proc)
            _wait_socket(path, proc)
            paths[mode] = path
        yield paths
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def unix_gateway(tmp_path_factory: pytest.TempPathFactory, provider: Provider, unix_servers: dict[str, Path],
                 sockets: Path) -> Iterator[gw.RunningGateway]:
    servers = {
        "stateless": {"url": f"unix://{unix_servers['stateless']}:/mcp"},
        "session": {"url": f"unix://{unix_servers['session']}:/mcp"},
        "legacy": {"url": f"unix://{unix_servers['sse']}:/sse", "transport": "sse"},
        "gone": {"url": f"unix://{sockets / 'nobody-listens.sock'}:/mcp", "timeout": 5},
    }
    running = gw.start(tmp_path_factory.mktemp("unix-gateway"), provider.issuer, servers, POLICIES)
    yield running
    running.stop()


@pytest.mark.parametrize("mode", ["legacy", MODERN, "auto"])
async def test_stateless_server_on_a_socket(unix_gateway: gw.RunningGateway, token: str, mode: str) -> None:
    async with connect(unix_gateway.url("stateless"), token, mode) as client:
        assert (client.protocol_version == MODERN) == (mode != "legacy")
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "add"} <= names
        result = await client.call_tool("add", {"a": 20, "b": 22})
        assert not result.is_error, result
        assert result.structured_content == {"a": 20, "b": 22, "sum": 42}
        echoed = await client.call_tool("echo", {"text": f"over a socket in {mode}"})
        assert f"over a socket in {mode}" in echoed.content[0].text


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_handshake_server_with_sessions_on_a_socket(unix_gateway: gw.RunningGateway, token: str,
                                                          mode: str) -> None:
    """An SDK server built with its defaults (DNS-rebinding protection on, sessions on): the gateway's
    requests over the socket must pass its Host check, and a 2026-07-28 client is bridged onto it."""
    async with connect(unix_gateway.url("session"), token, mode) as client:
        result = await client.call_tool("whoami", {})
        assert not result.is_error, result
        assert result.content[0].text == "served over a unix socket"
        for a in range(3):  # several calls on one upstream session, over the kept-alive socket
            got = await client.call_tool("add", {"a": a, "b": 100})
            assert got.content[0].text == str(a + 100)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_legacy_sse_server_on_a_socket(unix_gateway: gw.RunningGateway, token: str, mode: str) -> None:
    """The legacy HTTP+SSE transport over a socket: the message endpoint the server announces
    resolves against the socket's URL and the POSTs reach the same server."""
    async with connect(unix_gateway.url("legacy"), token, mode) as client:
        got = await client.call_tool("add", {"a": 2, "b": 3})
        assert not got.is_error, got
        assert got.content[0].text == "5"


async def test_missing_socket_is_a_clean_502(unix_gateway: gw.RunningGateway, token: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(unix_gateway.url("gone"), json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                 "io.modelcontextprotocol/clientCapabilities": {},
                                 "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}}},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                     "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    assert resp.status_code == 502, resp.text
    message = resp.json()["error"]["message"]
    assert "cannot connect to unix:" in message and "nobody-listens.sock" in message
    assert "Traceback" not in unix_gateway.log()
