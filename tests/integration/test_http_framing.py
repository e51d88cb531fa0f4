"""Ambiguous requests are refused at the HTTP layer of a real gateway process, on every path.

RFC 9112 §3.2: more than one `Host` (or none, in HTTP/1.1) is answered 400. The same holds for
every header the gateway reads as a single value — `Authorization`, `Content-Type`, `Origin`,
the MCP session and routing headers — because with two copies one reader may take the first
and another the last. Sent over raw sockets, since HTTP client libraries will not send these.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import yaml

from tests.support.procs import Proc, free_port, start_gateway

PATHS = ["/healthz", "/mcp/nowhere", "/api/v1/audit/checkpoint", "/no/such/path",
         "/.well-known/oauth-protected-resource/mcp/nowhere"]


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("framing")
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "storage": "sqlite:///./data/ledgergate.db",
        "servers": {"nowhere": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
        "audit": {"signing_key": "./data/ledger.key"},
    }
    path = directory / "ledgergate.yaml"
    path.write_text(yaml.safe_dump(config))
    proc: Proc = start_gateway(path, port, directory / "gateway.log")
    yield port
    proc.stop()


def _exchange(port: int, request: bytes) -> bytes:
    """Send one request and read until the gateway closes or a whole answer is in."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return received


def _request(path: str, *headers: str, method: str = "GET", body: bytes = b"", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _refused(answer: bytes, message: str) -> None:
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["message"] == message, body


@pytest.mark.parametrize("path", PATHS)
def test_two_host_headers_are_refused_on_every_path(port: int, path: str) -> None:
    host = f"127.0.0.1:{port}"
    for pair in ((host, host), (host, "evil.example"), ("evil.example", host)):
        answer = _exchange(port, _request(path, f"Host: {pair[0]}", f"host: {pair[1]}"))
        _refused(answer, "more than one Host header")


@pytest.mark.parametrize("name", ["Authorization", "Content-Type", "Origin", "Mcp-Session-Id",
                                  "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "Last-Event-ID"])
def test_two_copies_of_a_single_valued_header_are_refused(port: int, name: str) -> None:
    host = f"Host: 127.0.0.1:{port}"
    for path in ("/mcp/nowhere", "/healthz"):
        answer = _exchange(port, _request(path, host, f"{name}: a", f"{name.upper()}: b", method="POST",
                                          body=b"{}"))
        _refused(answer, f"more than one {name.title()} header")
        same = _exchange(port, _request(path, host, f"{name}: a", f"{name.lower()}: a", method="POST",
                                        body=b"{}"))
        _refused(same, f"more than one {name.title()} header")


def test_a_missing_host_is_refused_in_http_1_1(port: int) -> None:
    _refused(_exchange(port, _request("/healthz")), "no Host header")


def test_conflicting_content_lengths_are_refused(port: int) -> None:
    answer = _exchange(port, f"POST /mcp/nowhere HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 2\r\n"
                             "Content-Length: 3\r\n\r\n{}".encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def test_one_of_each_is_served(port: int) -> None:
    """The controls: the same requests with single headers reach the application."""
    answer = _exchange(port, _request("/healthz", f"Host: 127.0.0.1:{port}", "Authorization: Bearer x",
                                      "Content-Type: application/json", "Accept: a/b", "Accept: c/d"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    answer = _exchange(port, _request("/mcp/nowhere", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
                                      "Accept: application/json, text/event-stream", method="POST", body=b"{}"))
    assert answer.startswith(b"HTTP/1.1 401 "), answer  # the gateway's own answer: no token
    # HTTP/1.0 has no Host requirement
    assert _exchange(port, _request("/healthz", version="1.0")).startswith(b"HTTP/1.1 200 ")
