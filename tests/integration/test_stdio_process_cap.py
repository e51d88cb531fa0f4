"""`servers.<name>.max_processes`: a cap on the children a stdio server runs at once, across every identity.

A DoS probe found that `limits.max_sessions_per_principal` bounds each identity's sessions, but nothing
bounds them across identities: each session (and each identity's shared 2026-07-28 session) starts a child
of a stdio server, so many identities (or one with 64 sessions) could start hundreds of a large server and
take the host down. Now an opening past the cap is refused at once (503, `Retry-After`, a JSON-RPC error
naming the cap), recorded once (`request.refused`), and the slot of a child comes back however it ends:
its session closed (DELETE), the child crashing, the session idling out, the gateway shutting down.

A real gateway (`ledgergate serve`) with the demo bank server over stdio, behind a real OpenID provider;
and, in process, the gateway's own `Upstream` and `SessionRegistry` before a small real stdio server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgergate.errors import RATE_LIMITED, UPSTREAM_UNAVAILABLE, UpstreamError
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.principal import Principal
from ledgergate.upstream import registry
from ledgergate.upstream.base import ClientHello
from ledgergate.upstream.registry import Upstream
from ledgergate.upstream.settings import PoolLimits, ServerSettings
from ledgergate.upstream.stdio import StdioSession
from tests.support import gateway as gw
from tests.support.oidc import Provider

pytestmark = [pytest.mark.timeout(180)]

POLICIES = [{"name": "staff-all", "match": {"groups": ["staff"]}, "effect": "allow"}]
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN = "2026-07-28"

#: a small stdio MCP server (stdlib only, so it starts in milliseconds): answers `initialize` and
#: `tools/list`; with `CLOSE_STDOUT=1` it closes its stdout at its first `tools/list` and stays up
TINY_SERVER = r'''
import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "tiny", "version": "1"}}
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
    elif msg.get("method") == "tools/list":
        if os.environ.get("CLOSE_STDOUT") == "1":
            sys.stdout.close(); os.close(1)
            time.sleep(3600)
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": []}}), flush=True)
'''


# ── looking at the process tree ──────────────────────────────────────────────
def children_running(parent: int, marker: str) -> list[int]:
    """Pids of the live children of `parent` whose command line holds `marker` (zombies not counted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # after "(comm)": state, ppid, ...
        if int(fields[1]) == parent and fields[0] != b"Z" and marker in cmdline:
            found.append(int(entry))
    return found


class TreeWatch:
    """Samples the children of a process every few milliseconds in a thread, keeping the most seen at once."""

    def __init__(self, parent: int, marker: str) -> None:
        self.parent, self.marker = parent, marker
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, len(children_running(self.parent, self.marker)))
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most


async def until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# ── a real gateway ──────────────────────────────────────────────────────────
BANK_MARKER = "ledgergate.demo.bank_server"


@pytest.fixture
def capped(tmp_path: Path, idp: Provider) -> Iterator[gw.RunningGateway]:
    running = gw.start(tmp_path, idp.issuer, {"bank": {"command": gw.BANK_ARGV, "max_processes": 2}}, POLICIES)
    yield running
    running.stop()


async def initialize(http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.post(url, headers=ACCEPT, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})


def assert_refused_at_cap(r: httpx.Response, rpc_id: Any = 1) -> None:
    assert r.status_code == 503, r.text
    assert r.headers.get("retry-after") == "5", r.headers
    body = r.json()
    assert body["id"] == rpc_id and body["error"]["code"] == UPSTREAM_UNAVAILABLE, body
    assert "runs its maximum of 2 processes" in body["error"]["message"], body
    assert "try again later" in body["error"]["message"], body
    assert body["error"]["data"]["reason"] == "max_processes" and body["error"]["data"]["maxProcesses"] == 2, body
    assert "mcp-session-id" not in r.headers


async def initialize_once_freed(http: httpx.AsyncClient, url: str, timeout: float = 15.0) -> tuple[httpx.Response, int]:
    """`initialize` until a slot is free (a child that exited gives its slot back once the gateway has reaped it,
    a moment after it leaves the process table); every refusal meanwhile must be the cap's. (the answer, refusals)."""
    deadline, refused = time.monotonic() + timeout, 0
    while True:
        r = await initialize(http, url)
        if r.status_code == 200:
            return r, refused
        assert_refused_at_cap(r)
        refused += 1
        assert time.monotonic() < deadline, "no slot came back"
        await asyncio.sleep(0.05)


