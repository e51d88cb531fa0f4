"""The console's discovery read: anyone may load /ui/login, so how often the IdP is asked must not follow
how often the page is loaded. A small HTTP server on loopback stands in for the IdP's discovery endpoint
(a real socket and real HTTP; only its answers are scripted) and counts what reaches it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from ledgergate.config import ConsoleSettings
from ledgergate.ui import oidc
from ledgergate.ui.oidc import LoginError, OidcClient

DOC = {"issuer": "x", "authorization_endpoint": "http://127.0.0.1:1/authorize", "token_endpoint": "http://127.0.0.1:1/token"}


@dataclass
class Idp:
    """Answers every request after `delay` seconds with `status` (and the discovery document on 200)."""

    status: int = 200
    delay: float = 0.0
    hits: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.hits.append(head.split(b" ")[1].decode())
        await asyncio.sleep(self.delay)
        body = json.dumps(DOC).encode() if self.status == 200 else b"{}"
        writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (self.status, len(body)) + body)
        await writer.drain()
        writer.close()


@asynccontextmanager
async def idp(status: int = 200, delay: float = 0.0) -> AsyncIterator[Idp]:
    served = Idp(status, delay)
    server = await asyncio.start_server(served.handle, "127.0.0.1", 0)
    served.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield served
    finally:
        server.close()
        await server.wait_closed()


def client(issuer: str) -> OidcClient:
    return OidcClient(ConsoleSettings(http_timeout=5), issuer)


async def test_sign_ins_arriving_together_share_one_discovery_read() -> None:
    async with idp(delay=0.2) as served:
        c = client(served.url)
        urls = await asyncio.gather(*(c.authorize_url("http://gw/ui/callback", f"s{i}", "n", "c") for i in range(25)))
        assert served.hits == ["/.well-known/openid-configuration"]
        assert all(u.startswith(DOC["authorization_endpoint"] + "?") for u in urls)
        assert {u.split("state=")[1].split("&")[0] for u in urls} == {f"s{i}" for i in range(25)}


async def test_a_failing_idp_is_asked_once_per_interval_however_often_sign_in_is_loaded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "_FAILURE_TTL", 0.5)
    async with idp(status=503) as served:
        c = client(served.url)
        for _ in range(3):
            results = await asyncio.gather(*(c.metadata() for _ in range(20)), return_exceptions=True)
            assert all(isinstance(r, LoginError) and "discovery document cannot be read" in str(r) for r in results)
        assert len(served.hits) == 1
        await asyncio.sleep(0.6)  # the failure is not kept past its interval: the IdP may be back
        with pytest.raises(LoginError):
            await c.metadata()
        assert len(served.hits) == 2


async def test_an_idp_back_after_a_failure_signs_in_once_the_interval_has_passed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "_FAILURE_TTL", 0.3)
    async with idp(status=500) as served:
        c = client(served.url)
        with pytest.raises(LoginError):
            await c.metadata()
        served.status = 200
        with pytest.raises(LoginError):  # within the interval the failure is repeated, not re-read
            await c.metadata()
        await asyncio.sleep(0.4)
        assert (await c.metadata())["token_endpoint"] == DOC["token_endpoint"]
        assert await c.metadata() is await c.metadata()
        assert len(served.hits) == 2


async def test_a_document_without_the_code_flow_is_refused_and_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "_FAILURE_TTL", 0.0)
    async with idp() as served:
        c = client(served.url)
        kept = dict(DOC)
        DOC.pop("token_endpoint")
        try:
            with pytest.raises(LoginError, match="no authorization code flow"):
                await c.metadata()
        finally:
            DOC.update(kept)
        assert (await c.metadata())["token_endpoint"] == DOC["token_endpoint"]
        assert len(served.hits) == 2
