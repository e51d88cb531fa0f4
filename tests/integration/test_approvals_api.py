"""The approvals REST API over real HTTP (uvicorn on 127.0.0.1) with real tokens from the test OpenID
provider: who sees what, who may decide, and every refusal's status and words."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from ledgergate.api.approvals import approval_routes
from ledgergate.approvals import model as m
from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.errors import AuthError
from ledgergate.principal import Principal
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings, OidcIssuerSettings
from ledgergate.policy.decision import ApproverSpec
from tests.support.oidc import Provider
from tests.support.procs import free_port

pytestmark = pytest.mark.timeout(90)

MASKED = {"amount": 50000, "iban": "DE89**************3000"}


class Api:
    def __init__(self, base: str, provider: Provider, service: ApprovalService, issuer: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=10)
        self.provider = provider
        self.service = service
        self.issuer = issuer

    def token(self, sub: str, groups: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider.token(sub, groups)}"}

    async def ask(self, sub: str = "alice", groups: tuple[str, ...] = ("staff", "approvers"), count: int = 1,
                  args: Any = None) -> m.Approval:
        who = Principal(self.issuer, sub, groups=frozenset(groups))
        return await self.service.request(principal=who, server="bank", method="tools/call", target="transfer",
                                          arguments=args or {"amount": 50000, "iban": "DE89370400440532013000"},
                                          masked_args=MASKED, rule="big-transfers", policy_version="v1",
                                          approvers=ApproverSpec(("approvers",), (), count))


@pytest.fixture
async def api(provider: Provider, tmp_path: Path) -> AsyncIterator[Api]:
    url = f"sqlite:///{tmp_path / 'data' / 'ledgergate.db'}"
    ledger = await Ledger.open(AuditSettings(replica="a", checkpoint_interval=0), url, tmp_path)
    service = ApprovalService(open_store(url), ledger.append, ApprovalsSettings(),
                              args_key=ledger.subkey("approval-arguments"))
    await service.start(background=False)
    identity = IdentityService(IdentitySettings(api_keys=False, oidc=[OidcIssuerSettings(issuer=provider.issuer)]),
                               None, tmp_path)
    await identity.start()

    async def authenticate(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("a bearer token is required", "missing_token")
        return await identity.authenticate(token.strip())

    app = Starlette(routes=approval_routes(service, authenticate))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    client = Api(f"http://127.0.0.1:{port}", provider, service, provider.issuer)
    try:
        yield client
    finally:
        await client.http.aclose()
        server.should_exit = True
        await task
        await identity.close()
        await service.close()
        await ledger.close()


async def test_an_approver_approves_over_rest(api: Api) -> None:
    a = await api.ask()
    listed = await api.http.get("/api/v1/approvals", params={"status": "pending"},
                                headers=api.token("bob", ["approvers"]))
    assert listed.status_code == 200
    [item] = listed.json()["approvals"]
    assert item["id"] == a.id and item["arguments"] == MASKED and item["tool"] == "transfer"
    assert item["requester"]["subject"] == "alice" and item["approvers"]["count"] == 1
    r = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=api.token("bob", ["approvers"]),
                            json={"reason": "matches ticket FIN-1182", "preview_digest": item["preview_digest"]})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert r.json()["decisions"][0]["approver"] == "bob"
    assert (await api.service.get(a.id)).status == "approved"


async def test_the_requester_is_refused_even_in_the_approver_group(api: Api) -> None:
    a = await api.ask()
    for verdict in ("approve", "deny"):
        r = await api.http.post(f"/api/v1/approvals/{a.id}/{verdict}", headers=api.token("alice", ["approvers"]),
                                json={"reason": "it is mine"})
        assert r.status_code == 403 and "you requested this call" in r.json()["error"]
    assert (await api.service.get(a.id)).decisions == ()


async def test_a_non_approver_is_refused_and_cannot_see_it(api: Api) -> None:
    a = await api.ask()
    r = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=api.token("mallory", ["staff"]),
                            json={"reason": "sure"})
    assert r.status_code == 403 and "not an approver" in r.json()["error"]
    assert (await api.http.get(f"/api/v1/approvals/{a.id}", headers=api.token("mallory", ["staff"]))).status_code == 403
    listed = await api.http.get("/api/v1/approvals", headers=api.token("mallory", ["staff"]))
    assert listed.status_code == 200 and listed.json() == {"approvals": [], "next": None}
    # The requester and an auditor see it; the auditor cannot decide it.
    mine = await api.http.get(f"/api/v1/approvals/{a.id}", headers=api.token("alice", ["staff"]))
    assert mine.status_code == 200 and mine.json()["id"] == a.id
    audit = await api.http.get("/api/v1/approvals", headers=api.token("audrey", ["auditors"]))
    assert [x["id"] for x in audit.json()["approvals"]] == [a.id]
    r = await api.http.post(f"/api/v1/approvals/{a.id}/deny", headers=api.token("audrey", ["auditors"]),
                            json={"reason": "no"})
    assert r.status_code == 403


async def test_unknown_is_404_and_not_pending_is_409(api: Api) -> None:
    bob = api.token("bob", ["approvers"])
    for unknown in (m.new_id(), "nonsense", "apr_" + "0" * 32):
        r = await api.http.post(f"/api/v1/approvals/{unknown}/approve", headers=bob, json={"reason": "x"})
        assert r.status_code == 404 and "no approval" in r.json()["error"]
        assert (await api.http.get(f"/api/v1/approvals/{unknown}", headers=bob)).status_code == 404
    a = await api.ask()
    assert (await api.http.post(f"/api/v1/approvals/{a.id}/deny", headers=bob,
                                json={"reason": "wrong account"})).status_code == 200
    r = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=api.token("carol", ["approvers"]),
                            json={"reason": "fine"})
    assert r.status_code == 409 and r.json()["status"] == "denied" and "denied, not pending" in r.json()["error"]


async def test_count_two_over_rest_and_a_second_vote_of_the_same_person_is_409(api: Api) -> None:
    a = await api.ask(count=2)
    bob = api.token("bob", ["approvers"])
    assert (await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=bob,
                                json={"reason": "one"})).json()["status"] == "pending"
    again = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=bob, json={"reason": "two"})
    assert again.status_code == 409 and "already decided" in again.json()["error"]
    done = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=api.token("carol", ["approvers"]),
                               json={"reason": "two"})
    assert done.json()["status"] == "approved" and done.json()["approvals"] == 2


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]", b'{"reason": ""}', b'{"reason": 5}', b"{}",
                                  b'{"reason": "ok", "preview_digest": 7}',
                                  orjson.dumps({"reason": "x" * 20000})])
async def test_bad_bodies_are_400_with_our_words(api: Api, body: bytes) -> None:
    a = await api.ask()
    r = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers={**api.token("bob", ["approvers"]),
                                                                          "Content-Type": "application/json"},
                            content=body)
    assert r.status_code == 400 and len(r.json()["error"]) <= 500
    assert "Traceback" not in r.text
    assert (await api.service.get(a.id)).status == "pending"


async def test_a_stale_preview_is_refused(api: Api) -> None:
    a = await api.ask()
    r = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers=api.token("bob", ["approvers"]),
                            json={"reason": "ok", "preview_digest": m.preview_digest({"amount": 1})})
    assert r.status_code == 409 and "other arguments" in r.json()["error"]


async def test_no_token_or_a_bad_token_is_401(api: Api) -> None:
    a = await api.ask()
    assert (await api.http.get("/api/v1/approvals")).status_code == 401
    r = await api.http.post(f"/api/v1/approvals/{a.id}/approve", headers={"Authorization": "Bearer abc.def.ghi"},
                            json={"reason": "x"})
    assert r.status_code == 401 and (await api.service.get(a.id)).decisions == ()


async def test_bad_query_is_400(api: Api) -> None:
    bob = api.token("bob", ["approvers"])
    assert (await api.http.get("/api/v1/approvals", params={"status": "maybe"}, headers=bob)).status_code == 400
    assert (await api.http.get("/api/v1/approvals", params={"limit": "0"}, headers=bob)).status_code == 400


async def test_an_approvers_pending_call_is_listed_behind_a_thousand_newer_ones_of_others(api: Api) -> None:
    """The listing read the newest 1,000 approvals and then kept what the caller may see: an approval
    of bob's group behind 1,000 newer ones for another group was missing from his inbox. It pages now,
    and `next` walks the rest."""
    mine = await api.ask()  # alice asks; group "approvers" decides
    for n in range(1100):  # 1,100 requesters (one has at most `approvals.max_pending` waiting)
        dave = Principal(api.issuer, f"dave-{n}", groups=frozenset({"staff"}))
        await api.service.request(principal=dave, server="bank", method="tools/call", target="transfer",
                                  arguments={"amount": n}, masked_args={"amount": n}, rule="ops-review",
                                  policy_version="v1", approvers=ApproverSpec(("ops",), (), 1))
    listed = await api.http.get("/api/v1/approvals", params={"status": "pending"},
                                headers=api.token("bob", ["approvers"]))
    assert listed.status_code == 200
    assert [a["id"] for a in listed.json()["approvals"]] == [mine.id] and listed.json()["next"] is None
    # an ops approver pages through all 1,100 of theirs, newest first, each once, and never sees bob's
    seen: list[str] = []
    params = {"status": "pending", "limit": "400"}
    while True:
        r = await api.http.get("/api/v1/approvals", params=params, headers=api.token("olga", ["ops"]))
        assert r.status_code == 200
        body = r.json()
        assert len(body["approvals"]) <= 400
        seen += [a["id"] for a in body["approvals"]]
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
    assert len(seen) == len(set(seen)) == 1100 and mine.id not in seen
    created = [a.created for a in [await api.service.get(i) for i in seen[:5]]]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("cursor", ["", "garbage", "MS4wL2Fw", "%00", "a" * 500])
async def test_a_forged_cursor_is_a_400_in_words(api: Api, cursor: str) -> None:
    r = await api.http.get("/api/v1/approvals", params={"cursor": cursor}, headers=api.token("bob", ["approvers"]))
    assert r.status_code == 400 and "cursor is not one a listing handed out" in r.json()["error"]
