"""Legacy HTTP+SSE upstreams (`transport: sse`): the real server-everything in `sse` mode behind a
real gateway, reached by the official SDK client in both protocol eras."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio

import pytest
from mcp.shared.exceptions import MCPError

from tests.support import gateway as gw
from tests.support.client import MODERN, Recorder, connect
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import Proc, free_port, start_everything

pytestmark = pytest.mark.node

MODES = ("legacy", MODERN)


@pytest.fixture(scope="module")
def everything_sse() -> Iterator[Proc]:
    proc = start_everything(mode="sse")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def flaky_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sse_gateway(tmp_path_factory: pytest.TempPathFactory, provider: Provider, everything_sse: Proc,
                flaky_port: int) -> Iterator[gw.RunningGateway]:
    servers = {
        "legacy": {"url": f"http://127.0.0.1:{everything_sse.port}/sse", "transport": "sse",
                   "headers": {"X-Upstream-Key": "k"}},
        # nothing listens here until a test starts (and stops) its own server
        "flaky": {"url": f"http://127.0.0.1:{flaky_port}/sse", "transport": "sse", "timeout": 10},
    }
    running = gw.start(tmp_path_factory.mktemp("sse-gateway"), provider.issuer, servers, POLICIES)
    yield running
    running.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_list_tools_and_echo(sse_gateway: gw.RunningGateway, token: str, mode: str) -> None:
    async with connect(sse_gateway.url("legacy"), token, mode) as client:
        assert (client.protocol_version == MODERN) == (mode == MODERN)
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
        result = await client.call_tool("echo", {"message": "over the legacy SSE upstream"})
        assert not result.is_error, result
        assert result.content[0].text == "Echo: over the legacy SSE upstream"
        total = await client.call_tool("get-sum", {"a": 2, "b": 40})
        assert "42" in total.content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_progress_from_long_running_operation(sse_gateway: gw.RunningGateway, token: str, mode: str) -> None:
    rec = Recorder()
    async with connect(sse_gateway.url("legacy"), token, mode, rec) as client:
        result = await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 4},
                                        progress_callback=rec.on_progress)
        assert not result.is_error, result
        assert [p for p, _, _ in rec.progress] == [1, 2, 3, 4]
        assert all(total == 4 for _, total, _ in rec.progress)


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_calls_share_one_stream(sse_gateway: gw.RunningGateway, token: str, mode: str) -> None:
    """Replies arrive on one SSE stream in any order; each goes back to the call that asked."""
    results: dict[int, str] = {}
    async with connect(sse_gateway.url("legacy"), token, mode) as client:
        async def one(i: int) -> None:
            result = await client.call_tool("echo", {"message": f"m{i}"})
            results[i] = result.content[0].text

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)
    assert results == {i: f"Echo: m{i}" for i in range(12)}


async def test_stream_loss_fails_the_call_and_the_session_reopens(sse_gateway: gw.RunningGateway, token: str,
                                                                   flaky_port: int) -> None:
    server = start_everything(port=flaky_port, mode="sse")
    try:
        async with connect(sse_gateway.url("flaky"), token, "legacy") as client:
            first = await client.call_tool("echo", {"message": "before"})
            assert first.content[0].text == "Echo: before"
            rec = Recorder()
            stopper = threading.Timer(1.5, server.stop)  # the upstream's SSE stream ends mid-call
            started = time.monotonic()
            stopper.start()
            try:
                with pytest.raises(MCPError) as lost:
                    await client.call_tool("trigger-long-running-operation", {"duration": 20, "steps": 40},
                                           progress_callback=rec.on_progress)
            finally:
                stopper.join()
            assert rec.progress, "progress arrived before the stream was lost"
            assert time.monotonic() - started < 10, "the call in flight must fail when the stream is lost"
            assert "reopened on the next request" in str(lost.value)
            with pytest.raises(MCPError):
                await client.call_tool("echo", {"message": "while down"})  # the reopen is refused
            server = start_everything(port=flaky_port, mode="sse")
            again = await client.call_tool("echo", {"message": "after"})  # a new upstream session, same client
            assert again.content[0].text == "Echo: after"
    finally:
        server.stop()
    assert "Traceback" not in sse_gateway.log()


def _records(running: gw.RunningGateway) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "tail", "--config",
                          str(running.dir / "ledgergate.yaml"), "-n", "100000"],
                         cwd=running.dir, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]


async def test_a_stateless_client_is_not_asked_for_roots_it_never_declared(
        sse_gateway: gw.RunningGateway, provider: Provider) -> None:
    """The principal's shared upstream session offers every client capability, and server-everything asks
    every new session for `roots/list`. The first stateless call of a new principal used to be handed
    that request (it failed the call, or paused it for input the client could not give); the gateway now
    answers it as a client without roots would, records that answer, and the call goes on."""
    token = provider.token("roots-less", ["staff"])
    rec = Recorder()
    async with connect(sse_gateway.url("legacy"), token, MODERN, rec) as client:
        result = await client.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 2},
                                        progress_callback=rec.on_progress)
        assert not result.is_error, result
        assert [p for p, _, _ in rec.progress] == [1, 2]
    mine = [r for r in _records(sse_gateway) if (r.get("principal") or {}).get("subject") == "roots-less"]
    asked = [r for r in mine if r["event"] == "rpc.server_message" and r.get("message_method") == "roots/list"]
    replies = [r for r in mine if r["event"] == "rpc.reply" and r.get("reason") == "client_lacks_capability"]
    assert replies, [r["event"] for r in mine]
    assert replies[0]["message"]["error"]["message"] == "the calling client does not support roots"
    assert asked and len(replies) == len(asked), (len(asked), len(replies))
