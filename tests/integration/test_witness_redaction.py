"""An http(s) witness URL may carry credentials (`https://user:token@witness/…`, a signed query). A real
gateway (`ledgergate serve`, real OIDC sign-in to its console) with two such witnesses, one refusing the
connection and one answering every push 401 (whose error text, in httpx's words, quotes the URL):
the credentials reach neither the gateway's log (the failed push), the console's ledger page, its "verify now"
result, nor `ledgergate audit verify`'s output; each still names the witness by its host and path.

Before, all four printed the configured URL as written (session 10 note, "left").
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.test_console_hardening import csrf_of, sign_in
from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.procs import Proc, free_port

pytestmark = [pytest.mark.node, pytest.mark.timeout(180)]

USER_SECRET = "WitnessPassw0rd"
QUERY_SECRET = "SignedQuery77"
POLICIES = [{"name": "staff", "match": {"groups": ["staff"]}, "effect": "allow"}]


class Unauthorized(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory, idp: Provider,
              stateless: Proc) -> Iterator[tuple[gw.RunningGateway, list[str]]]:
    refusing = free_port()  # nothing listens there: every push fails to connect, and is logged
    answering = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=answering.serve_forever, daemon=True).start()
    port = answering.server_address[1]
    urls = [f"https://auditor:{USER_SECRET}@127.0.0.1:{refusing}/add-checkpoint?sig={QUERY_SECRET}",
            f"http://auditor:{USER_SECRET}@127.0.0.1:{port}/add-checkpoint?sig={QUERY_SECRET}"]
    extra = {
        "console": {"issuer": idp.issuer, "roles": {"auditor": ["auditors"]}},
        "audit": {"signing_key": "./data/ledger.key", "checkpoint_interval": "1s",
                  "witnesses": ["file://./data/witness.log", *urls]},
    }
    running = gw.start(tmp_path_factory.mktemp("witness-redaction"), idp.issuer,
                       {"stateless": {"url": f"http://127.0.0.1:{stateless.port}/mcp"}}, POLICIES, extra)
    yield running, [f"127.0.0.1:{refusing}/add-checkpoint", f"127.0.0.1:{port}/add-checkpoint"]
    running.stop()
    answering.shutdown()


def clean(text: str) -> bool:
    return USER_SECRET not in text and QUERY_SECRET not in text and "auditor:" not in text


def test_a_witness_urls_credentials_reach_no_log_page_or_cli_output(
        witnessed: tuple[gw.RunningGateway, list[str]], idp: Provider) -> None:
    running, shown = witnessed
    deadline = time.monotonic() + 20
    while "401" not in running.log() and time.monotonic() < deadline:
        time.sleep(0.2)  # the first checkpoint, a second after the start-up records
    log = running.log()
    failed = [line for line in log.splitlines() if "did not take the checkpoint" in line]
    assert all(any(s in line for line in failed) for s in shown) and "401" in log, log[-2000:]

    auditor = sign_in(running, idp, "audrey", ["auditors"])
    page = auditor.get("/ui/ledger")
    assert page.status_code == 200 and all(s in page.text for s in shown), page.text[:500]
    verified = auditor.post("/ui/ledger/verify", data={"csrf": csrf_of(page.text)},
                            headers={"Origin": running.base})
    assert verified.status_code == 200, verified.text[:500]

    cli = asyncio.run(_audit_verify(running))
    assert all(s in cli for s in shown), cli[-2000:]

    for where, text in (("log", running.log()), ("ledger page", page.text), ("verify result", verified.text),
                        ("audit verify", cli)):
        assert clean(text), f"the witness URL's credentials are in the {where}"


async def _audit_verify(running: gw.RunningGateway) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgergate.cli", "audit", "verify", "--config", str(running.dir / "ledgergate.yaml"),
        cwd=running.dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"})
    out, _ = await proc.communicate()
    return out.decode()