async def test_a_third_session_is_refused_at_the_cap_until_one_ends(capped: gw.RunningGateway, idp: Provider) -> None:
    gateway_pid = capped.proc.proc.pid
    watch = TreeWatch(gateway_pid, BANK_MARKER)
    url = capped.url("bank")
    clients = {name: capped.http(idp.token(name, ["staff"])) for name in ("alice", "bob", "carol", "dave", "erin")}
    refusals = 0
    try:
        opened, child = {}, {}
        for name in ("alice", "bob"):
            before = set(children_running(gateway_pid, BANK_MARKER))
            r = await initialize(clients[name], url)
            assert r.status_code == 200, r.text
            opened[name] = r.headers["mcp-session-id"]
            (child[name],) = set(children_running(gateway_pid, BANK_MARKER)) - before
        assert len(children_running(gateway_pid, BANK_MARKER)) == 2

        # a third identity: refused at once, with the cap named, and nothing started
        started = time.monotonic()
        r = await initialize(clients["carol"], url)
        assert time.monotonic() - started < 5, "the refusal must not wait for a slot"
        assert_refused_at_cap(r)
        refusals += 1
        # a 2026-07-28 client's shared session is a child too, and is refused the same way
        r = await clients["erin"].post(url, headers={**ACCEPT, "MCP-Protocol-Version": MODERN,
                                                     "Mcp-Method": "server/discover"}, json={
            "jsonrpc": "2.0", "id": 7, "method": "server/discover",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                 "io.modelcontextprotocol/clientCapabilities": {}}}})
        assert_refused_at_cap(r, 7)
        refusals += 1

        # alice ends her session (DELETE): its child stops and carol's opening now succeeds
        sid = opened.pop("alice")
        r = await clients["alice"].delete(url, headers={"Mcp-Session-Id": sid})
        assert r.status_code in (200, 202, 204), r.text
        r, waited = await initialize_once_freed(clients["carol"], url)
        refusals += waited
        opened["carol"] = r.headers["mcp-session-id"]

        await until(lambda: child["alice"] not in children_running(gateway_pid, BANK_MARKER))
        (child["carol"],) = set(children_running(gateway_pid, BANK_MARKER)) - {child["bob"]}
        r = await initialize(clients["dave"], url)
        assert_refused_at_cap(r)
        refusals += 1

        # bob's child crashes: its slot comes back as it exits, and dave's opening succeeds
        os.kill(child["bob"], signal.SIGKILL)
        await until(lambda: children_running(gateway_pid, BANK_MARKER) == [child["carol"]])
        r, waited = await initialize_once_freed(clients["dave"], url)
        refusals += waited
        opened["dave"] = r.headers["mcp-session-id"]

        # bob's next call would restart his child: that needs a slot as well, and is refused (recorded once)
        r = await clients["bob"].post(url, headers={**ACCEPT, "Mcp-Session-Id": opened["bob"],
                                                    "MCP-Protocol-Version": "2025-06-18"},
                                      json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        assert_refused_at_cap(r, 3)
        refusals += 1
        assert len(children_running(gateway_pid, BANK_MARKER)) == 2
    finally:
        for client in clients.values():
            await client.aclose()
        most = watch.stop()
        await asyncio.to_thread(capped.stop)
    assert most == 2, f"the gateway ran {most} children of the bank server at once (max_processes: 2)"
    assert children_running(gateway_pid, BANK_MARKER) == []

    records = capped.records()
    refused = [r for r in records if r["event"] == "request.refused" and r.get("status") == 503]
    assert len(refused) == refusals, refused
    assert all("runs its maximum of 2 processes" in r["error"] for r in refused), refused
    assert {r["principal"]["subject"] for r in refused} == {"carol", "erin", "dave", "bob"}, refused
    opened_subjects = [r["principal"]["subject"] for r in records if r["event"] == "session.opened"]
    assert sorted(opened_subjects) == ["alice", "bob", "carol", "dave"], opened_subjects


async def test_openings_racing_at_the_cap_start_no_more_than_it(capped: gw.RunningGateway, idp: Provider) -> None:
    gateway_pid = capped.proc.proc.pid
    watch = TreeWatch(gateway_pid, BANK_MARKER)
    names = [f"user{i}" for i in range(6)]
    clients = [capped.http(idp.token(name, ["staff"])) for name in names]
    try:
        answers = await asyncio.gather(*(initialize(c, capped.url("bank")) for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 503, 503, 503, 503], [r.text for r in answers]
    for r in answers:
        if r.status_code == 503:
            assert_refused_at_cap(r)
    await asyncio.sleep(0.3)
    most = watch.stop()
    assert most <= 2, f"the gateway ran {most} children of the bank server at once (max_processes: 2)"
    assert len(children_running(gateway_pid, BANK_MARKER)) == 2


# ── one identity's share: servers.<name>.max_processes_per_principal ────────────────────────
# One identity could hold every slot (its `max_sessions_per_principal`, 64, is more than `max_processes`,
# 32), leaving the server to no one else until its sessions ended. Now past its own share (a quarter of
# `max_processes` unless told) it is refused at once with 429 and `Retry-After` (its own limit, lifted by
# ending one of its sessions), recorded as `request.refused`; other identities still open theirs.
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


def assert_refused_at_share(r: httpx.Response, share: int, rpc_id: Any = 1) -> None:
    assert r.status_code == 429, r.text
    assert r.headers.get("retry-after") == "5", r.headers
    body = r.json()
    assert body["id"] == rpc_id and body["error"]["code"] == RATE_LIMITED, body
    message = body["error"]["message"]
    assert f"this identity already runs {share} processes of server 'bank'" in message, body
    assert "(servers.bank.max_processes_per_principal)" in message and "end one of its sessions" in message, body
    data = body["error"]["data"]
    assert data["reason"] == "max_processes_per_principal" and data["maxProcessesPerPrincipal"] == share, body
    assert "mcp-session-id" not in r.headers


async def stateless(http: httpx.AsyncClient, url: str, rpc_id: int, method: str) -> httpx.Response:
    """A 2026-07-28 request: its calls go on the identity's one shared upstream session (one child)."""
    return await http.post(url, headers={**ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": method},
                           json={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {"_meta": MODERN_META}})


@pytest.fixture
def shared_out(tmp_path: Path, idp: Provider) -> Iterator[gw.RunningGateway]:
    running = gw.start(tmp_path, idp.issuer, {"bank": {"command": gw.BANK_ARGV, "max_processes": 4,
                                                       "max_processes_per_principal": 2}}, POLICIES)
    yield running
    running.stop()


async def test_an_identity_past_its_share_is_refused_429_and_others_still_open(shared_out: gw.RunningGateway,
                                                                               idp: Provider) -> None:
    gateway_pid = shared_out.proc.proc.pid
    watch = TreeWatch(gateway_pid, BANK_MARKER)
    url = shared_out.url("bank")
    clients = {name: shared_out.http(idp.token(name, ["staff"])) for name in ("alice", "bob", "carol")}
    try:
        # alice opens her share of two, and a third is refused at once, with nothing started for it
        opened = []
        for _ in range(2):
            r = await initialize(clients["alice"], url)
            assert r.status_code == 200, r.text
            opened.append(r.headers["mcp-session-id"])
        started = time.monotonic()
        r = await initialize(clients["alice"], url)
        assert time.monotonic() - started < 5, "the refusal must not wait for a slot"
        assert_refused_at_share(r, 2)
        assert len(children_running(gateway_pid, BANK_MARKER)) == 2

        # bob's stateless calls share one child however many he makes, and leave room under his share
        for rpc_id, method in ((7, "server/discover"), (8, "tools/list"), (9, "tools/list")):
            r = await stateless(clients["bob"], url, rpc_id, method)
            assert r.status_code == 200 and "result" in r.json(), r.text
        assert len(children_running(gateway_pid, BANK_MARKER)) == 3
        r = await initialize(clients["bob"], url)
        assert r.status_code == 200, r.text
        # his shared session's child is one of his two
        assert_refused_at_share(await initialize(clients["bob"], url), 2)
        r = await stateless(clients["bob"], url, 10, "tools/list")
        assert r.status_code == 200 and "result" in r.json(), r.text

        # the server is full (4): carol, under her share, is refused by the server's cap, a 503
        r = await initialize(clients["carol"], url)
        assert r.status_code == 503 and r.json()["error"]["data"]["reason"] == "max_processes", r.text

        # alice ends one of her sessions: its slot comes back with its child's exit, and she opens again
        r = await clients["alice"].delete(url, headers={"Mcp-Session-Id": opened.pop(0)})
        assert r.status_code in (200, 202, 204), r.text
        r = await initialize(clients["alice"], url)
        assert r.status_code == 200, r.text
        assert_refused_at_share(await initialize(clients["alice"], url), 2)
        assert len(children_running(gateway_pid, BANK_MARKER)) == 4
    finally:
        for client in clients.values():
            await client.aclose()
        most = watch.stop()
        await asyncio.to_thread(shared_out.stop)
    assert most <= 4, f"the gateway ran {most} children of the bank server at once (max_processes: 4)"
    assert children_running(gateway_pid, BANK_MARKER) == []

    records = shared_out.records()
    refused = [r for r in records if r["event"] == "request.refused" and r.get("status") == 429]
    assert [r["principal"]["subject"] for r in refused] == ["alice", "bob", "alice"], refused
    assert all("(servers.bank.max_processes_per_principal)" in r["error"] and r["code"] == RATE_LIMITED
               and r["reason"] == "max_processes_per_principal" for r in refused), refused
    full = [r for r in records if r["event"] == "request.refused" and r.get("status") == 503]
    assert [r["principal"]["subject"] for r in full] == ["carol"], full
    assert full[0]["reason"] == "max_processes", full
    opened_subjects = [r["principal"]["subject"] for r in records if r["event"] == "session.opened"]
    assert sorted(opened_subjects) == ["alice", "alice", "alice", "bob"], opened_subjects


@pytest.fixture
def default_share(tmp_path: Path, idp: Provider) -> Iterator[gw.RunningGateway]:
    # no `max_processes_per_principal`: an identity's share is a quarter of `max_processes`, here 1
    running = gw.start(tmp_path, idp.issuer, {"bank": {"command": gw.BANK_ARGV, "max_processes": 4}}, POLICIES)
    yield running
    running.stop()


async def test_by_default_one_identity_cannot_fill_the_server(default_share: gw.RunningGateway,
                                                             idp: Provider) -> None:
    url = default_share.url("bank")
    async with default_share.http(idp.token("alice", ["staff"])) as alice, \
            default_share.http(idp.token("bob", ["staff"])) as bob:
        r = await initialize(alice, url)
        assert r.status_code == 200, r.text
        assert_refused_at_share(await initialize(alice, url), 1)
        assert_refused_at_share(await stateless(alice, url, 7, "server/discover"), 1, 7)
        r = await initialize(bob, url)
        assert r.status_code == 200, r.text
    records = default_share.records()
    refused = [r for r in records if r["event"] == "request.refused"]
    assert [(r["principal"]["subject"], r["status"]) for r in refused] == [("alice", 429), ("alice", 429)], refused


# ── in process: every way a child ends gives its slot back ───────────────────
@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny_stdio_server.py"
    path.write_text(TINY_SERVER)
    return str(path)


def upstream_for(command: list[str], limit: int | None, env: dict[str, str] | None = None,
                 timeout: float = 30, per_principal: int | None = None) -> Upstream:
    """An `Upstream` for a stdio `command`; `limit` its `max_processes`, `per_principal` its
    `max_processes_per_principal` (None: the default)."""
    capped = {} if limit is None else {"max_processes": limit}
    if per_principal is not None:
        capped["max_processes_per_principal"] = per_principal
    settings = ServerSettings(command=command, env=env or {}, timeout=timeout, **capped)
    return Upstream("tiny", settings, os.getcwd(), PoolLimits())


def pid_of(session: Any) -> int:
    assert isinstance(session, StdioSession) and session._proc is not None
    return session._proc.pid


async def test_racing_openings_in_process_count_exactly(tiny: str) -> None:
    upstream = upstream_for([sys.executable, tiny], 2)
    watch = TreeWatch(os.getpid(), tiny)
    results = await asyncio.gather(*(upstream.open_session(ClientHello()) for _ in range(8)), return_exceptions=True)
    sessions = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, registry.ProcessCapReached)]
    try:
        assert len(sessions) == 2 and len(refused) == 6, results
        assert refused[0].http_status == 503 and refused[0].headers == ((b"retry-after", b"5"),)
        assert upstream.processes is not None and upstream.processes.running == 2
        assert len(children_running(os.getpid(), tiny)) == 2
        await sessions[0].close()
        assert upstream.processes.running == 1  # at once, so the next opening finds the slot
        sessions[0] = await upstream.open_session(ClientHello())
        assert upstream.processes.running == 2
    finally:
        for s in sessions:
            await s.close()
    assert watch.stop() == 2
    assert upstream.processes.running == 0 and children_running(os.getpid(), tiny) == []


async def test_a_crashed_child_gives_its_slot_back(tiny: str) -> None:
    upstream = upstream_for([sys.executable, tiny], 1)
    assert upstream.processes is not None
    session = await upstream.open_session(ClientHello())
    with pytest.raises(registry.ProcessCapReached):
        await upstream.open_session(ClientHello())
    os.kill(pid_of(session), signal.SIGKILL)
    await until(lambda: upstream.processes is not None and upstream.processes.running == 0)
    assert not session.alive
    again = await upstream.open_session(ClientHello())
    await session.close()  # closing the crashed one later gives nothing back twice
    assert upstream.processes.running == 1
    await again.close()
    assert upstream.processes.running == 0


async def test_a_child_that_closes_its_stdout_is_stopped_and_its_slot_freed(tiny: str) -> None:
    upstream = upstream_for([sys.executable, tiny], None, env={"CLOSE_STDOUT": "1"})
    session = await upstream.open_session(ClientHello())
    pid = pid_of(session)
    try:
        with pytest.raises(UpstreamError):
            async for _ in session.call({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}):
                pass
        # its stdout ended, so it can never answer again: stopped after 2s, not left holding memory and a
        # slot until its session closes (which for an idle session is `session_idle_timeout` away)
        await until(lambda: pid not in children_running(os.getpid(), tiny), timeout=10)
        assert upstream.processes is not None and upstream.processes.running == 0
    finally:
        await session.close()
    assert upstream.processes.running == 0


async def test_idle_expiry_and_shutdown_give_slots_back(tiny: str) -> None:
    upstream = upstream_for([sys.executable, tiny], 2)
    assert upstream.processes is not None
    registry = SessionRegistry(idle_timeout=60)
    people = [Principal(issuer="https://idp", subject=name) for name in ("alice", "bob")]
    first = registry.create("tiny", people[0], ClientHello(), upstream)
    await first.upstream_session_ready()
    shared = registry.shared_for("tiny", people[1], upstream, ClientHello())
    await shared.upstream_session_ready()
    assert upstream.processes.running == 2
    await registry.expire_idle(now=time.time() + 3600)  # both idle past the timeout
    assert upstream.processes.running == 0 and children_running(os.getpid(), tiny) == []
    again = registry.create("tiny", people[0], ClientHello(), upstream)
    await again.upstream_session_ready()
    assert upstream.processes.running == 1
    await registry.close()  # the gateway shutting down
    assert upstream.processes.running == 0 and children_running(os.getpid(), tiny) == []


async def test_failed_and_cancelled_openings_give_their_slot_back(tiny: str, tmp_path: Path) -> None:
    missing = upstream_for([str(tmp_path / "no-such-server")], 1)
    with pytest.raises(UpstreamError, match="cannot start"):
        await missing.open_session(ClientHello())
    assert missing.processes is not None and missing.processes.running == 0

    exits = upstream_for([sys.executable, "-c", "pass"], 1)  # exits before answering initialize
    with pytest.raises(UpstreamError):
        await exits.open_session(ClientHello())
    assert exits.processes is not None and exits.processes.running == 0

    silent = upstream_for([sys.executable, "-c", "import time; time.sleep(3600)"], 1, timeout=600)
    opening = asyncio.create_task(silent.open_session(ClientHello()))
    await until(lambda: len(children_running(os.getpid(), "time.sleep(3600)")) == 1)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await until(lambda: silent.processes is not None and silent.processes.running == 0)
    assert children_running(os.getpid(), "time.sleep(3600)") == []

    timed_out = upstream_for([sys.executable, "-c", "import time; time.sleep(3600)"], 1, timeout=0.5)
    with pytest.raises(UpstreamError, match="did not complete initialize"):
        await timed_out.open_session(ClientHello())
    assert timed_out.processes is not None and timed_out.processes.running == 0


async def test_an_identitys_share_counts_its_shared_session_and_comes_back_when_a_child_crashes(tiny: str) -> None:
    upstream = upstream_for([sys.executable, tiny], 3, per_principal=2)
    assert upstream.processes is not None
    sessions = SessionRegistry(idle_timeout=60)
    alice, bob = (Principal(issuer="https://idp", subject=name) for name in ("alice", "bob"))
    own = sessions.create("tiny", alice, ClientHello(), upstream)
    await own.upstream_session_ready()
    shared = sessions.shared_for("tiny", alice, upstream, ClientHello())
    await shared.upstream_session_ready()
    assert upstream.processes.held_by(alice.key) == 2
    with pytest.raises(registry.PrincipalProcessCapReached):
        await sessions.create("tiny", alice, ClientHello(), upstream).upstream_session_ready()
    await sessions.create("tiny", bob, ClientHello(), upstream).upstream_session_ready()
    assert upstream.processes.running == 3 and len(children_running(os.getpid(), tiny)) == 3

    # alice's shared child crashes: her share comes back as it exits, once, and her next call reopens it
    os.kill(pid_of(shared.upstream_session), signal.SIGKILL)
    await until(lambda: upstream.processes is not None and upstream.processes.held_by(alice.key) == 1)
    await shared.upstream_session_ready()
    assert upstream.processes.held_by(alice.key) == 2 and upstream.processes.running == 3
    await sessions.close()
    assert upstream.processes.running == 0 and upstream.processes.held_by(alice.key) == 0
    assert children_running(os.getpid(), tiny) == []
