"""Slow and excess clients against a real gateway process (`ledgergate serve`), over raw sockets.

A client that never finishes its request head or body (slowloris) is answered 408 and closed
within the configured bound, even while it keeps trickling bytes; one connection beyond
`limits.max_client_connections` is answered 503 and closed at once, so a few hundred of them
cannot take the gateway's file descriptors; and ordinary clients are served all along.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.procs import Proc, free_port, start_gateway

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MAX_CONNECTIONS = 40
SLACK = 1.5  # scheduling on a shared 2-core machine


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int]]:
    directory = tmp_path_factory.mktemp("limits")
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "storage": "sqlite:///./data/ledgergate.db",
        "servers": {"nowhere": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
        "audit": {"signing_key": "./data/ledger.key"},
        "limits": {"client_header_timeout": f"{HEADER_TIMEOUT:g}s", "client_body_timeout": f"{BODY_TIMEOUT:g}s",
                   "max_client_connections": MAX_CONNECTIONS},
    }
    path = directory / "ledgergate.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = start_gateway(path, port, directory / "gateway.log")
    yield proc, port
    proc.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, deadline: float, trickle: bytes = b"") -> bytes:
    """Everything the gateway sends until it closes; sends `trickle` every 0.2 s meanwhile."""
    received = b""
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if trickle:
                try:
                    sock.sendall(trickle)
                except OSError:
                    return received
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"still open after the deadline; got {received!r}")


def _healthy(port: int) -> None:
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert r.status_code == 200, r.text


def _error_message(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    return str(json.loads(body)["error"]["message"])


def test_a_silent_connection_is_closed_after_the_header_timeout(gateway: tuple[Proc, int]) -> None:
    _, port = gateway
    with _connect(port) as sock:
        start = time.monotonic()
        answer = _read_until_closed(sock, start + HEADER_TIMEOUT + SLACK)
        assert time.monotonic() - start >= HEADER_TIMEOUT * 0.9
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert _error_message(answer) == f"the request head did not arrive within {HEADER_TIMEOUT:g}s"


def test_a_trickled_head_is_cut_off_although_bytes_keep_coming(gateway: tuple[Proc, int]) -> None:
    _, port = gateway
    with _connect(port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = _read_until_closed(sock, start + HEADER_TIMEOUT + SLACK, trickle=b"X-Slow: 1\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_blank_lines_between_requests_do_not_hold_the_connection(gateway: tuple[Proc, int]) -> None:
    _, port = gateway
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)
        start = time.monotonic()
        answer = _read_until_closed(sock, start + HEADER_TIMEOUT + SLACK, trickle=b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"HTTP/1.1 408 " in answer, answer


def test_a_trickled_body_is_cut_off(gateway: tuple[Proc, int]) -> None:
    """The gateway refuses the unauthenticated request at once; the client keeps trickling the
    body it announced, and the connection still ends within the body bound (a body the
    application does read is answered 408: tests/unit/test_serving.py)."""
    _, port = gateway
    with _connect(port) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /mcp/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Accept: application/json, text/event-stream\r\nContent-Length: 100000\r\n\r\n{")
        answer = _read_until_closed(sock, start + BODY_TIMEOUT + SLACK, trickle=b" ")
    assert answer.startswith(b"HTTP/1.1 401 "), answer


def test_normal_clients_are_served_while_slow_ones_hold_connections(gateway: tuple[Proc, int]) -> None:
    _, port = gateway
    slow = [_connect(port) for _ in range(MAX_CONNECTIONS - 10)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        _healthy(port)
        assert time.monotonic() - start < 1.0
    finally:
        for sock in slow:
            sock.close()


def test_connections_beyond_the_limit_are_refused_and_the_gateway_keeps_its_descriptors(
        gateway: tuple[Proc, int]) -> None:
    proc, port = gateway
    fd_dir = Path(f"/proc/{proc.proc.pid}/fd")
    time.sleep(HEADER_TIMEOUT + 0.5)  # earlier tests' connections are gone
    baseline = len(os.listdir(fd_dir))
    held: list[socket.socket] = []
    try:
        for _ in range(300):  # a few hundred slow clients
            held.append(_connect(port))
        time.sleep(0.5)
        open_fds = len(os.listdir(fd_dir))
        assert open_fds <= baseline + MAX_CONNECTIONS + 5, (baseline, open_fds)
        refused = held[-1]
        answer = _read_until_closed(refused, time.monotonic() + 2)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
        if answer:
            assert _error_message(answer) == "too many connections to the gateway; try again later"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    _healthy(port)  # the gateway serves again at once


def _send_until_refused(sock: socket.socket, head: bytes, filler: bytes, total: int) -> None:
    sock.sendall(head)
    sent = 0
    try:
        while sent < total:
            sock.sendall(filler)
            sent += len(filler)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the client finished: that is the point


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("shape", ["one long header", "many headers", "a long request line"])
def test_a_head_beyond_the_limit_is_answered_431_before_it_is_held(gateway: tuple[Proc, int], shape: str) -> None:
    """httptools keeps an unfinished head in memory without a bound; before any token is checked, a client
    could send one header of many megabytes. Past `limits.max_header_bytes` (64 KiB by default) it gets 431."""
    proc, port = gateway
    before = _rss_kib(proc.proc.pid)
    with _connect(port) as sock:
        if shape == "one long header":
            _send_until_refused(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", b"a" * 65536, 16 << 20)
        elif shape == "many headers":
            _send_until_refused(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                b"".join(b"X-%d: %s\r\n" % (i, b"b" * 50) for i in range(1000)), 16 << 20)
        else:
            _send_until_refused(sock, b"GET /healthz?", b"q" * 65536, 16 << 20)
        answer = _read_until_closed(sock, time.monotonic() + 10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert "exceeds 65536 bytes" in _error_message(answer)
    assert _rss_kib(proc.proc.pid) - before < 8 * 1024  # not the 16 MB the client tried to send
    _healthy(port)


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"a" * (100 * 1024) + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(7800)) + b"\r\n",
])
def test_a_head_beyond_the_limit_that_arrives_in_one_read_is_answered_431(gateway: tuple[Proc, int],
                                                                         head: bytes) -> None:
    """Only reads that left a head unfinished were counted: a 100 KiB header sent in one write reached the
    application (a 200 from /healthz) past `limits.max_header_bytes` (DoS probe D8)."""
    _, port = gateway
    with _connect(port) as sock:
        sock.sendall(head)
        answer = _read_until_closed(sock, time.monotonic() + 10)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    _healthy(port)


def test_heads_within_the_limit_and_large_bodies_are_served(gateway: tuple[Proc, int]) -> None:
    _, port = gateway
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={f"X-{i}": "v" * 400 for i in range(100)}, timeout=10)
    assert r.status_code == 200, r.text  # a 40 KB head
    big = httpx.post(f"http://127.0.0.1:{port}/mcp/nowhere", content=b"{" + b" " * (1 << 20) + b"}",
                     headers={"Content-Type": "application/json", "Accept": "application/json"}, timeout=10)
    assert big.status_code == 401, big.text  # the body is not the head: refused for its missing token only


@pytest.mark.parametrize("path", ["/healthz/", "/api/v1/approvals/", "/metrics/"])
def test_no_redirect_is_built_from_a_foreign_host(gateway: tuple[Proc, int], path: str) -> None:
    """Starlette's trailing-slash redirect ran before any Host check and sent `Location: http://evil.example/...`."""
    _, port = gateway
    r = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": "evil.example"}, timeout=10)
    assert r.status_code not in (301, 302, 307, 308) and "evil.example" not in r.headers.get("location", ""), r.headers
