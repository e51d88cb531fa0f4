"""The console's sign-out store on real SQLite and PostgreSQL: a sign-out is seen by another connection
(another replica) at once, repeats are harmless, and rows past their cookie's expiry are dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledgergate.store.signouts_store import SignOutStore
from tests.support.pg import throwaway_schema, url_for


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledgergate.db'}"
        return
    with throwaway_schema("signouts") as schema:
        yield url_for(schema)


def test_a_sign_out_is_seen_by_every_replica_and_expires_with_its_cookie(storage: str) -> None:
    one, other = SignOutStore.open(storage), SignOutStore.open(storage)
    try:
        assert not other.signed_out("a" * 64)
        one.sign_out("a" * 64, expires=1_000.0, now=500.0)
        one.sign_out("a" * 64, expires=1_000.0, now=500.0)  # signing out twice is one sign-out
        assert other.signed_out("a" * 64) and not other.signed_out("b" * 64)
        other.sign_out("b" * 64, expires=3_000.0, now=2_000.0)  # a later sign-out drops the expired rows
        assert not one.signed_out("a" * 64) and one.signed_out("b" * 64)
        assert one.check() is None
    finally:
        one.close()
        other.close()
