"""2026-07-28 version negotiation and what that revision does not have, through a real gateway in front
of a 2026-07-28 upstream (the stateless SDK server) and a handshake one (server-everything).

Which era a request speaks is told as the SDK's servers tell it: a version header naming no handshake
revision is a 2026-era request, and one at a version the gateway does not serve gets -32022 with
`{supported, requested}` (docs/sdk-notes.md §2.2), so a client can probe again; it got the handshake
path's "Mcp-Session-Id header is required". GET and DELETE with such a header get 405 `Allow: POST`.
A 2026-era `initialize` (and the other handshake-only methods that change an upstream session) is
refused at the edge and recorded: it went through policy into the principal's shared upstream session.
Handshake clients at every handshake version are untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import gateway as gw

pytestmark = pytest.mark.node

MODERN = "2026-07-28"
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
JSON_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ECHO = {"stateless": {"text": "hi"}, "everything": {"message": "hi"}}


def envelope(version: str = MODERN) -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}


def modern_headers(method: str, version: str = MODERN, name: str | None = None) -> dict[str, str]:
    headers = {**JSON_HEADERS, "MCP-Protocol-Version": version, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


@pytest.mark.parametrize("server", ["stateless", "everything"])
@pytest.mark.parametrize("with_meta", [True, False])
async def test_an_unsupported_version_is_told_which_versions_are_served(gateway: gw.RunningGateway, token: str,
                                                                        server: str, with_meta: bool) -> None:
    params: dict[str, Any] = {"name": "echo", "arguments": ECHO[server]}
    if with_meta:
        params["_meta"] = envelope("2099-01-01")
    async with gateway.http(token) as http:
        r = await http.post(gateway.url(server), headers=modern_headers("tools/call", "2099-01-01", "echo"),
                            json={"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": params})
        note = await http.post(gateway.url(server), headers=modern_headers("notifications/cancelled", "2099-01-01"),
                               json={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                     "params": {"requestId": 3}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == -32022 and error["data"] == {"supported": [MODERN], "requested": "2099-01-01"}, error
    assert r.json()["id"] == 11
    assert note.status_code == 400 and note.json()["error"]["code"] == -32022, note.text
    refused = [x for x in gateway.records() if x["event"] == "request.refused" and x.get("code") == -32022]
    assert len(refused) >= 2


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
@pytest.mark.parametrize("version", [MODERN, "2099-01-01"])
async def test_get_and_delete_of_a_2026_era_client_are_405_allow_post(gateway: gw.RunningGateway, token: str,
                                                                     verb: str, version: str) -> None:
    async with gateway.http(token) as http:
        r = await http.request(verb, gateway.url("stateless"),
                               headers={"Accept": "text/event-stream", "MCP-Protocol-Version": version})
    assert r.status_code == 405 and r.headers["allow"] == "POST", (r.status_code, r.headers, r.text)


@pytest.mark.parametrize("server", ["stateless", "everything"])
@pytest.mark.parametrize("method", ["initialize", "logging/setLevel", "resources/subscribe"])
async def test_a_2026_era_initialize_is_refused_at_the_edge_and_recorded(gateway: gw.RunningGateway, token: str,
                                                                          server: str, method: str) -> None:
    """p05: server-everything answered the forwarded `initialize` "Server already initialized" (relayed as
    a 502, recorded as an allowed rpc.request); one that accepts a second `initialize` would have
    re-negotiated the session every stateless client of the principal shares."""
    params = {"initialize": {"protocolVersion": MODERN, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}},
              "logging/setLevel": {"level": "debug"}, "resources/subscribe": {"uri": "demo://resource/static/document/architecture.md"}}[method]
    async with gateway.http(token) as http:
        r = await http.post(gateway.url(server), headers=modern_headers(method),
                            json={"jsonrpc": "2.0", "id": 9, "method": method, "params": {**params, "_meta": envelope()}})
    assert r.status_code == 404 and r.json()["error"]["code"] == -32601, r.text
    request_id = r.json()["error"]["data"]["requestId"]
    mine = [x for x in gateway.records() if x.get("request_id") == request_id]
    assert [(x["event"], x.get("reason"), x.get("method")) for x in mine] == [("rpc.refused", "not_a_2026_method", method)]


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_handshake_clients_at_every_handshake_version_are_untouched(gateway: gw.RunningGateway, token: str,
                                                                         version: str) -> None:
    url = gateway.url("everything")
    async with gateway.http(token) as http:
        init = await http.post(url, headers=JSON_HEADERS, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200, init.text
        headers = {**JSON_HEADERS, "Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": version}
        listed = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert listed.status_code == 200 and "echo" in listed.text, listed.text
        async with http.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        deleted = await http.delete(url, headers=headers)
        assert deleted.status_code == 200, deleted.text
