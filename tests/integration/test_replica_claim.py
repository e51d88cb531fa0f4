"""Two gateways with the same replica id (issue 20 item 11): the second refuses to start and names
the first; once the first is gone (stopped, or killed with SIGKILL) the id is free again.
Real gateway processes (`ledgergate serve`) on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings
from ledgergate.errors import LedgerUnavailable
from tests.support import gateway as gw
from tests.support.integration import POLICIES
from tests.support.pg import PG, throwaway_schema, url_for
from tests.support.procs import free_port, start_gateway

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///../shared/ledgergate.db"  # both gateways' config folders point at one file
        return
    with throwaway_schema("lg_claim") as schema:
        yield url_for(schema)


def config(directory: Path, storage: str, replica: str = "same-host") -> tuple[Path, int]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    dead_issuer = f"http://127.0.0.1:{free_port()}"  # identity is not what this test is about
    path = gw.write_config(directory, port, dead_issuer, {"rec": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
                           POLICIES, {"storage": storage,
                                      "audit": {"signing_key": "../shared/ledger.key", "replica": replica,
                                                "checkpoint_interval": "1h"}})
    return path, port


def run_to_exit(path: Path, timeout: float = 60) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "ledgergate.cli", "serve", "--config", str(path)],
                          cwd=path.parent, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done.returncode, done.stdout + done.stderr


def test_second_gateway_with_the_same_replica_refuses_to_start(tmp_path: Path, storage: str) -> None:
    first_cfg, first_port = config(tmp_path / "a", storage)
    second_cfg, _ = config(tmp_path / "b", storage)
    first = start_gateway(first_cfg, first_port, tmp_path / "a" / "gateway.log")
    try:
        code, out = run_to_exit(second_cfg)
        flat = " ".join(out.split())
        assert code != 0, out
        assert "'same-host' is already claimed" in flat and f"pid {first.proc.pid}" in flat, out
        assert "Traceback" not in out, out
        assert first.proc.poll() is None, "the first gateway keeps running"
        # another replica id in the same store is fine
        third_cfg, third_port = config(tmp_path / "c", storage, replica="other-host")
        third = start_gateway(third_cfg, third_port, tmp_path / "c" / "gateway.log")
        third.stop()
    finally:
        first.kill()  # SIGKILL: no cleanup runs, the claim must still be released
    again = start_gateway(second_cfg, _port_of(second_cfg), tmp_path / "b" / "gateway.log")
    again.stop()
    assert again.proc.returncode == 0 or again.proc.returncode == -15


def _port_of(path: Path) -> int:
    import yaml

    return int(yaml.safe_load(path.read_text())["listen"].rsplit(":", 1)[1])


def settings(replica: str = "r1") -> AuditSettings:
    return AuditSettings(replica=replica, checkpoint_interval=0)


@pytest.mark.postgres
async def test_lost_postgres_claim_is_taken_again_or_fails_closed(tmp_path: Path) -> None:
    """The claim lives in one PostgreSQL session; when that session is terminated the ledger takes the
    claim again. If another process took it meanwhile, this one stops writing and is not ready."""
    with throwaway_schema("lg_claim") as schema:
        app_name = f"lg_claim_{schema}"
        url = url_for(schema, application_name=app_name)
        ledger = await Ledger.open(settings(), url, tmp_path)
        ledger.probe_idle = 0.2
        try:
            assert await ledger.append("rpc.request", {"n": 1}) == 0
            with pytest.raises(LedgerUnavailable, match="already claimed"):
                await Ledger.open(settings(), url, tmp_path / "other")
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                             (app_name,))
            await asyncio.sleep(1.0)  # the probe finds the session gone and claims again
            deadline = time.monotonic() + 15
            while ledger.readiness() != "ok" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert ledger.readiness() == "ok", ledger.readiness()
            with pytest.raises(LedgerUnavailable, match="already claimed"):
                await Ledger.open(settings(), url, tmp_path / "other")

            # now someone else gets in while the session is gone: a network loss ends the session, and
            # while it lasts this replica cannot claim again but another process (elsewhere) can
            from ledgergate.store.claims import ClaimRefused, LogClaim
            from ledgergate.store.db import StoreURL
            from ledgergate.store.ledger_store import StoreError

            claim = ledger._claim  # noqa: SLF001
            reclaim = claim._claim_postgres  # noqa: SLF001

            def network_down() -> None:
                raise StoreError("cannot connect to PostgreSQL: the network is down (stood in by this test)")

            def thief_claims() -> LogClaim:
                """The lost session's lock is dropped when its server process has ended, a moment after
                the connection closed: until then the thief is refused, like anyone else."""
                deadline = time.monotonic() + 15
                while True:
                    try:
                        return LogClaim(StoreURL.parse(url), "r1", "the thief")
                    except ClaimRefused:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)

            claim._claim_postgres = network_down  # type: ignore[method-assign]
            claim._close_conn()  # noqa: SLF001 - the session ends as a network loss would end it
            try:
                thief = await asyncio.to_thread(thief_claims)
            finally:
                claim._claim_postgres = reclaim  # type: ignore[method-assign]  # the network is back
            try:
                deadline = time.monotonic() + 15
                while "the thief" not in ledger.readiness() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert "the thief" in ledger.readiness(), ledger.readiness()
                with pytest.raises(LedgerUnavailable, match="the thief"):
                    await ledger.append("rpc.request", {"n": 2})
            finally:
                thief.release()
            deadline = time.monotonic() + 15
            while ledger.readiness() != "ok" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await ledger.append("rpc.request", {"n": 3}) == 1
        finally:
            await ledger.close()


async def test_sqlite_claim_released_on_close_and_refused_while_held(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'l.db'}"
    ledger = await Ledger.open(settings(), url, tmp_path)
    try:
        with pytest.raises(LedgerUnavailable, match=f"already claimed by another gateway .pid {os.getpid()}"):
            await Ledger.open(settings(), url, tmp_path)
        other = await Ledger.open(settings("r2"), url, tmp_path)
        await other.close()
    finally:
        await ledger.close()
    again = await Ledger.open(settings(), url, tmp_path)
    await again.close()


@pytest.mark.postgres
def test_a_refusal_names_the_lock_holder_never_a_stale_row() -> None:
    """Between taking the lock and writing its row, a new holder's row still names the previous one
    (perhaps the refused replica itself); the refusal names only a row written by the session that
    holds the lock."""
    from ledgergate.store.claims import ClaimRefused, LogClaim
    from ledgergate.store.db import StoreURL

    with throwaway_schema("lg_claim") as schema:
        store = StoreURL.parse(url_for(schema))
        holder = LogClaim(store, "r1", "the holder")
        try:
            with psycopg.connect(url_for(schema), autocommit=True) as conn:
                conn.execute("UPDATE ledger_claims SET holder = 'a stale holder', pid = 0")
                started = time.monotonic()
                with pytest.raises(ClaimRefused) as refused:
                    LogClaim(store, "r1", "the second")
                assert "a stale holder" not in str(refused.value)
                assert "has not said who it is" in str(refused.value)
                assert time.monotonic() - started >= 1.5  # it waited for the holder to write its row
                conn.execute("UPDATE ledger_claims SET holder = 'the holder', pid = %s",
                             (holder._conn.info.backend_pid,))  # noqa: SLF001 - the holder's session, as it wrote it
                with pytest.raises(ClaimRefused, match="the holder"):
                    LogClaim(store, "r1", "the second")
        finally:
            holder.release()


@pytest.mark.postgres
def test_postgres_claim_session_is_dropped_soon_after_its_host_vanishes() -> None:
    """The claim is the session's advisory lock, and the server keeps a session until it sees the client
    gone. A dead process's host closes the socket at once; a vanished host (power, partition) is seen
    only by TCP keepalive, which by the server's defaults waits two hours before its first probe: a
    replacement with the same replica id would be refused all that time. The claim's session asks the
    server to probe after 5 s of silence. (Dropping the packets of a live socket needs a firewall this
    machine does not have, so the test reads the settings the server applies to that session.)"""
    from ledgergate.store.claims import LogClaim
    from ledgergate.store.db import StoreURL

    with throwaway_schema("lg_claim") as schema:
        claim = LogClaim(StoreURL.parse(url_for(schema)), "r1", "keepalive test")
        try:
            conn = claim._conn  # noqa: SLF001 - the session that holds the lock
            assert conn.info.host.startswith("127."), "keepalive applies to TCP sessions"
            shown = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                     for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                                  "tcp_user_timeout")}
            assert shown == {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
                             "tcp_keepalives_count": "2", "tcp_user_timeout": "10000"}, shown
            with psycopg.connect(PG, autocommit=True) as other:  # a plain session keeps the server's defaults
                assert other.execute("SHOW tcp_keepalives_idle").fetchone()[0] != "5"
        finally:
            claim.release()
