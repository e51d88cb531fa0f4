"""Fuzzing the real gateway over raw sockets: generated request lines, headers and bodies against
the same app and uvicorn settings `ledgergate serve` uses (in-process, in its own thread and loop),
in front of a recording upstream, with real RS256 tokens from the test OpenID provider.

Properties, for every generated request:
- an answer starts within 10 s (never a hang) and the gateway keeps serving (never a crash);
- never a 5xx and never a stack trace;
- never an unrecorded refusal: a refusal (non-2xx, or a 2xx JSON-RPC error) of a request that
  carried a valid token has a ledger record written for it — except the refusals that by design
  come before the token is looked at (`UNRECORDED_BY_DESIGN`, also in docs/security.md).
"""

from __future__ import annotations

import http.server
import json
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledgergate.app import Gateway, uvicorn_config
from ledgergate.config import load_config
from tests.fuzz.conftest import examples
from tests.integration.test_policy_gateway import POLICIES
from tests.support.gateway import write_config
from tests.support.oidc import Provider
from tests.support.procs import free_port
from tests.support.upstream import RecordingUpstream

pytestmark = pytest.mark.node

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


@dataclass
class Served:
    port: int
    token: str
    db: Path
    gateway: Gateway
    thread: threading.Thread
    hostile: HostileUpstream
    other_token: str

    def ledger_size(self) -> int:
        assert self.gateway.ledger is not None
        return self.gateway.ledger.size

    def owed(self) -> int:
        """Refusals counted for an aggregated `auth.denied` record not written yet."""
        assert self.gateway.auth is not None
        return self.gateway.auth.refusals.pending

    def events_since(self, seq: int) -> list[str]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return [row[0] for row in conn.execute("SELECT event FROM ledger_leaves WHERE seq >= ? ORDER BY seq",
                                                   (seq,))]


