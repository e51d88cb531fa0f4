"""What a reload applies live and what waits for a restart, and reading a file only once it is
stable (`ledgergate.reload`). The gateway-level behaviour is in tests/integration/test_reload_edges.py."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ledgergate.config import parse_config
from ledgergate.reload import UnstableFile, plan_reload, read_stable

BASE = """
listen: 127.0.0.1:8080
servers:
  a: {url: "http://127.0.0.1:9000/mcp"}
policies:
  - {name: r1, match: {tools: [echo]}, effect: allow}
audit:
  checkpoint_interval: 5s
  reader_groups: [auditors]
approvals:
  hold: 50s
  timeout: 1h
"""


def settings(text: str = BASE, **replace: str):  # type: ignore[no-untyped-def]
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return parse_config(text, env={})


def test_live_keys_apply_and_restart_only_keys_are_reported_against_the_started_config() -> None:
    started = settings()
    new = settings(**{"[auditors]": "[auditors, compliance]", "r1": "r2",
                      'a: {url: "http://127.0.0.1:9000/mcp"}': 'a: {url: "http://127.0.0.1:9001/mcp"}'})
    plan = plan_reload(started, started, new)
    assert plan.applied == ["policies", "audit.reader_groups"]
    assert plan.needs_restart == ["servers"]
    # what runs: the new live parts over the started restart-only parts
    assert plan.effective.audit.reader_groups == ["auditors", "compliance"]
    assert plan.effective.servers["a"].url.endswith(":9000/mcp")
    assert plan.effective.policies[0].name == "r2"

    # a later reload that changes nothing restart-only still reports the pending server change
    again = plan_reload(started, plan.effective,
                        settings(**{"[auditors]": "[auditors, compliance]", "r1": "r3", "9000": "9001"}))
    assert again.applied == ["policies"] and again.needs_restart == ["servers"]
    # and one that puts the started value back reports nothing pending
    back = plan_reload(started, again.effective, settings())
    assert back.applied == ["policies", "audit.reader_groups"] and back.needs_restart == []


def test_restart_only_sub_keys_are_named_and_live_sub_keys_apply() -> None:
    started = settings()
    plan = plan_reload(started, started, settings(**{"checkpoint_interval: 5s": "checkpoint_interval: 1s",
                                                     "hold: 50s": "hold: 10s", "timeout: 1h": "timeout: 2h",
                                                     "127.0.0.1:8080": "127.0.0.1:8081"}))
    assert plan.needs_restart == ["listen", "approvals.timeout", "audit.checkpoint_interval"]
    assert plan.applied == ["approvals.hold"]
    assert plan.effective.approvals.hold == 10 and plan.effective.approvals.timeout == 3600
    assert plan.effective.audit.checkpoint_interval == 5 and plan.effective.listen == "127.0.0.1:8080"


async def test_a_stable_file_is_read_once_it_stops_changing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"listen: 127.0.0.1:1\n")

    async def keep_writing() -> None:
        for i in range(4):
            await asyncio.sleep(0.03)
            path.write_bytes(b"listen: 127.0.0.1:%d\n" % (i + 2))

    writer = asyncio.create_task(keep_writing())
    stable = await read_stable(path, settle=0.05)
    await writer
    assert stable.data == b"listen: 127.0.0.1:5\n", "a file still being written was used"
    assert stable.sha256 == hashlib.sha256(stable.data).hexdigest()


async def test_a_file_that_never_settles_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"x: 0\n")
    stop = asyncio.Event()

    async def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            path.write_bytes(b"x: %d\n" % i)
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(churn())
    try:
        with pytest.raises(UnstableFile):
            await read_stable(path, settle=0.05, patience=0.5)
    finally:
        stop.set()
        await writer


def test_a_reload_may_not_take_away_every_issuer() -> None:
    """A lost `identity` block, applied live on every replica reading the file, would refuse every token;
    it needs a restart. Changing issuers, or adding the first one, is a reload like any other."""
    from ledgergate.reload import reload_problems

    issuer = "identity:\n  oidc:\n    - {issuer: 'https://idp.example'}\n"
    other = "identity:\n  oidc:\n    - {issuer: 'https://idp2.example'}\n"
    running, none = settings(BASE + issuer), settings()
    [problem] = reload_problems(running, none)
    assert problem.startswith("identity.oidc: the new config lists no issuer, while the running one trusts 1")
    assert reload_problems(running, settings(BASE + other)) == []
    assert reload_problems(none, settings(BASE + issuer)) == []
    assert reload_problems(none, none) == []
