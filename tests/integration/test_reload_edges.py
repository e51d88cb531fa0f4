"""Config reload at its edges, through a real gateway process (`ledgergate serve`) with real OIDC
tokens and a real SQLite ledger (issue 20, item 13):

- a reload that the ledger cannot record (the database is write-locked by another connection, as
  a backup tool or a stuck migration would hold it) is not applied, and the file watcher outlives it;
- one save announced by both SIGHUP and the watcher is one reload record, and the record says
  truthfully what applied live and what waits for a restart (compared with the started config);
- a file caught half-written is not applied, even when the half parses.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from tests.integration.test_policy_gateway import EXTRA, POLICIES, Env
from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.upstream import RecordingUpstream

pytestmark = pytest.mark.node

VISITORS = {"name": "visitors-echo", "match": {"groups": ["visitors"], "tools": ["echo"]}, "effect": "allow"}


@pytest_asyncio.fixture()
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    provider = Provider()
    upstream = RecordingUpstream()
    await upstream.start()
    extra = {**EXTRA, "audit": {**gw.AUDIT, "append_timeout": "1s"}}
    running = await asyncio.to_thread(gw.start, tmp_path, provider.issuer, {"rec": {"url": upstream.url}},
                                      POLICIES, extra)
    try:
        yield Env(provider, upstream, running)
    finally:
        await asyncio.to_thread(running.stop)
        await upstream.stop()
        provider.stop()


def config_path(env: Env) -> Path:
    return env.gateway.dir / "ledgergate.yaml"


def save(env: Env, config: dict) -> str:
    """Replace the file atomically (as most tools do); return the SHA-256 of its bytes."""
    data = yaml.safe_dump(config, sort_keys=False).encode()
    tmp = config_path(env).with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(config_path(env))
    return hashlib.sha256(data).hexdigest()


def reload_records(env: Env) -> list[dict]:
    return [r for r in env.records() if r["event"] in ("config.reloaded", "config.reload_refused")]


def abandoned(records: list[dict]) -> set[int]:
    """Records the ledger says were answered as failed (committed after their caller gave up)."""
    return {r["abandoned_seq"] for r in records if r["event"] == "append.abandoned"}


async def wait_for_reload(env: Env, digest: str, timeout: float = 15.0) -> dict:
    for _ in range(int(timeout / 0.2)):
        records = env.records()
        gone = abandoned(records)
        found = [r for r in records if r["event"] == "config.reloaded" and r.get("config_sha256") == digest
                 and r["seq"] not in gone]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no config.reloaded record for {digest[:12]}; log:\n{env.gateway.log()[-3000:]}")


async def test_a_reload_the_ledger_cannot_record_is_not_applied_and_the_watcher_survives(env: Env) -> None:
    visitor = env.provider.token("eve", ["visitors"])
    assert "error" in (await env.call(visitor, "echo", {"message": "before"})).json()

    # A real outage of the SQLite ledger: another connection holds the write lock.
    db = sqlite3.connect(env.gateway.dir / "data" / "ledgergate.db", timeout=10, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        config = env.config()
        config["policies"].insert(0, VISITORS)
        digest = save(env, config)
        for _ in range(40):  # the watcher tries (within 1 s) and fails to record (append_timeout 1 s)
            if "the ledger cannot record it" in env.gateway.log():
                break
            await asyncio.sleep(0.1)
    finally:
        db.execute("ROLLBACK")
        db.close()

    # Once the ledger records again, the change is applied (the watcher retries on its own), and
    # never before its record: the first answer under the new policy follows a durable reload record.
    for _ in range(150):
        answer = (await env.call(visitor, "echo", {"message": "after"})).json()
        if "result" in answer:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the change was never applied:\n{env.gateway.log()[-3000:]}")
    records = env.records()
    gone = abandoned(records)
    reloads = [r["seq"] for r in records if r["event"] == "config.reloaded" and r.get("config_sha256") == digest
               and r["seq"] not in gone]
    served = [r["seq"] for r in records if r["event"] == "rpc.request" and r.get("principal", {}).get("subject")
              == "eve"]
    assert reloads and served, (reloads, served)
    assert reloads[0] < served[0], "a call was served under a config the ledger had not recorded"

    assert "the ledger cannot record it" in env.gateway.log(), "the unrecorded reload was not reported"

    # The watcher is alive: a later save is applied (and recorded).
    config["policies"].remove(VISITORS)
    later = save(env, config)
    await wait_for_reload(env, later)
    assert "error" in (await env.call(visitor, "echo", {"message": "again"})).json()


async def test_one_save_is_one_reload_reported_against_the_started_config(env: Env) -> None:
    compliance = env.provider.token("cora", ["compliance"])
    checkpoint = f"{env.gateway.base}/api/v1/audit/checkpoint"
    async with env.gateway.http(compliance) as http:
        assert (await http.get(checkpoint)).status_code == 403

    config = env.config()
    config["servers"]["second"] = {"url": env.upstream.url}
    config["audit"]["reader_groups"] = ["auditors", "compliance"]
    config["policies"].insert(0, VISITORS)
    digest = save(env, config)
    env.gateway.proc.proc.send_signal(signal.SIGHUP)  # the operator also signals: still one reload
    first = await wait_for_reload(env, digest)
    await asyncio.sleep(2.5)  # the watcher has seen the same save by now
    assert [r.get("config_sha256") for r in reload_records(env)] == [digest]
    assert first["needs_restart"] == ["servers"], first
    assert sorted(first["applied"]) == ["audit.reader_groups", "policies"], first

    async with env.gateway.http(compliance) as http:  # reader_groups applied live, as reported
        assert (await http.get(checkpoint)).status_code == 200
    async with env.gateway.http(env.provider.token("alice", ["staff"])) as http:  # servers did not
        assert (await http.get(env.gateway.url("second"))).status_code == 404

    # A second save that touches only policies still reports the server change as pending.
    config["policies"].remove(VISITORS)
    second = await wait_for_reload(env, save(env, config))
    assert second["needs_restart"] == ["servers"] and second["applied"] == ["policies"], second


async def test_a_half_written_file_that_parses_is_not_applied(env: Env) -> None:
    config = env.config()
    config["policies"].append({"name": "eve-denied", "match": {"subjects": ["eve"]}, "effect": "deny"})
    policies = config.pop("policies")
    config["policies"] = policies  # last key, so a prefix cut between rules is still a valid config
    full = yaml.safe_dump(config, sort_keys=False).encode()
    cut = full.index(b"\n- name: eve-denied") + 1
    half, rest = full[:cut], full[cut:]
    yaml.safe_load(half)  # the half alone parses (and validates: the gateway would take it)

    path = config_path(env)
    with open(path, "r+b") as fh:  # an editor writing in place, in two steps
        fh.truncate(0)
        fh.write(half)
        fh.flush()
        os.fsync(fh.fileno())
        env.gateway.proc.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.05)
        fh.write(rest)
        fh.flush()
    await wait_for_reload(env, hashlib.sha256(full).hexdigest())
    await asyncio.sleep(2.5)
    digests = [r.get("config_sha256") for r in reload_records(env)]
    assert hashlib.sha256(half).hexdigest() not in digests, "the half-written file was used"
    assert digests == [hashlib.sha256(full).hexdigest()]
