"""The serving process takes its start-up heap out of the cyclic collector's view (`app.quiet_collector`).

A full collection walked every object start-up built, 45-75 ms on the bench machine, and every call
in flight waited for it: that was the gateway's p99 tail. What is checked here is the mechanism,
with the real app started through its ASGI lifespan: the long-lived objects start-up made are out
of every generation the collector walks, and `ledgergate serve`'s own entry point asks for it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from ledgergate import app as app_module
from ledgergate.app import Gateway
from ledgergate.config import load_config
from tests.support.gateway import write_config
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.procs import free_port


def tracked(obj: Any) -> bool:
    """Would a full collection walk `obj`? (Frozen objects are in no generation's list.)"""
    return any(o is obj for o in gc.get_objects())


async def lifespan(gateway: Gateway, message: str) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": message})

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)
        if m["type"].endswith((".complete", ".failed")):
            raise asyncio.CancelledError  # end the lifespan loop after this step's answer

    try:
        await gateway.asgi({"type": "lifespan"}, inbox.get, send)
    except asyncio.CancelledError:
        pass
    return sent[-1]


@pytest.mark.parametrize("freeze", [True, False])
async def test_a_serving_gateway_freezes_what_start_up_built(tmp_path: Path, provider: Provider, freeze: bool) -> None:
    config = load_config(write_config(tmp_path, free_port(), provider.issuer, {}, POLICIES))
    gateway = Gateway(config)
    gateway.freeze_heap = freeze
    before = gc.get_freeze_count()
    try:
        assert (await lifespan(gateway, "lifespan.startup"))["type"] == "lifespan.startup.complete"
        # the policy engine, the masking engine and the ledger: built at start-up, live until exit
        long_lived = [gateway.snapshot.policy, gateway.snapshot.masker, gateway.ledger]
        if freeze:
            assert gc.get_freeze_count() > before
            assert not any(tracked(o) for o in long_lived)
            assert len(gc.get_objects()) < gc.get_freeze_count() / 10  # a full collection walks a small rest
        else:
            assert gc.get_freeze_count() == before
            assert all(tracked(o) for o in long_lived)
    finally:
        await gateway.stop()
        gc.unfreeze()  # this test process is not a serving gateway


def test_ledgergate_serve_asks_for_it(tmp_path: Path, provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: served.append(self.config.app))
    root = logging.getLogger()
    handlers, level, interval = root.handlers[:], root.level, sys.getswitchinterval()
    try:
        app_module.run(load_config(write_config(tmp_path, free_port(), provider.issuer, {}, POLICIES)))
    finally:  # run() sets up the serving process's logging and GIL switch interval: not this one's
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.setswitchinterval(interval)
    assert len(served) == 1
    assert served[0].__self__.freeze_heap is True
