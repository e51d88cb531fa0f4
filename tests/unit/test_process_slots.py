"""`ProcessSlots`: a stdio server's live children, counted in all (`max_processes`) and per identity
(`max_processes_per_principal`).

One identity could hold every slot of a stdio server: `max_sessions_per_principal` (64) is more than
`max_processes` (32), so its sessions alone could fill the server and everyone else was refused it until
they ended. Now each identity's children are counted too: past its own share it is refused (429, its own
limit), the others still open theirs, and a slot given back, however its child ended, is given back once,
to the identity that held it. No process is started here: the counting is the unit.
"""

from __future__ import annotations

import pytest

from ledgergate.errors import RATE_LIMITED, UPSTREAM_UNAVAILABLE, UpstreamError
from ledgergate.gateway.sessions import SessionRegistry
from ledgergate.principal import Principal
from ledgergate.upstream import registry
from ledgergate.upstream.base import ClientHello
from ledgergate.upstream.registry import Upstream
from ledgergate.upstream.settings import PoolLimits, ServerSettings
from ledgergate.upstream.stdio import ProcessSlot, ProcessSlots

ALICE, BOB = "https://idp#alice", "https://idp#bob"


def slot(taken: object) -> ProcessSlot:
    assert isinstance(taken, ProcessSlot), taken
    return taken


def test_an_identity_is_refused_past_its_share_while_others_still_open() -> None:
    slots = ProcessSlots(4, 2)
    alices = [slot(slots.take(ALICE)) for _ in range(2)]
    assert slots.take(ALICE) == "max_processes_per_principal"
    assert slots.running == 2 and slots.held_by(ALICE) == 2  # a refusal takes nothing
    bobs = [slot(slots.take(BOB)) for _ in range(2)]
    assert slots.running == 4 and slots.held_by(BOB) == 2
    # the server is full now: an identity under its share is refused by the server's cap
    assert slots.take("https://idp#carol") == "max_processes"
    alices[0].release()
    assert slots.held_by(ALICE) == 1 and slots.running == 3
    alices[0] = slot(slots.take(ALICE))
    for one in alices + bobs:
        one.release()
    assert slots.running == 0 and slots.held_by(ALICE) == slots.held_by(BOB) == 0


def test_the_identitys_own_cap_is_named_when_both_are_reached() -> None:
    # ending one of its own sessions is what lets it open again, so its refusal says so (429, not 503)
    slots = ProcessSlots(2, 2)
    slot(slots.take(ALICE))
    slot(slots.take(ALICE))
    assert slots.take(ALICE) == "max_processes_per_principal"
    assert slots.take(BOB) == "max_processes"


def test_a_slot_is_given_back_once_however_often_it_is_released() -> None:
    slots = ProcessSlots(3, 2)
    first, second = slot(slots.take(ALICE)), slot(slots.take(ALICE))
    for _ in range(3):  # its exit seen, its session closed, its start failed: every path may call it
        first.release()
    assert slots.running == 1 and slots.held_by(ALICE) == 1
    second.release()
    second.release()
    assert slots.running == 0 and slots.held_by(ALICE) == 0
    # an identity running nothing is not kept: the map never grows with every identity ever seen
    assert slots._held == {}


def test_an_opening_with_no_owner_counts_only_against_the_server() -> None:
    slots = ProcessSlots(3, 1)
    anonymous = [slot(slots.take()) for _ in range(3)]
    assert slots.take() == "max_processes" and slots._held == {}
    anonymous[0].release()
    alice = slot(slots.take(ALICE))
    assert slots.take(ALICE) == "max_processes_per_principal"
    alice.release()
    assert slots.running == 2 and slots._held == {}


def test_without_a_share_an_identity_may_use_every_slot() -> None:
    slots = ProcessSlots(2)
    assert slots.per_principal == 2
    slot(slots.take(ALICE))
    slot(slots.take(ALICE))
    assert slots.take(ALICE) == "max_processes_per_principal"


def upstream(**caps: int) -> Upstream:
    # a command that is never run: every opening below is refused before a child would start
    return Upstream("bank", ServerSettings(command=["/nonexistent/bank-server"], **caps), "/", PoolLimits())


@pytest.mark.parametrize(("caps", "share"), [({}, 8), ({"max_processes": 8}, 2), ({"max_processes": 3}, 1),
                                              ({"max_processes": 1}, 1),
                                              ({"max_processes": 6, "max_processes_per_principal": 6}, 6)])
def test_a_server_gives_each_identity_a_quarter_of_its_slots_unless_told(caps: dict[str, int], share: int) -> None:
    server = upstream(**caps)
    assert server.processes is not None and server.processes.per_principal == share


async def test_an_opening_past_the_identitys_share_is_a_429_with_retry_after() -> None:
    server = upstream(max_processes=4, max_processes_per_principal=1)
    assert server.processes is not None
    held = slot(server.processes.take(ALICE))
    with pytest.raises(registry.PrincipalProcessCapReached) as refused:
        await server.open_session(ClientHello(), owner=ALICE)
    error = refused.value
    assert error.http_status == 429 and error.rpc_code == RATE_LIMITED
    assert error.headers == ((b"retry-after", b"5"),)
    assert error.data == {"reason": "max_processes_per_principal", "server": "bank",
                          "maxProcessesPerPrincipal": 1, "retryAfter": 5}
    assert "servers.bank.max_processes_per_principal" in error.message and "end one" in error.message
    assert server.processes.running == 1 and server.processes.held_by(ALICE) == 1
    # the server-wide refusal is unchanged: a 503, the server's cap named
    for _ in range(3):
        slot(server.processes.take(None))
    with pytest.raises(registry.ProcessCapReached) as full:
        await server.open_session(ClientHello(), owner=BOB)
    assert full.value.http_status == 503 and full.value.rpc_code == UPSTREAM_UNAVAILABLE
    held.release()


async def test_a_gateway_session_opens_its_child_as_its_identitys() -> None:
    # the owner is threaded from the session (its principal's key) to the slot: a handshake session and
    # the identity's shared 2026-07-28 session both count against it
    server = upstream(max_processes=4, max_processes_per_principal=1)
    assert server.processes is not None
    alice = Principal(issuer="https://idp", subject="alice")
    held = slot(server.processes.take(alice.key))
    sessions = SessionRegistry()
    with pytest.raises(registry.PrincipalProcessCapReached):
        await sessions.create("bank", alice, ClientHello(), server).upstream_session_ready()
    with pytest.raises(registry.PrincipalProcessCapReached):
        await sessions.shared_for("bank", alice, server, ClientHello()).upstream_session_ready()
    held.release()
    # bob's opening passes both caps and goes on to start the (missing) command: not refused by a cap
    bob = Principal(issuer="https://idp", subject="bob")
    with pytest.raises(UpstreamError, match="cannot start"):
        await sessions.create("bank", bob, ClientHello(), server).upstream_session_ready()
    assert server.processes.running == 0
    await sessions.close()
