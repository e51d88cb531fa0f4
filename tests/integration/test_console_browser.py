"""The web console in a real browser: Debian's Chromium driven by Playwright against `ledgergate demo`
(gateway, bank server over stdio, development issuer with its authorization-code + PKCE login),
with the official MCP SDK client making the held calls.

Sign in through the issuer; approve a held call from the inbox (keyboard) and see the waiting client
complete; deny with a preset and free reason and see the client's error carry it; the requester's own
call cannot be decided and says why; replay a session (calls in order, masked values, every record's
inclusion checked) and download a record's proof that `audit verify-proof` accepts; a cross-site form
post is refused; the CSP forbids inline script. Screenshots are kept in the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgergate.demo.data import Bank
from tests.support.client import connect
from tests.support.demo import Demo, start_demo
from tests.support.procs import free_port

pytestmark = pytest.mark.timeout(300)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
RAW = Bank().customers["C-1001"]

if shutil.which(CHROMIUM) is None:  # .ci/run installs Debian's chromium; Playwright's download does not work here
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.async_api import Browser, BrowserContext, Page, async_playwright  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo(tmp_path_factory.mktemp("console"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


async def sign_in(browser: Browser, demo: Demo, who: str, shots: Path | None = None) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = await context.new_page()
    await page.goto(demo.base + "/ui/")
    await page.wait_for_selector(f"button[value={who}]")
    assert "/authorize?" in page.url and "code_challenge_method=S256" in page.url  # at the issuer, with PKCE
    if shots is not None:
        await page.screenshot(path=str(shots / "01-issuer-login.png"))
    await page.click(f"button[value={who}]")
    await page.wait_for_url(re.compile(r".*/ui/(approvals|sessions|admin).*"))
    return context, page


@pytest.fixture(scope="module")
async def bob(browser: Browser, demo: Demo, shots: Path) -> AsyncIterator[Page]:
    context, page = await sign_in(browser, demo, "bob", shots)
    yield page
    await context.close()


async def pending_for(demo: Demo, subject: str, exclude: set[str] = frozenset(), timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {demo.tokens['bob']}"}, timeout=10) as http:
        while time.monotonic() < deadline:
            r = await http.get(demo.base + "/api/v1/approvals", params={"status": "pending"})
            mine = [a for a in r.json()["approvals"] if a["requester"]["subject"] == subject and a["id"] not in exclude]
            if mine:
                return mine[0]
            await asyncio.sleep(0.2)
    raise AssertionError(f"no pending approval requested by {subject}")


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_sign_in_through_the_issuer_is_recorded(bob: Page, demo: Demo) -> None:
    assert bob.url.endswith("/ui/approvals")
    assert await bob.inner_text(".who") and "bob" in await bob.inner_text(".who")
    cookies = {c["name"]: c for c in await bob.context.cookies()}
    session = cookies["lg_console"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and session["path"] == "/ui"
    logins = [r for r in demo.records() if r["event"] == "console.login"]
    assert logins and logins[-1]["principal"]["subject"] == "bob" and logins[-1]["via"] == "console"


async def test_approve_from_the_inbox_releases_the_waiting_client(bob: Page, demo: Demo, shots: Path) -> None:
    await bob.goto(demo.base + "/ui/approvals")  # open before the call: the item must arrive live
    async with connect(demo.url, demo.tokens["alice"], "legacy") as client:
        await client.call_tool("lookup_customer", {"customer_id": "C-1001"})
        call = asyncio.create_task(client.call_tool(
            "transfer_funds", {"from_account": "A-2004", "to_account": "A-2002", "amount": 12000, "memo": "inv 7"}))
        approval = await pending_for(demo, "alice")
        item = bob.locator(f"#{approval['id']}")
        await item.wait_for(timeout=15000)  # polling brought it in, no reload
        assert "12000" in await item.locator("pre.args").inner_text()
        assert "large-transfers-need-approval" in await item.locator(".rule").inner_text()
        assert re.search(r"expires in \d+m \d+s", await item.locator(".countdown").inner_text())
        age = item.locator(".age")  # "Waiting 3s", not "Waiting 3s ago"; when it began in the hover title
        assert re.fullmatch(r"(\d+h )?(\d+m )?\d+s", (await age.inner_text()).strip())
        assert (await age.get_attribute("title") or "").startswith("since ")
        await bob.screenshot(path=str(shots / "02-inbox.png"), full_page=True)
        await item.click()
        await bob.keyboard.press("a")  # keyboard: approve the selected item
        assert await bob.evaluate("document.activeElement.classList.contains('reason')")
        await bob.keyboard.type("checked with alice by phone")
        await bob.keyboard.press("Enter")
        await bob.wait_for_selector(".flash.ok")
        assert "approved" in await bob.inner_text(".flash.ok")
        await bob.screenshot(path=str(shots / "03-approved.png"))
        result = await asyncio.wait_for(call, 20)
    assert not result.is_error and "12000" in text_of(result).replace(",", "")
    decided = [r for r in demo.records() if r["event"] == "approval.decided" and r.get("approval") == approval["id"]]
    assert decided[0]["approver"]["subject"] == "bob" and decided[0]["reason"] == "checked with alice by phone"


async def test_deny_with_a_reason_reaches_the_client(bob: Page, demo: Demo, shots: Path) -> None:
    await bob.goto(demo.base + "/ui/approvals")
    async with connect(demo.url, demo.tokens["alice"], "legacy") as client:
        call = asyncio.create_task(client.call_tool(
            "transfer_funds", {"from_account": "A-2005", "to_account": "A-2002", "amount": 15000}))
        approval = await pending_for(demo, "alice")
        item = bob.locator(f"#{approval['id']}")
        await item.wait_for(timeout=15000)
        await item.locator("select.preset").select_option("Amount or target looks wrong")
        await item.locator("input.reason").fill("call me first")
        await item.locator("button.deny").click()
        await bob.wait_for_selector(".flash.ok")
        with pytest.raises(Exception) as refused:
            result = await asyncio.wait_for(call, 20)
            assert result.is_error
    assert "Amount or target looks wrong: call me first" in str(refused.value)


async def test_the_requester_cannot_decide_their_own_call(bob: Page, demo: Demo, shots: Path) -> None:
    await bob.goto(demo.base + "/ui/approvals")
    async with connect(demo.url, demo.tokens["bob"], "legacy") as client:
        call = asyncio.create_task(client.call_tool(
            "transfer_funds", {"from_account": "A-2006", "to_account": "A-2002", "amount": 13000}))
        approval = await pending_for(demo, "bob")
        item = bob.locator(f"#{approval['id']}")
        await item.wait_for(timeout=15000)
        assert await item.locator("form.decide").count() == 0
        assert "You requested this call" in await item.locator(".blocked").inner_text()
        await bob.screenshot(path=str(shots / "04-own-call.png"), full_page=True)
        call.cancel()
    run = demo.cli("approvals", "deny", approval["id"], "--reason", "test cleanup", "--by", "erin",
                   "--config", str(demo.config))
    assert run.returncode == 0, run.stderr


async def _alice_transfer_session(demo: Demo) -> str:
    run = demo.cli("sessions", "list", "--config", str(demo.config), "--json", "--principal", "alice",
                   "--tool", "lookup_customer", "--decision", "approve")
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found, "the approved transfer's session"
    return str(found[0]["session"])


async def test_replay_shows_the_calls_in_order_masked_and_checked(bob: Page, demo: Demo, shots: Path) -> None:
    sid = await _alice_transfer_session(demo)
    await asyncio.sleep(6)  # the demo signs a checkpoint every 5 s
    await bob.goto(demo.base + "/ui/sessions?principal=alice&tool=transfer_funds")
    await bob.screenshot(path=str(shots / "05-sessions.png"), full_page=True)
    await bob.click(f"a[href='/ui/sessions/{sid}']")
    await bob.wait_for_selector("#timeline")
    events = await bob.locator(".step .event").all_inner_texts()
    targets = await bob.locator(".step").evaluate_all(
        "els => els.map(e => (e.querySelector('.target') || {}).textContent || '')")
    assert events[0] == "session.opened"
    calls = [t for e, t in zip(events, targets, strict=True) if e == "rpc.request" and t != "tools/list"]
    assert calls[:2] == ["lookup_customer", "transfer_funds"]
    approval_events = [e for e in events if e.startswith("approval.")]
    assert approval_events[:3] == ["approval.requested", "approval.decided", "approval.granted"]
    html = await bob.content()
    assert RAW.ssn not in html and RAW.card_number not in html and RAW.email not in html
    assert "[US_SSN]" in html and "by <b>bob</b>" in html and "checked with alice by phone" in html
    steps, included = await bob.locator(".step").count(), await bob.locator(".tag.included").count()
    assert steps == included, f"{steps - included} records not shown as in a signed checkpoint"
    assert " style=" not in html and re.search(r"<script(?![^>]*\bsrc=)", html) is None
    await bob.screenshot(path=str(shots / "06-replay.png"), full_page=True)
    looks = [r for r in demo.records() if r["event"] == "session.replayed" and r.get("replayed_session") == sid]
    assert looks and looks[-1]["viewer"]["subject"] == "bob" and looks[-1]["via"] == "console"


async def test_download_a_record_proof_and_verify_it_offline(bob: Page, demo: Demo, tmp_path: Path) -> None:
    sid = await _alice_transfer_session(demo)
    await bob.goto(demo.base + f"/ui/sessions/{sid}")
    link = bob.locator(".step[data-event='rpc.request'] a.proof-link").first
    async with bob.expect_download() as info:
        await link.click()
    download = await info.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert saved.name.endswith(".tlog-proof") and saved.read_text().startswith("c2sp.org/tlog-proof@v1\n")
    run = demo.cli("audit", "verify-proof", str(saved), "--public-key", str(demo.dir / "ledger.key.pub"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok record" in run.stdout and "(rpc.request" in run.stdout
    tampered = tmp_path / "tampered.tlog-proof"
    lines = saved.read_text().split("\n")
    lines[3] = "A" * 43 + "="
    tampered.write_text("\n".join(lines))
    run = demo.cli("audit", "verify-proof", str(tampered), "--public-key", str(demo.dir / "ledger.key.pub"))
    assert run.returncode == 1 and "invalid" in run.stdout
    assert any(r["event"] == "record.proof_exported" and r["viewer"]["subject"] == "bob" for r in demo.records())


async def test_ledger_verify_now_and_admin(bob: Page, demo: Demo, shots: Path) -> None:
    witness = demo.dir / "witness.log"
    for _ in range(150):  # the demo signs and pushes a checkpoint every 5 s; run alone, none may be out yet
        if witness.exists() and witness.stat().st_size > 0:
            break
        await asyncio.sleep(0.1)
    await bob.goto(demo.base + "/ui/ledger")
    await bob.click("#verify-now")
    await bob.wait_for_selector("#verify-result")
    assert "Verified" in await bob.inner_text("#verify-result h2")
    assert "agrees" in await bob.inner_text("#witnesses")
    await bob.screenshot(path=str(shots / "07-ledger.png"), full_page=True)
    await bob.goto(demo.base + "/ui/admin")
    assert (await bob.inner_text("#policy-version")).startswith("sha256:")
    assert "large-transfers-need-approval" in await bob.inner_text("pre.policy")
    await bob.screenshot(path=str(shots / "08-admin.png"), full_page=True)


class _Attacker(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_cross_site_form_post_is_refused(bob: Page, demo: Demo, shots: Path) -> None:
    async with connect(demo.url, demo.tokens["alice"], "legacy") as client:
        call = asyncio.create_task(client.call_tool(
            "transfer_funds", {"from_account": "A-2003", "to_account": "A-2002", "amount": 14000}))
        approval = await pending_for(demo, "alice")
        action = f"{demo.base}/ui/approvals/{approval['id']}/decide"
        _Attacker.page = (f'<form method="post" action="{action}"><input name="verdict" value="approve">'
                          '<input name="reason" value="looks fine"><button id="go">win a prize</button></form>').encode()
        port = free_port()
        server = ThreadingHTTPServer(("127.0.0.1", port), _Attacker)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            attack = await bob.context.new_page()
            await attack.goto(f"http://127.0.0.1:{port}/")
            await attack.click("#go")
            await attack.wait_for_load_state()
            assert "Refused" in await attack.inner_text("body")
            await attack.screenshot(path=str(shots / "09-csrf-refused.png"))
            await attack.close()
        finally:
            server.shutdown()
            server.server_close()
        # the same post with the victim's cookie but from outside the browser: token and Origin both checked
        cookie = {c["name"]: c["value"] for c in await bob.context.cookies()}["lg_console"]
        token = await bob.locator("meta[name=csrf-token]").get_attribute("content")
        async with httpx.AsyncClient(cookies={"lg_console": cookie}, timeout=10) as http:
            body = {"verdict": "approve", "reason": "x"}
            evil = await http.post(action, data={**body, "csrf": token}, headers={"Origin": "http://evil.example"})
            tokenless = await http.post(action, data=body, headers={"Origin": demo.base})
            no_origin = await http.post(action, data={**body, "csrf": token})
        assert (evil.status_code, tokenless.status_code, no_origin.status_code) == (403, 403, 403)
        assert "another site" in evil.text and "CSRF token" in tokenless.text and "no Origin" in no_origin.text
        still = await pending_for(demo, "alice")
        assert still["id"] == approval["id"] and still["approvals"] == 0
        run = demo.cli("approvals", "deny", approval["id"], "--reason", "test cleanup", "--by", "erin",
                       "--config", str(demo.config))
        assert run.returncode == 0, run.stderr
        with pytest.raises(Exception):
            await asyncio.wait_for(call, 20)


async def test_the_csp_forbids_inline_script(bob: Page, demo: Demo) -> None:
    resp = await bob.goto(demo.base + "/ui/approvals")
    assert resp is not None
    csp = resp.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe-inline" not in csp and directives["frame-ancestors"] == "'none'"
    ran = await bob.evaluate("""() => new Promise(done => {
        window.__inline = false;
        document.addEventListener('securitypolicyviolation', () => done(window.__inline), {once: true});
        const s = document.createElement('script');
        s.textContent = 'window.__inline = true';
        document.body.appendChild(s);
        setTimeout(() => done(window.__inline), 1000);
    })""")
    assert ran is False
    plain = httpx.get(demo.base + "/ui/approvals", follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].startswith("/ui/login")


async def test_a_console_page_asks_for_nothing_that_is_not_there(bob: Page, demo: Demo) -> None:
    """Every request a console page makes is answered, its icon included (a browser asked for
    /favicon.ico, which is not the gateway's, and logged a 404 on every page)."""
    failed: list[str] = []
    bob.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    await bob.goto(demo.base + "/ui/approvals")
    await bob.wait_for_load_state("networkidle")
    icon = await bob.locator("link[rel=icon]").get_attribute("href")
    assert icon is not None and icon.startswith("/ui/static/")
    got = await bob.request.get(demo.base + icon)
    assert got.status == 200 and got.headers["content-type"].startswith("image/svg+xml")
    assert failed == []
