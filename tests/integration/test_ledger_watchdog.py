"""The append watchdog fails only appends that are not durable: a record whose batch committed
is never reported failed, however late its caller's future is settled (found under load by
bench/bench_ledger_scale.py: 64 writers got "did not make the record durable in time" for records
that were in the ledger, with no follow-up record saying so)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ledgergate.audit.ledger import Ledger
from test_ledger_store import settings, store_url  # noqa: F401 - shared fixture

pytestmark = pytest.mark.timeout(120)


async def test_committed_append_is_not_failed_while_its_result_is_on_the_way(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ledger = await Ledger.open(settings(append_timeout=5), store_url, tmp_path)
    resolve = Ledger._resolve

    def late(self: Ledger, results: list[tuple[asyncio.Future[Any], Any]]) -> None:
        # the writer thread has marked the batch DONE; its results reach the loop a while later,
        # as they do when the loop is busy with other callers
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.call_later, 0.6, resolve, self, results)

    monkeypatch.setattr(Ledger, "_resolve", late)
    got = await asyncio.gather(*(ledger.append("rpc.request", {"n": i}) for i in range(20)), return_exceptions=True)
    assert [g for g in got if not isinstance(g, int)] == []
    assert sorted(got) == list(range(20))  # type: ignore[type-var]
    monkeypatch.undo()
    assert ledger.size == 20
    await ledger.close()
