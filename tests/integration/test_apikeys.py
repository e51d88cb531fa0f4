"""API key lifecycle on both stores: create (shown once, hash stored), use, last-used, revoke, expiry.

The same test body runs on SQLite and on the real PostgreSQL server (each
PostgreSQL run gets its own schema so concurrent test runs do not collide).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledgergate.commands.apikeys import app
from ledgergate.errors import AuthError
from ledgergate.identity.apikeys import create_key, hash_key
from ledgergate.identity.service import IdentityService
from ledgergate.identity.settings import IdentitySettings
from ledgergate.store.apikeys_store import ApiKeyStore
from ledgergate.store.db import StoreURL, connect
from tests.support.pg import throwaway_schema, url_for


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledgergate.db'}"
        return

    with throwaway_schema("lg_apikeys") as schema:
        yield url_for(schema)


@pytest.fixture
def config_file(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "ledgergate.yaml"
    path.write_text(f'storage: "{store_url}"\nidentity:\n  api_keys: true\n', encoding="utf-8")
    return path


def cli(*args: str) -> str:
    """The CLI as a terminal runs it: on a thread of its own (it runs its own event loop to write its
    ledger record, which cannot nest in a test's)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner().invoke, app, list(args)).result()
    assert result.exit_code == 0, result.output
    return result.output


async def refused(svc: IdentityService, credential: str, reason: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await svc.authenticate(credential)
    assert info.value.reason == reason, (info.value.reason, info.value.message)
    assert credential not in info.value.message
    return info.value


async def test_lifecycle_create_use_revoke(store_url: str, config_file: Path, tmp_path: Path) -> None:
    created = json.loads(cli("create", "--name", "ci-deploy", "--groups", "ci,readers", "--expires", "30d",
                             "--config", str(config_file), "--json"))
    key = created["key"]
    assert key.startswith("lgk_") and len(key) >= 4 + 43
    assert created["groups"] == ["ci", "readers"] and created["state"] == "active"

    # Only the hash is stored: the key appears nowhere in the table.
    conn = connect(StoreURL.parse(store_url, tmp_path))
    rows = conn.execute("SELECT * FROM api_keys").fetchall()
    conn.close()
    assert len(rows) == 1
    assert key not in repr(rows) and key[4:] not in repr(rows)
    assert hash_key(key) in repr(rows)

    settings = IdentitySettings(api_keys=True, api_key_last_used_interval=0)
    svc = IdentityService(settings, store_url, tmp_path)
    await svc.start()
    try:
        assert svc.readiness() == {"api_keys": "ok"}
        principal = await svc.authenticate(key)
        assert principal.subject == "apikey:ci-deploy"
        assert principal.kind == "service"
        assert principal.groups == frozenset({"ci", "readers"})
        assert principal.claims["key_id"] == created["id"]

        await refused(svc, "lgk_" + secrets.token_urlsafe(32), "invalid_token")
        await refused(svc, key + "x", "invalid_token")

        # Last use is recorded (in the background).
        for _ in range(100):
            listed = json.loads(cli("list", "--config", str(config_file), "--json"))
            if listed[0]["last_used_at"]:
                break
            await asyncio.sleep(0.02)
        assert listed[0]["last_used_at"] is not None
        assert "lgk_" not in cli("list", "--config", str(config_file))

        # Revoked from the CLI (another connection): refused on the very next request.
        assert "revoked" in cli("revoke", created["id"], "--config", str(config_file))
        await refused(svc, key, "revoked")
        assert json.loads(cli("list", "--config", str(config_file), "--json"))[0]["state"] == "revoked"
        # The name is free again once revoked.
        again = json.loads(cli("create", "--name", "ci-deploy", "--config", str(config_file), "--json"))
        assert (await svc.authenticate(again["key"])).subject == "apikey:ci-deploy"
    finally:
        await svc.close()


async def test_expired_and_disabled_keys(store_url: str, tmp_path: Path) -> None:
    store = ApiKeyStore(StoreURL.parse(store_url, tmp_path))
    store.open()
    now = time.time()
    short = create_key(store, "short-lived", ["ci"], expires_in=1.0, now=now)
    stale = create_key(store, "old", ["ci"], expires_in=60, now=now - 3600)
    ops = create_key(store, "ops", ["ops"], expires_in=None)
    store.close()

    settings = IdentitySettings(api_keys=True, disabled_subjects=["apikey:ops"])
    svc = IdentityService(settings, store_url, tmp_path)
    await svc.start()
    try:
        assert (await svc.authenticate(short.key)).subject == "apikey:short-lived"
        await refused(svc, stale.key, "expired")
        await refused(svc, ops.key, "disabled")
        await asyncio.sleep(max(0.0, now + 1.05 - time.time()))
        await refused(svc, short.key, "expired")  # expired on its next request
    finally:
        await svc.close()


async def test_api_keys_can_be_switched_off(store_url: str, tmp_path: Path) -> None:
    store = ApiKeyStore(StoreURL.parse(store_url, tmp_path))
    key = create_key(store, "ci", [], expires_in=60).key
    store.close()
    svc = IdentityService(IdentitySettings(api_keys=False), store_url, tmp_path)
    await svc.start()
    try:
        await refused(svc, key, "invalid_token")
        assert "api_keys" not in svc.readiness()
    finally:
        await svc.close()


async def test_store_unreachable_fails_closed(tmp_path: Path) -> None:
    svc = IdentityService(IdentitySettings(api_keys=True), "postgresql://nobody@127.0.0.1:1/none", tmp_path)
    await svc.start()
    try:
        assert svc.readiness()["api_keys"] != "ok"
        await refused(svc, "lgk_" + secrets.token_urlsafe(32), "no_keys")
    finally:
        await svc.close()


def test_cli_errors(config_file: Path) -> None:
    result = CliRunner().invoke(app, ["create", "--name", "x", "--expires", "soon", "--config", str(config_file)])
    assert result.exit_code == 2 and "--expires" in result.output
    # no store yet: revoking names the storage instead of creating an empty one and finding no key there
    result = CliRunner().invoke(app, ["revoke", "ak_nothing", "--config", str(config_file)])
    assert result.exit_code == 2 and "no store at" in result.output, result.output
    cli("create", "--name", "someone", "--config", str(config_file))
    result = CliRunner().invoke(app, ["revoke", "ak_nothing", "--config", str(config_file)])
    assert result.exit_code == 1 and "no unrevoked API key" in result.output


def ledger_records(store_url: str, tmp_path: Path) -> list[dict[str, object]]:
    conn = connect(StoreURL.parse(store_url, tmp_path))
    try:
        rows = conn.execute("SELECT record FROM ledger_leaves ORDER BY log_id, seq").fetchall()
    finally:
        conn.close()
    return [json.loads(bytes(r[0])) for r in rows]


async def test_issuing_and_revoking_a_key_are_recorded_and_calls_name_the_key(store_url: str, config_file: Path,
                                                                              tmp_path: Path) -> None:
    """A credential with approver or auditor groups could be issued and revoked with nothing in the ledger,
    and calls named only `apikey:<name>`, so a leaked key and its replacement could not be told apart."""
    first = json.loads(cli("create", "--name", "ci-deploy", "--groups", "auditors", "--config", str(config_file),
                           "--json"))
    cli("revoke", first["id"], "--config", str(config_file))
    second = json.loads(cli("create", "--name", "ci-deploy", "--groups", "auditors", "--config", str(config_file),
                            "--json"))
    records = ledger_records(store_url, tmp_path)
    said = [(r["event"], r["key_id"]) for r in records if str(r["event"]).startswith("apikey.")]
    assert said == [("apikey.created", first["id"]), ("apikey.revoked", first["id"]),
                    ("apikey.created", second["id"])]
    made = next(r for r in records if r["event"] == "apikey.created")
    assert made["name"] == "ci-deploy" and made["groups"] == ["auditors"] and made["by"]["subject"]  # type: ignore[index]
    everything = json.dumps(records)
    assert first["key"] not in everything and second["key"] not in everything
    assert first["key"][4:] not in everything

    svc = IdentityService(IdentitySettings(api_keys=True), store_url, tmp_path)
    await svc.start()
    try:
        principal = await svc.authenticate(second["key"])
        assert principal.summary()["credential"] == second["id"] != first["id"]
    finally:
        await svc.close()


def test_a_key_whose_issuing_cannot_be_recorded_is_revoked_and_never_shown(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "not-a-key").mkdir()
    config = tmp_path / "broken.yaml"
    config.write_text(f'storage: "{store_url}"\nidentity:\n  api_keys: true\n'
                      f'audit:\n  signing_key: "{tmp_path / "not-a-key"}"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["create", "--name", "ci", "--config", str(config), "--json"])
    assert result.exit_code == 3, result.output
    assert "lgk_" not in result.output and "revoked and not shown" in result.output
    store = ApiKeyStore(StoreURL.parse(store_url, tmp_path))
    store.open()
    try:
        [record] = store.all()
        assert record.revoked_at is not None
    finally:
        store.close()
