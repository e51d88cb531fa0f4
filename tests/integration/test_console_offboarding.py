"""Off-boarding reaches the web console: a signed-in approver whom the config then disables
(`identity.disabled_subjects`, picked up by the running gateway's config watcher) is refused on the
console's next request, GET or POST, before any page or decision runs; the refusal is a ledger record
and the session cookie is cleared. Against `ledgergate demo` (gateway, bank server, development issuer),
signing in through the issuer's authorization-code form as a browser would, with httpx. Signing out
ends a session for every copy of its cookie. (The tests that sign bob in run first: the last one disables him.) The inbox
finds an approver's call behind hundreds of newer ones for others."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import yaml

from ledgergate.approvals.service import ApprovalService, open_store
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.policy.decision import ApproverSpec
from ledgergate.principal import Principal
from tests.support.demo import Demo, start_demo

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("offboarding"))
    yield running
    running.stop()


def sign_in(demo: Demo, who: str) -> httpx.Client:
    """A console session for `who`: /ui/login → the issuer's form → /ui/callback, cookies kept."""
    console = httpx.Client(base_url=demo.base, follow_redirects=False, timeout=30)
    to_issuer = console.get("/ui/login").headers["location"]
    parts = urlsplit(to_issuer)
    form = {**dict(parse_qsl(parts.query)), "user": who}
    back = httpx.post(f"{parts.scheme}://{parts.netloc}/authorize", data=form, follow_redirects=False)
    signed_in = console.get(back.headers["location"])
    assert signed_in.status_code == 303 and "lg_console" in console.cookies, signed_in.text[:300]
    return console


def disable(config: Path, subject: str) -> None:
    doc = yaml.safe_load(config.read_text())
    doc.setdefault("identity", {})["disabled_subjects"] = [subject]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))


def in_demo_store(demo: Demo, fill: Callable[[ApprovalService], Awaitable[str]]) -> str:
    """Run `fill` with an approvals service on the demo's own store (as another replica would write it);
    the demo's ledger is the demo's, so nothing is recorded from here."""
    async def nowhere(event: str, fields: object) -> int:
        return 0

    async def run() -> str:
        svc = ApprovalService(open_store(f"sqlite:///{demo.dir / 'ledgergate.db'}"), nowhere, ApprovalsSettings(),
                              args_key=b"another replica's key (not matched)")
        await svc.start(background=False)
        try:
            return await fill(svc)
        finally:
            await svc.close()

    return asyncio.run(run())


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(demo: Demo) -> None:
    """Signing out deleted only the browser's copy of the cookie; a copy taken before went on working until
    it expired. Now the session is ended in the store every replica reads."""
    bob = sign_in(demo, "bob")
    page = bob.get("/ui/approvals")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    copied = bob.cookies.get("lg_console")
    out = bob.post("/ui/logout", data={"csrf": csrf.group(1)}, headers={"Origin": demo.base})
    assert out.status_code == 303 and out.headers["location"] == "/ui/signed-out"

    replay = httpx.get(f"{demo.base}/ui/approvals", headers={"Cookie": f"lg_console={copied}"}, timeout=10)
    assert replay.status_code == 401 and "signed out" in replay.text
    posted = httpx.post(f"{demo.base}/ui/approvals/apr_0000/decide", data={"csrf": csrf.group(1), "verdict": "approve"},
                        headers={"Origin": demo.base, "Cookie": f"lg_console={copied}"}, timeout=10)
    assert posted.status_code == 401

    again = sign_in(demo, "bob")  # a new sign-in is a new session
    assert again.get("/ui/approvals").status_code == 200
    assert [r["event"] for r in demo.records()].count("console.logout") >= 1