class HostileUpstream:
    """An MCP server that answers whatever the test sets in `reply` (status, content type, body), with
    `__ID__` in the body replaced by the JSON of the request's id: a compromised server, for real
    over HTTP/1.1 (the gateway's own upstream client and SSE parser read it)."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, bytes] = (200, "application/json", b"{}")
        hostile = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    request_id = json.loads(body).get("id")
                except (ValueError, AttributeError):
                    request_id = None
                status, content_type, reply = hostile.reply
                reply = reply.replace(b'"__ID__"', json.dumps(request_id).encode())
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_DELETE = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("fuzz-gateway")
    provider = Provider()
    upstream = RecordingUpstream()
    hostile = HostileUpstream()
    port = free_port()
    limits = {"client_header_timeout": "3s", "client_body_timeout": "3s", "client_keepalive_timeout": "2s",
              "max_body_bytes": 65536}
    config = load_config(write_config(directory, port, provider.issuer, {"rec": {"url": upstream.url},
                                                                               "hostile": {"url": f"http://127.0.0.1:{hostile.port}/mcp", "timeout": 10}}, POLICIES,
                                      {"limits": limits, "tool_drift": {"mode": "alert"}}))
    gateway = Gateway(config)
    server = uvicorn.Server(uvicorn_config(gateway.asgi, "127.0.0.1", port, config.settings.limits))

    async def main() -> None:
        await upstream.start()
        try:
            await server.serve()
        finally:
            await upstream.stop()

    thread = threading.Thread(target=uvloop.run, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield Served(port, provider.token("alice", ["staff"]), directory / "data" / "ledgergate.db", gateway, thread,
                     hostile, provider.token("bob", ["staff"]))
    finally:
        server.should_exit = True
        thread.join(30)
        hostile.close()
        provider.stop()


# ── generated requests ─────────────────────────────────────────────────────────────────────────
GOOD = "GOOD-TOKEN"  # replaced by the real token when sent
METHODS = st.sampled_from(["POST", "POST", "POST", "GET", "DELETE", "PUT", "OPTIONS", "HEAD", "PATCH", "TRACE"])
PATHS = st.sampled_from(["/mcp/rec", "/mcp/rec", "/mcp/rec", "/mcp/rec/", "/mcp/rec?x=1", "/mcp/nope", "/mcp/rec/sse",
                         "/mcp/rec/messages", "/mcp/rec/messages?sessionId=abc", "/mcp/%72ec", "/mcp//rec", "/mcp/",
                         "/mcp/rec/../rec", "/api/v1/audit/checkpoint", "/api/v1/audit/proof/inclusion?index=x&size=1",
                         "/api/v1/approvals", "/healthz", "/readyz", "/.well-known/oauth-protected-resource/mcp/rec",
                         "/", "*", "/mcp/rec#frag", "/mcp/rec?access_token=x"])
TOKEN_CHARS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/=", max_size=40)
VALUE_CHARS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
HEADER_CHOICES: dict[str, Any] = {
    "Host": st.sampled_from(["127.0.0.1:{port}", "127.0.0.1:{port}", "localhost:{port}", "localhost", "evil.example",
                             "127.0.0.1:1", "[::1]:{port}", "[::1]x", "", "127.0.0.1:{port}, evil.example"]),
    "Origin": st.sampled_from(["http://127.0.0.1:{port}", "http://evil.example", "null", "http://[x", "http://[::1",
                               "file://", "http://localhost:{port}/"]),
    "Authorization": st.sampled_from([f"Bearer {GOOD}"] * 6 + ["Bearer", "Bearer ", f"bearer {GOOD}",
                                      f"Bearer  {GOOD}", "Basic YTpi", "Bearer lgk_x", "Bearer a.b.c",
                                      f"Bearer {GOOD}x"]) | TOKEN_CHARS.map("Bearer ".__add__),
    "Accept": st.sampled_from(["application/json, text/event-stream", "application/json, text/event-stream",
                               "application/json", "text/event-stream", "*/*", "text/html", "", "application/*"]),
    "Content-Type": st.sampled_from(["application/json", "application/json", "application/json; charset=utf-8",
                                     "application/json; charset=latin-1", "text/plain", "", "application/jsonx"]),
    "MCP-Protocol-Version": st.sampled_from([MODERN, MODERN, "2025-06-18", "2024-11-05", "1999-01-01", "", "x" * 50]),
    "Mcp-Method": st.sampled_from(["tools/call", "tools/list", "initialize", "", "ping", "x"]),
    "Mcp-Name": st.sampled_from(["echo", "big", "", "=?utf-8?b?ZWNobw==?="]),
    "Mcp-Session-Id": st.sampled_from(["abc", "", "0" * 64, "x" * 300]) | VALUE_CHARS,
    "Last-Event-ID": st.sampled_from(["1", "x", "-1", "9" * 40]),
    "Connection": st.sampled_from(["close", "keep-alive", "upgrade", "Upgrade, close"]),
    "Upgrade": st.sampled_from(["websocket", "h2c"]),
    "Transfer-Encoding": st.sampled_from(["chunked", "gzip", "identity"]),
    "Expect": st.sampled_from(["100-continue", "nothing"]),
}


def rpc(method: str, params: Any, id_: Any = 1) -> Any:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if id_ is not None:
        msg["id"] = id_
    return msg


BODIES = st.one_of(
    st.sampled_from([
        rpc("tools/call", {"name": "echo", "arguments": {"message": "hi"}, "_meta": META}),
        rpc("tools/call", {"name": "big", "arguments": {}, "_meta": META}),
        rpc("tools/call", {"name": "echo", "arguments": {"message": "wire"}, "_meta": META}),
        rpc("tools/call", {"name": "echo", "arguments": {"message": "hi"}, "_meta": META}, None),
        rpc("tools/list", {"_meta": META}),
        rpc("server/discover", {"_meta": META}),
        rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "fuzz", "version": "0"}}),
        rpc("notifications/initialized", None, None),
        rpc("resources/read", {"uri": "file:///etc/passwd", "_meta": META}),
        rpc("tools/call", {"name": "echo", "arguments": {"message": 2**64}, "_meta": META}),
        rpc("tools/call", "not an object"),
        rpc("", {}),
        {"jsonrpc": "1.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 1, "result": {}},
        [], [rpc("ping", {})], 1, "x", None,
    ]).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"\xff\xfe", b"{}" * 10, b"[" * 5000 + b"]" * 5000, b"\x00", b"null",
                     b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":'
                     + b'{"a":' * 600 + b"1" + b"}" * 600 + b"}}"]),
    st.binary(max_size=64),
)


VALID_BODIES = st.sampled_from([
    rpc("tools/call", {"name": "echo", "arguments": {"message": "hi"}, "_meta": META}),
    rpc("tools/list", {"_meta": META}),
    rpc("server/discover", {"_meta": META}),
]).map(lambda v: json.dumps(v).encode())
MUTATIONS = ["drop", "value", "value", "add", "add", "body", "body", "length", "version", "method", "path", "other"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], bytes, str]:
    """A well-formed authenticated 2026-07-28 call, then 0-3 mutations of its parts: so both the
    refusals and what lies behind them (policy, upstream, records) are reached."""
    method, path, version = "POST", "/mcp/rec", "HTTP/1.1"
    body = draw(VALID_BODIES)
    method_name = json.loads(body)["method"]
    headers = [("Host", "127.0.0.1:{port}"), ("Authorization", f"Bearer {GOOD}"),
               ("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
               ("MCP-Protocol-Version", MODERN), ("Mcp-Method", method_name)]
    if method_name == "tools/call":
        headers.append(("Mcp-Name", "echo"))
    length = "exact"
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        if mutation == "drop" and headers:
            headers.pop(draw(st.integers(0, len(headers) - 1)))
        elif mutation == "value" and headers:
            i = draw(st.integers(0, len(headers) - 1))
            name = headers[i][0]
            headers[i] = (name, draw(HEADER_CHOICES[name] if name in HEADER_CHOICES else VALUE_CHARS))
        elif mutation == "add":
            name = draw(st.sampled_from(sorted(HEADER_CHOICES)))
            headers.append((name, draw(HEADER_CHOICES[name])))
        elif mutation == "other":
            headers.append((draw(TOKEN_CHARS.filter(bool)), draw(VALUE_CHARS)))
        elif mutation == "body":
            body = draw(BODIES)
        elif mutation == "length":
            length = draw(st.sampled_from(["none", "short", "junk"]))
        elif mutation == "version":
            version = draw(st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "HTTP/1.2"]))
        elif mutation == "method":
            method = draw(METHODS)
        elif mutation == "path":
            path = draw(PATHS)
    if length == "exact":
        headers.append(("Content-Length", str(len(body))))
    elif length == "short" and body:
        headers.append(("Content-Length", str(len(body) - 1)))
    elif length == "junk":
        headers.append(("Content-Length", draw(st.sampled_from(["-1", "x", "1e3", "٣", "4 4", "+5", "99999999999"]))))
    return method, path, headers, body, version


# ── sending one and judging the answer ─────────────────────────────────────────────────────────
#: Refusals that by design are answered before the credential is looked at, so they carry no
#: identity to record and no application code sees them (docs/security.md lists them):
#: - the HTTP layer (`gateway/serving.py`, uvicorn's parser): malformed HTTP, no `Host` or two of a
#:   single-valued header (400), a late head or body (408), too many connections (503);
#: - `Host`/`Origin` naming another site (403, the DNS-rebinding check runs first on every path);
#: - a path that names no MCP server or route (404), a method no route has (405, REST routes).
UNRECORDED_BY_DESIGN = ("Host header not allowed", "Origin not allowed", "no Host header", "more than one ",
                        "did not arrive within", "too many connections", "Invalid HTTP request",
                        "unknown server", '"not found"', "Method Not Allowed", "Not Found")


@dataclass
class Answer:
    status: int
    head: str
    body: bytes


def send(served: Served, method: str, path: str, headers: list[tuple[str, str]], body: bytes, version: str) -> Answer | None:
    lines = [f"{method} {path} {version}"]
    for name, value in headers:
        value = value.replace(GOOD, served.token).replace("{port}", str(served.port))
        lines.append(f"{name}: {value}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR) if method == "HEAD" else None
        data = b""
        started = time.monotonic()
        while b"\r\n\r\n" not in data or data.startswith(b"HTTP/1.1 1"):
            if data.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in data:  # an interim answer (100 Continue)
                data = data.partition(b"\r\n\r\n")[2]
                continue
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within 10 s (a hang) to {raw[:300]!r}") from None
            except ConnectionResetError:
                return None
            if not chunk:
                return None  # closed without an answer: allowed only for what the HTTP parser rejects
            data += chunk
            assert time.monotonic() - started < 10, f"no answer within 10 s (a hang) to {raw[:300]!r}"
        head, _, rest = data.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        status = int(text.split(" ", 2)[1])
        length = next((int(line.split(":", 1)[1]) for line in text.split("\r\n")[1:]
                       if line.lower().startswith("content-length:")), None)
        sock.settimeout(2)
        while length is not None and len(rest) < length and method != "HEAD":
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            rest += chunk
        return Answer(status, text, rest)


def is_refusal(answer: Answer) -> bool:
    if not 200 <= answer.status < 300:
        return True
    if "application/json" in answer.head.lower():
        try:
            doc = json.loads(answer.body)
        except ValueError:
            return False
        return isinstance(doc, dict) and "error" in doc
    if "text/event-stream" in answer.head.lower():
        return b'"error"' in answer.body and b'"result"' not in answer.body
    return False


#: answers seen, by status (None: closed without one); the last test checks the mix was broad
SEEN: Counter[int | None] = Counter()


def check(served: Served, method: str, path: str, headers: list[tuple[str, str]], body: bytes, version: str) -> None:
    before = served.ledger_size()
    owed_before = served.owed()
    answer = send(served, method, path, headers, body, version)
    assert served.thread.is_alive(), "the gateway thread died"
    SEEN[answer.status if answer else None] += 1
    if answer is None:
        return
    shown = f"{method} {path} {headers} {body[:200]!r} -> {answer.head[:300]} {answer.body[:300]!r}"
    assert answer.status < 500 or answer.status == 503 and b"connections" in answer.body, shown
    assert b"Traceback" not in answer.body and b'File "' not in answer.body, shown
    authorization = [v for n, v in headers if n.lower() == "authorization"]
    if authorization != [f"Bearer {GOOD}"] or not is_refusal(answer):
        return
    why = answer.body.decode("utf-8", "replace")
    if any(reason in why for reason in UNRECORDED_BY_DESIGN) or answer.status in (400, 408) and not why:
        return
    for _ in range(20):  # records of a streamed answer may land just after its head
        if served.ledger_size() > before:
            return
        if answer.status == 401 and served.owed() > owed_before:
            return  # counted by the refusal aggregator: its record carries the count (gateway/auth.py)
        time.sleep(0.05)
    raise AssertionError(f"a refusal of an authenticated request left no ledger record: {shown}")


@settings(max_examples=examples(150), deadline=None, suppress_health_check=list(HealthCheck))
@given(requests())
@example(("POST", "/mcp/rec", [("Host", "127.0.0.1:{port}"), ("Origin", "http://[x"),
                               ("Authorization", f"Bearer {GOOD}")], b"{}", "HTTP/1.1"))
@example(("POST", "/mcp/rec", [("Host", "[::1]x"), ("Authorization", f"Bearer {GOOD}")], b"{}", "HTTP/1.1"))
def test_any_request_gets_a_bounded_recorded_answer_and_never_a_5xx(
        served: Served, request_: tuple[str, str, list[tuple[str, str]], bytes, str]) -> None:
    check(served, *request_)


def test_the_gateway_still_serves_after_the_fuzzing(served: Served) -> None:
    print("answers by status:", dict(SEEN))
    if sum(SEEN.values()) >= 100:  # the fuzzer reached past the refusals into served calls
        assert SEEN[200] >= 5 and len(SEEN) >= 5, SEEN
    answer = send(served, "GET", "/healthz", [("Host", "127.0.0.1:{port}"), ("Connection", "close")], b"", "HTTP/1.1")
    assert answer is not None and answer.status == 200
    ok = send(served, "POST", "/mcp/rec", [
        ("Host", "127.0.0.1:{port}"), ("Authorization", f"Bearer {GOOD}"),
        ("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", "echo"),
        ("Content-Length", "0")], b"", "HTTP/1.1")
    assert ok is not None and ok.status == 400  # an empty body is a precise parse error, still served


BASE_HEADERS = [("Host", "127.0.0.1:{port}"), ("Authorization", f"Bearer {GOOD}"),
                ("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
                ("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/list")]
LIST_BODY = json.dumps(rpc("tools/list", {"_meta": META})).encode()


def replaced(name: str, value: str | None) -> list[tuple[str, str]]:
    out = [(n, v) for n, v in BASE_HEADERS if n != name]
    return out + ([(name, value)] if value is not None else [])


@pytest.mark.parametrize(("headers", "body", "status"), [
    (replaced("Content-Type", "text/plain"), LIST_BODY, 415),
    (replaced("Accept", "text/html"), LIST_BODY, 406),
    (BASE_HEADERS, b"{not json", 400),
    (BASE_HEADERS, b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', 400),
    (replaced("Mcp-Method", "tools/call"), LIST_BODY, 400),  # header and body disagree
    (replaced("MCP-Protocol-Version", "2025-06-18") + [("Mcp-Session-Id", "0" * 64)],
     json.dumps(rpc("tools/list", {})).encode(), 404),
], ids=["media-type", "accept", "not-json", "not-json-rpc", "header-mismatch", "unknown-session"])
def test_transport_refusals_of_an_authenticated_caller_are_recorded(
        served: Served, headers: list[tuple[str, str]], body: bytes, status: int) -> None:
    """Found by the fuzzer above: these were answered with no record at all."""
    before = served.ledger_size()
    answer = send(served, "POST", "/mcp/rec", headers + [("Content-Length", str(len(body)))], body, "HTTP/1.1")
    assert answer is not None and answer.status == status, answer
    for _ in range(20):
        if "request.refused" in served.events_since(before):
            break
        time.sleep(0.05)
    events = served.events_since(before)
    assert events == ["request.refused"], events
    with sqlite3.connect(f"file:{served.db}?mode=ro", uri=True) as conn:
        record = json.loads(conn.execute("SELECT record FROM ledger_leaves WHERE seq = ?", (before,)).fetchone()[0])
    assert record["status"] == status and record["principal"]["subject"] == "alice" and record["server"] == "rec"
    assert served.token not in json.dumps(record)


@pytest.mark.parametrize("origin", ["http://[x", "http://[::1", "https://[::1]x"])
def test_a_malformed_origin_is_refused_not_a_500(served: Served, origin: str) -> None:
    """Found by the fuzzer above: `urlsplit` raised on an unclosed IPv6 literal and the gateway answered 500."""
    answer = send(served, "POST", "/mcp/rec", BASE_HEADERS + [("Origin", origin), ("Content-Length", "2")], b"{}",
                  "HTTP/1.1")
    assert answer is not None and answer.status == 403 and b"Origin not allowed" in answer.body, answer


# ── a compromised MCP server ───────────────────────────────────────────────────────────────────
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
RESULTS = st.one_of(
    st.fixed_dictionaries({"content": st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})
                                               | ANY_JSON, max_size=2)}),
    st.fixed_dictionaries({"tools": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8) | ANY_JSON},
                                                                   optional={"inputSchema": ANY_JSON,
                                                                             "description": ANY_JSON}), max_size=2)}),
    st.just({"resultType": "input_required", "inputRequests": {"x": {"method": "elicitation/create"}}}),
    ANY_JSON)
MESSAGES = st.one_of(
    st.builds(lambda r: {"jsonrpc": "2.0", "id": "__ID__", "result": r}, RESULTS),
    st.builds(lambda e: {"jsonrpc": "2.0", "id": "__ID__", "error": e}, ANY_JSON
              | st.fixed_dictionaries({"code": ANY_JSON, "message": ANY_JSON})),
    st.builds(lambda m, p: {"jsonrpc": "2.0", "method": m, "params": p},
              st.sampled_from(["notifications/progress", "notifications/message", "x/y", ""]), ANY_JSON),
    st.builds(lambda m, p: {"jsonrpc": "2.0", "id": 7, "method": m, "params": p},
              st.sampled_from(["sampling/createMessage", "elicitation/create", "roots/list", "ping"]), ANY_JSON),
    st.builds(lambda v: {"jsonrpc": "2.0", "id": v, "result": {}}, ANY_JSON),
    ANY_JSON)


@st.composite
def hostile_replies(draw: st.DrawFn) -> tuple[int, str, bytes]:
    status = draw(st.sampled_from([200, 200, 200, 202, 400, 404, 500, 302]))
    if draw(st.booleans()):
        events = draw(st.lists(MESSAGES, max_size=3))
        stream = b"".join(draw(st.sampled_from([b"", b"event: message\n", b"event: other\n", b": c\n", b"id: 1\n"]))
                          + b"data: " + json.dumps(m).encode() + b"\n\n" for m in events)
        stream += draw(st.sampled_from([b"", b"data: {", b"data: \xff\n\n", b"retry: x\n\n"]))
        return status, draw(st.sampled_from(["text/event-stream", "text/event-stream; charset=utf-8"])), stream
    body = draw(MESSAGES.map(lambda m: json.dumps(m).encode()) | st.lists(MESSAGES, max_size=2).map(
        lambda ms: json.dumps(ms).encode()) | st.binary(max_size=20))
    return status, draw(st.sampled_from(["application/json", "application/json", "text/plain", ""])), body


HOSTILE_CALLS = st.sampled_from([
    ("tools/call", "echo", rpc("tools/call", {"name": "echo", "arguments": {"message": "hi"}, "_meta": META})),
    ("tools/list", None, rpc("tools/list", {"_meta": META})),
    ("server/discover", None, rpc("server/discover", {"_meta": META})),
    ("resources/read", "demo://x", rpc("resources/read", {"uri": "demo://x", "_meta": META})),
])


@settings(max_examples=examples(80), deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_replies(), HOSTILE_CALLS)
def test_whatever_a_compromised_server_answers_the_client_gets_no_500(
        served: Served, reply: tuple[int, str, bytes], call: tuple[str, str | None, Any]) -> None:
    served.hostile.reply = reply
    method, name, message = call
    body = json.dumps(message).encode()
    headers = [("Host", "127.0.0.1:{port}"), ("Authorization", f"Bearer {GOOD}"),
               ("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
               ("MCP-Protocol-Version", MODERN), ("Mcp-Method", method), ("Content-Length", str(len(body)))]
    if name is not None:
        headers.append(("Mcp-Name", name))
    answer = send(served, "POST", "/mcp/hostile", headers, body, "HTTP/1.1")
    assert served.thread.is_alive()
    assert answer is not None, "the gateway closed the connection without an answer"
    shown = f"{reply!r} -> {answer.head[:200]} {answer.body[:300]!r}"
    assert answer.status != 500 and b"internal gateway error" not in answer.body, shown
    assert b"Traceback" not in answer.body, shown


@pytest.mark.parametrize("reply", [
    (200, "application/json", b"false"),
    (200, "application/json", b"[1]"),
    (200, "application/json", b'"x"'),
    (200, "text/event-stream", b"data: 5\n\n"),
    (200, "text/event-stream", b'data: [1]\n\ndata: "x"\n\n'),
], ids=["false", "list-of-number", "string", "sse-number", "sse-list-and-string"])
def test_json_that_is_not_a_message_from_the_server_is_a_502(served: Served, reply: tuple[int, str, bytes]) -> None:
    """Found by the fuzzer above: a JSON value that is not an object made the gateway answer 500."""
    served.hostile.reply = reply
    body = json.dumps(rpc("tools/call", {"name": "echo", "arguments": {"message": "hi"}, "_meta": META})).encode()
    answer = send(served, "POST", "/mcp/hostile", [
        ("Host", "127.0.0.1:{port}"), ("Authorization", f"Bearer {GOOD}"),
        ("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", "echo"),
        ("Content-Length", str(len(body)))], body, "HTTP/1.1")
    assert answer is not None and answer.status == 502, answer


def test_a_non_auditor_refused_by_the_audit_api_is_recorded(served: Served) -> None:
    """Issue 20 item 9, reached by the fuzzer: the audit API's 403 left no record."""
    before = served.ledger_size()
    answer = send(served, "GET", "/api/v1/audit/checkpoint", [("Host", "127.0.0.1:{port}"),
                                                              ("Authorization", f"Bearer {GOOD}")], b"", "HTTP/1.1")
    assert answer is not None and answer.status == 403, answer
    events = served.events_since(before)
    assert events == ["auth.forbidden"], events  # recorded once (gateway/auth.py `forbidden`)
    with sqlite3.connect(f"file:{served.db}?mode=ro", uri=True) as conn:
        record = json.loads(conn.execute("SELECT record FROM ledger_leaves WHERE seq = ?", (before,)).fetchone()[0])
    assert record["path"] == "/api/v1/audit/checkpoint" and record["principal"]["subject"] == "alice"


