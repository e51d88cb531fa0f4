"""The console's sign-out store on real SQLite and PostgreSQL: a sign-out is seen by another connection
(another replica) at once, repeats are harmless, and rows past their cookie's expiry are dropped."""

from __future__ import annotations

from test_ledger_store import store_url  # noqa: F401 - shared fixture: SQLite and PostgreSQL

from ledgergate.store.signouts_store import SignOutStore


def test_a_sign_out_is_seen_by_every_replica_and_expires_with_its_cookie(store_url: str) -> None:
    one, other = SignOutStore.open(store_url), SignOutStore.open(store_url)
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


def test_a_sign_in_attempt_is_consumed_once_across_replicas(store_url: str) -> None:
    one, other = SignOutStore.open(store_url), SignOutStore.open(store_url)
    try:
        assert one.consume("c" * 64, expires=1_000.0, now=500.0)
        assert not other.consume("c" * 64, expires=1_000.0, now=500.0), "the second replica sees it used"
        assert not one.consume("c" * 64, expires=1_000.0, now=600.0)
        assert other.consume("d" * 64, expires=3_000.0, now=2_000.0)  # and the expired row goes
        assert one.consume("c" * 64, expires=4_000.0, now=2_000.0), "an expired attempt's row is gone"
    finally:
        one.close()
        other.close()