def test_the_inbox_shows_an_approvers_call_behind_hundreds_of_newer_ones_for_others(demo: Demo) -> None:
    """The inbox read the newest 500 pending approvals and then kept the reader's: one for bob's
    group behind 600 newer ones for another group never showed. The approvals are written into the
    demo's own store by a second service on the same file (as another replica would)."""
    async def fill(svc: ApprovalService) -> str:
        alice = Principal("http://idp.test", "alice", groups=frozenset({"staff"}))
        mine = await svc.request(principal=alice, server="bank", method="tools/call", target="transfer",
                                 arguments={"amount": 1}, masked_args={"amount": 1}, rule="inbox-test",
                                 policy_version="v1", approvers=ApproverSpec((), ("bob",), 1))
        for n in range(600):  # 600 requesters: one has at most `approvals.max_pending` waiting
            other = Principal("http://idp.test", f"filler-{n}", groups=frozenset({"staff"}))
            await svc.request(principal=other, server="bank", method="tools/call", target="transfer",
                              arguments={"amount": 1000 + n}, masked_args={"amount": 1000 + n},
                              rule="inbox-test", policy_version="v1", approvers=ApproverSpec(("nobody",), (), 1))
        return mine.id

    mine = in_demo_store(demo, fill)
    bob = sign_in(demo, "bob")
    inbox = bob.get("/ui/approvals")
    assert inbox.status_code == 200
    ids = re.findall(r'<article class="item[^"]*" id="[^"]+" data-id="([^"]+)"', inbox.text)
    # bob approves and audits in the demo: he may see all 601, and his own decision comes first
    assert ids[0] == mine and 1 < len(ids) < 601 and len(set(ids)) == len(ids)
    assert 'id="inbox-more"' in inbox.text
    fragment = bob.get("/ui/approvals/inbox")  # the part the page refreshes
    assert fragment.status_code == 200
    assert re.findall(r'data-id="([^"]+)"', fragment.text)[0] == mine and 'id="inbox-more"' in fragment.text


def test_the_inbox_shows_a_bidi_override_in_the_arguments_instead_of_obeying_it(demo: Demo) -> None:
    """A requester chooses the arguments an approver reads: `"\u202e1002-A\u202c"` showed as `A-2001` while
    `1002-A` was what would run. The page now writes such characters out."""
    args = {"to_account": "\u202e1002-A\u202c", "memo": "pay\u200b now"}

    async def ask(svc: ApprovalService) -> str:
        alice = Principal("http://idp.test", "alice\u202e", groups=frozenset({"staff"}))
        made = await svc.request(principal=alice, server="bank", method="tools/call", target="transfer_funds",
                                 arguments=args, masked_args=args, rule="bidi-test", policy_version="v1",
                                 approvers=ApproverSpec((), ("bob",), 1))
        return made.id

    made = in_demo_store(demo, ask)
    page = sign_in(demo, "bob").get(f"/ui/approvals/{made}")
    assert page.status_code == 200 and made in page.text
    for hidden in ("\u202e", "\u202c", "\u200b"):
        assert hidden not in page.text
    assert "\\u202e1002-A\\u202c" in page.text and "[U+202E]" in page.text  # the arguments, and the requester


def test_a_disabled_approver_is_signed_out_of_the_console(demo: Demo) -> None:
    bob = sign_in(demo, "bob")
    inbox = bob.get("/ui/approvals")
    assert inbox.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', inbox.text)
    assert csrf is not None

    disable(demo.config, "bob")
    api = {"Authorization": f"Bearer {demo.tokens['bob']}"}
    deadline = time.monotonic() + 30
    while httpx.get(f"{demo.base}/api/v1/approvals", headers=api).status_code != 401:
        assert time.monotonic() < deadline, "the gateway did not pick up the reloaded config"
        time.sleep(0.3)

    copied = bob.cookies.get("lg_console")
    page = bob.get("/ui/approvals")
    assert page.status_code == 401 and "disabled" in page.text
    cleared = page.headers.get("set-cookie", "")
    assert "lg_console=" in cleared and ("Max-Age=0" in cleared or "expires=Thu, 01 Jan 1970" in cleared)

    # a decision posted with the old cookie and a valid CSRF token never reaches the approvals service
    posted = httpx.post(f"{demo.base}/ui/approvals/apr_0000/decide", data={"csrf": csrf.group(1), "verdict": "approve"},
                        headers={"Origin": demo.base, "Cookie": f"lg_console={copied}"})
    assert posted.status_code == 401 and "disabled" in posted.text

    refused = [r for r in demo.records() if r["event"] == "console.refused"]
    assert refused and refused[-1]["principal"]["subject"] == "bob" and "disabled" in refused[-1]["reason"]

    alice = sign_in(demo, "alice")  # everyone else is judged as before: alice holds no console role
    other = alice.get("/ui/approvals")
    assert other.status_code == 403 and "role (groups:" in other.text and "disabled" not in other.text


