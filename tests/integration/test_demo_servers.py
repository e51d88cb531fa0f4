"""The demo bank server and the stateless test server, driven directly (no gateway) by the SDK client.

- bank server over stdio, in the handshake era (``mode="legacy"``) and in 2026-07-28
  (stdio is dual-era in SDK 2.3: the first request decides), including elicitation,
  sampling and progress;
- bank server over HTTP with ``--handshake-only``: ``mode="auto"`` falls back to initialize;
- stateless server over Streamable HTTP in 2026-07-28 mode, including both kinds of
  input-required round trip, progress, resources, prompts and ``subscriptions/listen``.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from ledgergate.demo.data import aba_is_valid, iban_is_valid, luhn_is_valid, ssn_is_valid

ROOT = Path(__file__).resolve().parents[2]
STATELESS_SERVER = ROOT / "tests" / "servers" / "stateless_server.py"
MODERN = "2026-07-28"

BANK_TOOLS = {
    "lookup_customer",
    "list_transactions",
    "transfer_funds",
    "export_customers",
    "confirm_large_action",
    "summarize_customer",
    "slow_report",
}


# --------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def _start_http(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process that prints ``READY <url>`` and return it with the URL."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until READY (or EOF if the server died)
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"server did not start: {args} -> {line!r}")
    url = line.split()[1]
    assert url.startswith("http://127.0.0.1:")
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Recorder:
    """Client callbacks that record what the server asked for and answer it."""

    def __init__(self, elicit_action: str = "accept", elicit_content: dict[str, Any] | None = None) -> None:
        self.elicit_action = elicit_action
        self.elicit_content = elicit_content if elicit_content is not None else {"confirm": True, "reason": "ok"}
        self.elicitations: list[types.ElicitRequestParams] = []
        self.samplings: list[types.CreateMessageRequestParams] = []
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def elicit(self, _ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicitations.append(params)
        if self.elicit_action != "accept":
            return types.ElicitResult(action=self.elicit_action)  # type: ignore[arg-type]
        return types.ElicitResult(action="accept", content=self.elicit_content)

    async def sample(self, _ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.samplings.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="Low-risk customer with regular payroll deposits."),
            model="test-llm",
        )

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))


def _bank_stdio() -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "ledgergate.demo.bank_server"], env=_env(), cwd=str(ROOT)
    )


@contextlib.asynccontextmanager
async def bank_client(mode: str, rec: Recorder | None = None) -> AsyncIterator[Client]:
    rec = rec or Recorder()
    async with Client(
        _bank_stdio(),
        mode=mode,
        elicitation_callback=rec.elicit,
        sampling_callback=rec.sample,
        logging_callback=rec.log,
        log_level="debug",
        read_timeout_seconds=30,
    ) as client:
        yield client


# --------------------------------------------------------------------------- bank server over stdio


async def test_bank_stdio_legacy_tools_resources_prompts() -> None:
    async with bank_client("legacy") as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None and client.server_info.name == "ledgergate-demo-bank"

        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == BANK_TOOLS
        assert tools["transfer_funds"].annotations is not None
        assert tools["transfer_funds"].annotations.destructive_hint is True
        # Resolver-filled parameters are not part of the advertised input schema.
        assert set(tools["confirm_large_action"].input_schema["properties"]) == {"action", "amount"}

        result = await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
        assert not result.is_error
        record = result.structured_content
        assert record is not None and record["customer_id"] == "C-1001"
        assert ssn_is_valid(record["ssn"])
        assert luhn_is_valid(record["card_number"])
        assert aba_is_valid(record["routing_number"])
        assert iban_is_valid(record["iban"])
        assert record["email"].endswith("@example.com")
        text = result.content[0]
        assert isinstance(text, types.TextContent)
        for value in (record["ssn"], record["card_number"], record["account_number"], record["routing_number"]):
            assert value in text.text

        missing = await client.call_tool("lookup_customer", {"customer_id": "C-9999"})
        assert missing.is_error

        txs = await client.call_tool("list_transactions", {"account_id": record["account_id"], "limit": 4})
        assert txs.structured_content is not None
        assert txs.structured_content["count"] == 4
        assert all(iban_is_valid(t["counterparty_iban"]) for t in txs.structured_content["transactions"])

        transfer = await client.call_tool(
            "transfer_funds", {"from_account": "A-2001", "to_account": "A-2002", "amount": 125.5, "memo": "rent"}
        )
        assert transfer.structured_content is not None
        assert transfer.structured_content["status"] == "completed"
        assert transfer.structured_content["confirmation_id"].startswith("TRF-")
        assert transfer.structured_content["new_balance"] == round(record["balance"] - 125.5, 2)

        export = await client.call_tool("export_customers", {})
        assert export.structured_content is not None
        assert export.structured_content["exported"] == len(export.structured_content["customers"]) == 12

        resources = await client.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["bank://branches"]
        templates = await client.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["bank://customers/{customer_id}"]
        branches = await client.read_resource("bank://branches")
        first = branches.contents[0]
        assert isinstance(first, types.TextResourceContents)
        assert all(aba_is_valid(b["routing_number"]) for b in json.loads(first.text))
        profile = await client.read_resource("bank://customers/C-1002")
        assert isinstance(profile.contents[0], types.TextResourceContents)
        assert json.loads(profile.contents[0].text)["customer_id"] == "C-1002"

        prompts = await client.list_prompts()
        assert [p.name for p in prompts.prompts] == ["fraud_review"]
        prompt = await client.get_prompt("fraud_review", {"customer_id": "C-1001"})
        assert prompt.messages[0].role == "user"
        assert isinstance(prompt.messages[0].content, types.TextContent)
        assert record["ssn"] in prompt.messages[0].content.text


async def test_bank_stdio_legacy_elicitation_sampling_progress() -> None:
    rec = Recorder()
    async with bank_client("legacy", rec) as client:
        confirmed = await client.call_tool("confirm_large_action", {"action": "wire transfer", "amount": 50000})
        assert confirmed.structured_content == {
            "action": "wire transfer",
            "amount": 50000.0,
            "decision": "approved",
            "reason": "ok",
        }
        assert len(rec.elicitations) == 1
        assert "50,000.00" in rec.elicitations[0].message

        summary = await client.call_tool("summarize_customer", {"customer_id": "C-1003"})
        assert summary.structured_content is not None
        assert summary.structured_content["model"] == "test-llm"
        assert "payroll" in summary.structured_content["summary"]
        assert len(rec.samplings) == 1
        sampled = rec.samplings[0].messages[0].content
        assert isinstance(sampled, types.TextContent) and "risk rating" in sampled.text

        report = await client.call_tool(
            "slow_report", {"steps": 3, "delay": 0.01}, progress_callback=rec.on_progress
        )
        assert report.structured_content is not None
        assert report.structured_content["accounts_scanned"] == 12
        assert [(p, t) for p, t, _ in rec.progress] == [(1, 3), (2, 3), (3, 3)]
        assert rec.progress[0][2] is not None and "step 1/3" in rec.progress[0][2]
        levels = [entry.level for entry in rec.logs]
        assert "info" in levels and "debug" in levels

    declined = Recorder(elicit_action="decline")
    async with bank_client("legacy", declined) as client:
        result = await client.call_tool("confirm_large_action", {"action": "close account", "amount": 1})
        assert result.structured_content is not None
        assert result.structured_content["decision"] == "declined"


async def test_bank_stdio_modern_input_required() -> None:
    """Over stdio the SDK server is dual-era: a 2026-07-28 client gets input_required results."""
    rec = Recorder(elicit_content={"confirm": False, "reason": "too large"})
    async with bank_client(MODERN, rec) as client:
        assert client.protocol_version == MODERN
        assert {t.name for t in (await client.list_tools()).tools} == BANK_TOOLS

        rejected = await client.call_tool("confirm_large_action", {"action": "wire", "amount": 9000})
        assert rejected.structured_content is not None
        assert rejected.structured_content["decision"] == "rejected"
        assert rejected.structured_content["reason"] == "too large"
        assert len(rec.elicitations) == 1

        summary = await client.call_tool("summarize_customer", {"customer_id": "C-1001"})
        assert summary.structured_content is not None and summary.structured_content["model"] == "test-llm"

        # The raw first round, without the client's automatic driver.
        first = await client.session.call_tool(
            "confirm_large_action", {"action": "wire", "amount": 1}, allow_input_required=True
        )
        assert isinstance(first, types.InputRequiredResult)
        assert first.request_state
        (request,) = first.input_requests.values()
        assert isinstance(request, types.ElicitRequest)

        await client.call_tool("slow_report", {"steps": 2, "delay": 0.01}, progress_callback=rec.on_progress)
        assert [p for p, _, _ in rec.progress] == [1, 2]
        assert any(entry.level == "info" for entry in rec.logs)


# --------------------------------------------------------------------------- bank server over HTTP


async def test_bank_http_handshake_only_auto_falls_back() -> None:
    proc, url = _start_http(["-m", "ledgergate.demo.bank_server", "--transport", "http", "--port", "0", "--handshake-only"])
    try:
        rec = Recorder()
        async with Client(url, mode="auto", elicitation_callback=rec.elicit, read_timeout_seconds=30) as client:
            assert client.protocol_version == "2025-11-25"
            result = await client.call_tool("confirm_large_action", {"action": "wire", "amount": 10})
            assert result.structured_content is not None
            assert result.structured_content["decision"] == "approved"
            assert len(rec.elicitations) == 1

        async with httpx.AsyncClient() as http:
            response = await http.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "server/discover",
                    "params": {
                        "_meta": {
                            "io.modelcontextprotocol/protocolVersion": MODERN,
                            "io.modelcontextprotocol/clientCapabilities": {},
                        }
                    },
                },
                headers={"accept": "application/json, text/event-stream", "mcp-protocol-version": MODERN, "mcp-method": "server/discover"},
            )
            assert response.status_code == 400
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- stateless server


@pytest.fixture(scope="module")
def stateless_url() -> Iterator[str]:
    proc, url = _start_http([str(STATELESS_SERVER), "--port", "0"])
    try:
        yield url
    finally:
        _stop(proc)


async def test_stateless_discover_and_tools(stateless_url: str) -> None:
    async with Client(stateless_url, mode="auto") as client:
        # auto probes server/discover first and adopts 2026-07-28.
        assert client.protocol_version == MODERN
        assert client.session.discover_result is not None
        assert client.server_info is not None and client.server_info.name == "ledgergate-test-stateless"
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo", "add", "approve_operation", "ask_name", "count_slowly", "touch"}

    async with Client(stateless_url, mode=MODERN) as client:
        echoed = await client.call_tool("echo", {"text": "héllo wörld"})
        assert isinstance(echoed.content[0], types.TextContent)
        assert echoed.content[0].text == "héllo wörld"
        added = await client.call_tool("add", {"a": 2, "b": 40.5})
        assert added.structured_content == {"a": 2.0, "b": 40.5, "sum": 42.5}


async def test_stateless_input_required_round_trips(stateless_url: str) -> None:
    rec = Recorder(elicit_content={"approve": True, "comment": "lgtm"})
    async with Client(stateless_url, mode=MODERN, elicitation_callback=rec.elicit) as client:
        outcome = await client.call_tool("approve_operation", {"operation": "rotate keys"})
        assert outcome.structured_content == {"operation": "rotate keys", "outcome": "approved", "comment": "lgtm"}
        assert len(rec.elicitations) == 1 and "rotate keys" in rec.elicitations[0].message

        # Round one by hand: resultType input_required, an opaque sealed requestState.
        first = await client.session.call_tool("approve_operation", {"operation": "x"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult)
        assert first.request_state is not None and first.request_state.startswith("v1.")
        ((key, request),) = first.input_requests.items()
        assert isinstance(request, types.ElicitRequest)
        final = await client.session.call_tool(
            "approve_operation",
            {"operation": "x"},
            input_responses={key: types.ElicitResult(action="decline")},
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(final, types.CallToolResult)
        assert final.structured_content == {"operation": "x", "outcome": "decline", "comment": ""}

    named = Recorder(elicit_content={"name": "Ada"})
    async with Client(stateless_url, mode=MODERN, elicitation_callback=named.elicit) as client:
        greeting = await client.call_tool("ask_name", {"greeting": "Hi"})
        assert isinstance(greeting.content[0], types.TextContent)
        assert greeting.content[0].text == "Hi, Ada"
        assert named.elicitations[0].message == "What is your name?"

    # Without the elicitation capability the server refuses (-32021) instead of asking.
    async with Client(stateless_url, mode=MODERN) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("approve_operation", {"operation": "x"})
        assert refused.value.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY


async def test_stateless_progress_resources_prompts(stateless_url: str) -> None:
    rec = Recorder()
    async with Client(stateless_url, mode=MODERN, logging_callback=rec.log, log_level="info") as client:
        counted = await client.call_tool("count_slowly", {"n": 3, "delay": 0.01}, progress_callback=rec.on_progress)
        assert counted.structured_content == {"counted": 3}
        assert rec.progress == [(1, 3, "counted 1"), (2, 3, "counted 2"), (3, 3, "counted 3")]
        assert [entry.data for entry in rec.logs] == [f"count_slowly: {i}/3" for i in (1, 2, 3)]

        resources = await client.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["test://greeting"]
        greeting = await client.read_resource("test://greeting")
        assert isinstance(greeting.contents[0], types.TextResourceContents)
        assert greeting.contents[0].text == "Hello from the stateless server"
        item = await client.read_resource("test://items/42")
        assert isinstance(item.contents[0], types.TextResourceContents)
        assert json.loads(item.contents[0].text) == {"id": "42", "label": "Item 42"}

        prompt = await client.get_prompt("summarize", {"topic": "ledgers"})
        assert isinstance(prompt.messages[0].content, types.TextContent)
        assert prompt.messages[0].content.text == "Summarize ledgers in one sentence."


async def test_stateless_subscriptions_listen(stateless_url: str) -> None:
    async with Client(stateless_url, mode=MODERN) as client:
        async with client.listen(tools_list_changed=True, resource_subscriptions=["test://greeting"]) as sub:
            await client.call_tool("touch", {})
            seen: list[Any] = []
            async with asyncio.timeout(10):
                async for event in sub:
                    seen.append(event)
                    if len(seen) == 2:
                        break
        kinds = {type(e).__name__ for e in seen}
        assert kinds == {"ResourceUpdated", "ToolsListChanged"}


async def test_stateless_wire_shape(stateless_url: str) -> None:
    """The raw HTTP contract the gateway relies on: no session id, header checks, status mapping."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    base = {"accept": "application/json, text/event-stream", "mcp-protocol-version": MODERN}
    async with httpx.AsyncClient() as http:
        discover = await http.post(
            stateless_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}},
            headers={**base, "mcp-method": "server/discover"},
        )
        assert discover.status_code == 200
        assert "mcp-session-id" not in discover.headers
        assert discover.json()["result"]["supportedVersions"] == [MODERN]

        mismatch = await http.post(
            stateless_url,
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}, "_meta": meta}},
            headers={**base, "mcp-method": "tools/call", "mcp-name": "add"},
        )
        assert mismatch.status_code == 400
        assert mismatch.json()["error"]["code"] == types.HEADER_MISMATCH

        unsupported = await http.post(
            stateless_url,
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}}},
            headers={**base, "mcp-protocol-version": "2099-01-01", "mcp-method": "tools/list"},
        )
        assert unsupported.status_code == 400
        assert unsupported.json()["error"]["code"] == types.UNSUPPORTED_PROTOCOL_VERSION
        assert unsupported.json()["error"]["data"]["supported"] == [MODERN]

        get = await http.get(stateless_url, headers=base)
        assert get.status_code == 405 and get.headers["allow"] == "POST"


async def test_stateless_legacy_client_gets_no_back_channel(stateless_url: str) -> None:
    """Handshake clients are served on the same URL (legacy stateless path), but cannot be asked for input."""
    rec = Recorder()
    async with Client(stateless_url, mode="legacy", elicitation_callback=rec.elicit) as client:
        assert client.protocol_version == "2025-11-25"
        echoed = await client.call_tool("echo", {"text": "legacy"})
        assert isinstance(echoed.content[0], types.TextContent) and echoed.content[0].text == "legacy"
        with pytest.raises(MCPError) as no_channel:
            await client.call_tool("approve_operation", {"operation": "x"})
        assert no_channel.value.code == types.INVALID_REQUEST
        assert rec.elicitations == []


async def test_stateless_modern_only_refuses_handshake() -> None:
    proc, url = _start_http([str(STATELESS_SERVER), "--port", "0", "--modern-only"])
    try:
        async with Client(url, mode="auto") as client:
            assert client.protocol_version == MODERN
        with pytest.raises(Exception):  # noqa: B017 - the legacy handshake fails (MCPError inside a task group)
            async with Client(url, mode="legacy"):
                pass
    finally:
        _stop(proc)