def test_another_identitys_session_refused_is_recorded(served: Served) -> None:
    """Issue 20 item 9: presenting another identity's session is a 403 an investigator must find."""
    hello = json.dumps(rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": "fuzz", "version": "0"}})).encode()
    head = [("Host", "127.0.0.1:{port}"), ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"), ("MCP-Protocol-Version", "2025-06-18")]
    opened = send(served, "POST", "/mcp/rec", head + [("Authorization", f"Bearer {GOOD}"),
                                                      ("Content-Length", str(len(hello)))], hello, "HTTP/1.1")
    assert opened is not None and opened.status == 200, opened
    session = next(line.split(":", 1)[1].strip() for line in opened.head.split("\r\n")
                   if line.lower().startswith("mcp-session-id:"))
    before = served.ledger_size()
    body = json.dumps(rpc("tools/list", {})).encode()
    answer = send(served, "POST", "/mcp/rec", head + [("Authorization", f"Bearer {served.other_token}"),
                                                      ("Mcp-Session-Id", session),
                                                      ("Content-Length", str(len(body)))], body, "HTTP/1.1")
    assert answer is not None and answer.status == 403, answer
    with sqlite3.connect(f"file:{served.db}?mode=ro", uri=True) as conn:
        rows = [json.loads(r[0]) for r in conn.execute("SELECT record FROM ledger_leaves WHERE seq >= ?", (before,))]
    # recorded once, by the session registry's own record (gatewayfix), not twice
    assert [r["event"] for r in rows] == ["session.foreign"], rows
    assert rows[0]["principal"]["subject"] == "bob"
