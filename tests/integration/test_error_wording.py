"""Errors say what was wrong in our words, bounded in length; only ASCII digits are numbers.

Numbers written by callers reach the gateway in query parameters (the audit REST API, over a
real ledger on SQLite), in `Host` and `Last-Event-ID` headers (a real gateway process), in
config files and in upstream event streams. None of them may answer with Python's own text
("invalid literal for int() with base 10"), echo a 4,000-digit input, take '١' or '５' for a
digit, or fail with a 500.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.applications import Starlette

from ledgergate.api.audit import audit_routes
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.config import ConfigError, parse_config
from ledgergate.wire.sse import SSEParser
from ledgergate.numbers import parse_uint
from tests.support.procs import Proc, free_port, start_gateway

PYTHON_WORDS = ("int()", "literal", "base 10", "Traceback", "sys.set_int_max_str_digits", "ValueError")
NOT_NUMBERS = ["²", "١", "５", "1²", "٣٤", "-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "", "１０",
               "1" * 19, "1" * 4000, "9" * 5000]


def _ours(text: str, limit: int = 200) -> None:
    assert len(text) <= limit, len(text)
    for word in PYTHON_WORDS:
        assert word not in text, text


def test_only_ascii_digits_are_numbers() -> None:
    assert [parse_uint(t) for t in ("0", "7", "00012", "9" * 18)] == [0, 7, 12, 10**18 - 1]
    for text in NOT_NUMBERS:
        assert parse_uint(text) is None, text


# ── the audit REST API over a real ledger ───────────────────────────────────


@pytest.fixture
async def audit_api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    ledger = await Ledger.open(AuditSettings(signing_key="./data/ledger.key", replica="r"),
                               f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}", tmp_path)
    for i in range(5):
        await ledger.append("rpc.request", {"n": i})
    await ledger.checkpoint()
    app = Starlette(routes=audit_routes(ledger))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client
    await ledger.close()


@pytest.mark.parametrize("value", NOT_NUMBERS)
async def test_audit_api_refuses_what_is_not_a_number_in_its_own_words(audit_api: httpx.AsyncClient,
                                                                        value: str) -> None:
    for path, name, other in (("inclusion", "index", {"size": "5"}), ("inclusion", "size", {"index": "1"}),
                              ("consistency", "from", {"to": "5"}), ("consistency", "to", {"from": "1"})):
        r = await audit_api.get(f"/api/v1/audit/proof/{path}", params={name: value, **other})
        assert r.status_code == 400, (path, name, value, r.text)
        message = r.json()["error"]
        _ours(message)
        assert message.startswith(f"query parameter '{name}' must be a non-negative integer"), message


async def test_audit_api_sizes_beyond_the_ledger_are_refused_without_echo(audit_api: httpx.AsyncClient) -> None:
    big = "9" * 18
    for path, params in (("inclusion", {"index": "1", "size": big}), ("inclusion", {"index": big}),
                         ("consistency", {"from": "1", "to": big}), ("consistency", {"from": big})):
        r = await audit_api.get(f"/api/v1/audit/proof/{path}", params=params)
        assert r.status_code == 400, r.text
        _ours(r.json()["error"], 80)
    ok = await audit_api.get("/api/v1/audit/proof/inclusion", params={"index": "1", "size": "5"})
    assert ok.status_code == 200 and ok.json()["index"] == 1


# ── headers at a real gateway ───────────────────────────────────────────────


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("wording")
    port = free_port()
    config = {"listen": f"127.0.0.1:{port}", "storage": "sqlite:///./data/ledgergate.db",
              "servers": {"nowhere": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
              "audit": {"signing_key": "./data/ledger.key"}}
    path = directory / "ledgergate.yaml"
    path.write_text(yaml.safe_dump(config))
    proc: Proc = start_gateway(path, port, directory / "gateway.log")
    yield port
    proc.stop()


def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("host_port", ["²", "١٢٣", "８０８０", "0" * 5000, "abc", "1" * 30])
def test_a_host_port_that_is_not_a_number_is_a_foreign_host(port: int, host_port: str) -> None:
    for host in (f"127.0.0.1:{host_port}", f"[::1]:{host_port}", f"localhost:{host_port}"):
        status, body = _raw(port, f"GET /mcp/nowhere HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                                  .encode())
        assert status == 403, (host[:40], status, body[:200])
        _ours(json.loads(body)["error"]["message"])


def test_a_long_name_in_the_path_is_not_echoed_whole(port: int) -> None:
    name = "s" * 4000
    status, body = _raw(port, f"POST /mcp/{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                              "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                              "Content-Length: 2\r\n\r\n{}".encode())
    assert status == 404, body[:300]
    assert len(json.loads(body)["error"]["message"]) <= 500


# ── config and upstream event streams ───────────────────────────────────────


@pytest.mark.parametrize("listen", ["127.0.0.1:²", "127.0.0.1:١٢٣", "127.0.0.1:" + "0" * 5000, "127.0.0.1:８０"])
def test_a_listen_port_that_is_not_a_number_is_refused_in_our_words(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"listen: '{listen}'\n", env={})
    text = str(info.value)
    _ours(text)
    assert "'listen' must be host:port" in text


@pytest.mark.parametrize("duration", ["５s", "١٠m", "1" * 5000 + "s", "1e400", ".inf", "99999999999d"])
def test_a_duration_that_is_not_a_number_is_refused_in_our_words(duration: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"audit:\n  checkpoint_interval: {duration}\n", env={})
    _ours(str(info.value))


def test_an_upstream_retry_field_takes_ascii_digits_only() -> None:
    parser = SSEParser()
    for value in ("²", "١٠", "1" * 5000):
        events = parser.feed(f"retry: {value}\ndata: x\n\n".encode())
        assert [(e.data, e.retry) for e in events] == [("x", None)], value
    assert [e.retry for e in parser.feed(b"retry: 10\ndata: y\n\n")] == [10]


def test_a_last_event_id_takes_ascii_digits_only() -> None:
    from ledgergate.gateway.sessions import GatewaySession
    from ledgergate.upstream.base import ClientHello

    session = GatewaySession("s", "srv", "p", ClientHello(), None)  # type: ignore[arg-type]
    stream = session.new_stream()
    stream.append(b"{}")
    found = session.find_event(f"{stream.stream_no}-0")
    assert found is not None and found[0] is stream and found[1] == 1
    for last in ("١-٠", "²-0", "1-²", "1-" + "9" * 5000, "-0", "1-"):
        assert session.find_event(last) is None, last
