"""Every part of what a server sends its caller is masked, not only the fields where a method's data
usually lives. A server that put account numbers in its instructions, a tool's description or
`_meta`, an answer's `_meta`, a prompt's or a resource's description reached the caller in the
clear (the ledger's copy was masked, so the ledger gave no sign of it). The official SDK client, in
both protocol eras, calls a stdio server written with the official SDK
(`tests/servers/leaky_stdio_server.py`) through the real gateway, served in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.support.client import connect
from tests.support.inprocess import serving
from tests.support.oidc import Provider

pytestmark = pytest.mark.timeout(90)

RAW = ("123-45-6789", "4111 1111 1111 1111")
SERVER = [sys.executable, str(Path(__file__).resolve().parents[1] / "servers" / "leaky_stdio_server.py")]
POLICY = [{"name": "staff", "match": {"groups": ["staff"], "servers": ["leaky"]}, "effect": "allow",
           "mask": "standard"}]


def assert_masked(what: object) -> None:
    text = str(what)
    for raw in RAW:
        assert raw not in text, text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_what_a_server_says_besides_its_answer_text_is_masked(tmp_path: Path, provider: Provider,
                                                                   mode: str) -> None:
    async with serving(tmp_path, provider.issuer, {"leaky": {"command": SERVER}}, POLICY) as base, \
            connect(f"{base}/mcp/leaky", provider.token("alice", ["staff"]), mode) as client:
        if mode == "legacy":  # the 2026-07-28 client reads no instructions: server/discover, below, says them
            assert client.instructions and "VIP customer" in client.instructions
            assert_masked(client.instructions)
        assert_masked(client.server_info)
        [tool] = (await client.list_tools()).tools
        assert "for example" in (tool.description or "")
        assert_masked(tool.description)
        assert_masked(tool.meta)
        assert_masked(tool.input_schema)
        # a schema naming a field `ssn` still describes a string: only values are masked, not what keys imply
        field = tool.input_schema["properties"]["ssn"]
        assert field["type"] == "string" and field["title"] == "Ssn" and field["description"] == "the customer's SSN"
        result = await client.call_tool("lookup", {"ssn": "000-00-0000"})
        assert not result.is_error and result.meta and "record" in result.meta
        assert_masked(result.meta)
        prompts = (await client.list_prompts()).prompts
        assert prompts and all("Draft a letter" in (p.description or "") for p in prompts)
        assert_masked([p.description for p in prompts])
        resources = (await client.list_resources()).resources
        assert resources and all("Latest statement" in (r.description or "") for r in resources)
        assert_masked([r.description for r in resources])


async def test_server_discover_says_what_the_server_says_of_itself_masked(tmp_path: Path, provider: Provider) -> None:
    modern = "2026-07-28"
    async with serving(tmp_path, provider.issuer, {"leaky": {"command": SERVER}}, POLICY) as base, \
            httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{base}/mcp/leaky", json={
            "jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": modern,
                                 "io.modelcontextprotocol/clientCapabilities": {}}}},
            headers={"Authorization": f"Bearer {provider.token('alice', ['staff'])}",
                     "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": modern,
                     "Mcp-Method": "server/discover"})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert "VIP customer" in result["instructions"]
        assert_masked(r.text)


async def test_tool_definitions_kept_for_drift_control_are_masked_at_rest(tmp_path: Path, provider: Provider) -> None:
    """The fingerprint store kept every tool definition as served (descriptions, defaults, `_meta`) for
    `tools diff`: account numbers at rest outside the ledger. (Fingerprints stay those of the served
    definitions: `tests/integration/test_policy_gateway.py` holds that drift is still caught.)"""
    import sqlite3

    async with serving(tmp_path, provider.issuer, {"leaky": {"command": SERVER}}, POLICY) as base, \
            connect(f"{base}/mcp/leaky", provider.token("alice", ["staff"]), "legacy") as client:
        assert (await client.list_tools()).tools
    with sqlite3.connect(tmp_path / "data" / "ledgergate.db") as db:
        [(definition,)] = db.execute("SELECT accepted_definition FROM tool_fingerprints")
    assert "for example" in definition and '"type":"string"' in definition.replace(" ", "")
    assert_masked(definition)
