"""Authentication, once, for every entry (`/mcp`, `/api`, and later `/ui`), in the manner of
Starlette's AuthenticationMiddleware with a backend: the bearer credential becomes a `Principal`
here and nowhere else, and every refusal is recorded.

Refusals of callers nobody has identified (`auth.denied`) are aggregated: an anonymous flood
must not grow the ledger without bound, yet no refusal may go uncounted. Per (source address,
server, reason), the first refusal of an interval is recorded at once; the rest of that interval
are counted and their count is carried by the next record of that key, or flushed on a timer
(and at shutdown) as one `auth.denied` record with `aggregated: true`. Every `auth.denied`
record has `count`: the refusals it stands for, so the counts always add up.

Refusals of identified callers (`auth.forbidden`: an identity the audit API does not let in) are
recorded one by one: they name someone, which is what an investigator looks for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from ledgergate.errors import AuthError, GatewayError
from ledgergate.gateway.stages.base import AuditPort, IdentityPort
from ledgergate.principal import Principal

log = logging.getLogger("ledgergate.auth")

#: how long one (source, server, reason) gets one record, the rest counted into the next
REFUSAL_INTERVAL = 5.0
#: distinct keys tracked at once; beyond it refusals share one overflow key per (server, reason)
MAX_REFUSAL_KEYS = 4096
#: records written at once per interval, all keys together; past it a refusal whose key would be
#: recorded now is counted under the overflow key instead. Without it a caller rotating through
#: source addresses got one record per address: about 800 a second, bounded only by MAX_REFUSAL_KEYS.
MAX_IMMEDIATE_RECORDS = 128
OVERFLOW_SOURCE = "*"

RefusalKey = tuple[str, str, str]  # (remote, server, reason)


def bearer_credential(authorization: str | None) -> str | None:
    """None when no credential was sent; "" when one was sent in a form we do not take."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


@dataclass
class _Tally:
    started: float
    suppressed: int = 0


class RefusalAggregator:
    """At most one immediate record per interval per key; pure apart from the clock it is given.

    `observe` says whether to record now and how many refusals that record stands for (this one
    plus those counted since the key's last record); `due` and `drain` give the counts owed by
    keys that went quiet. Every observed refusal is in exactly one count.
    """

    def __init__(self, interval: float = REFUSAL_INTERVAL, max_keys: int = MAX_REFUSAL_KEYS,
                 clock: Callable[[], float] = time.monotonic, max_immediate: int = MAX_IMMEDIATE_RECORDS) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.max_immediate = max_immediate
        self.clock = clock
        self._tallies: dict[RefusalKey, _Tally] = {}
        self._window_started = -math.inf
        self._window_records = 0

    def observe(self, key: RefusalKey) -> tuple[RefusalKey, int | None]:
        """(the key it was counted under, count to record now — or None: counted, record later)."""
        now = self.clock()
        if now - self._window_started >= self.interval:
            self._window_started, self._window_records = now, 0
        if key not in self._tallies and len(self._tallies) >= self.max_keys:
            self._forget_quiet(now)
            if len(self._tallies) >= self.max_keys:
                key = (OVERFLOW_SOURCE, key[1], key[2])
        tally = self._tallies.get(key)
        if tally is None or now - tally.started >= self.interval:
            if self._window_records >= self.max_immediate:
                return self._count_later(key, tally, now)
            self._window_records += 1
            carried = tally.suppressed if tally is not None else 0
            self._tallies[key] = _Tally(now)
            return key, 1 + carried
        tally.suppressed += 1
        return key, None

    def _count_later(self, key: RefusalKey, tally: _Tally | None, now: float) -> tuple[RefusalKey, None]:
        """The interval's record budget is spent: a key already tracked counts this one itself (its
        record is owed and `due` writes it); a new source shares its (server, reason)'s overflow key,
        so a flood from many addresses makes no more keys, and no more records, than the budget."""
        if tally is None:
            key = (OVERFLOW_SOURCE, key[1], key[2])
            tally = self._tallies.get(key)
            if tally is None:
                tally = self._tallies[key] = _Tally(now)
        tally.suppressed += 1
        return key, None

    def due(self) -> list[tuple[RefusalKey, int]]:
        """Counts owed by keys whose interval is over (each given once); quiet keys are forgotten."""
        now = self.clock()
        owed = []
        for k, t in list(self._tallies.items()):
            if now - t.started >= self.interval:
                if t.suppressed:
                    owed.append((k, t.suppressed))
                del self._tallies[k]
        return owed

    def drain(self) -> list[tuple[RefusalKey, int]]:
        """Every count still owed (at shutdown)."""
        owed = [(k, t.suppressed) for k, t in self._tallies.items() if t.suppressed]
        self._tallies.clear()
        return owed

    def restore(self, key: RefusalKey, count: int) -> None:
        """Put back a count whose record could not be written (it is owed again)."""
        tally = self._tallies.setdefault(key, _Tally(self.clock()))
        tally.suppressed += count

    @property
    def pending(self) -> int:
        return sum(t.suppressed for t in self._tallies.values())

    def _forget_quiet(self, now: float) -> None:
        """Drop keys whose interval is over and that owe nothing (a count is never dropped)."""
        for k in [k for k, t in self._tallies.items() if now - t.started >= self.interval and not t.suppressed]:
            del self._tallies[k]


class Authenticator:
    def __init__(self, ledger: AuditPort, challenge: Callable[[str, str | None, str], str],
                 refusals: RefusalAggregator | None = None) -> None:
        self.ledger = ledger
        self._challenge = challenge
        self.refusals = refusals if refusals is not None else RefusalAggregator()
        self._flusher: asyncio.Task[None] | None = None

    async def authenticate(self, identity: IdentityPort, authorization: str | None, query_string: bytes,
                           realm: str, remote: str | None) -> Principal:
        """The caller's principal; raises AuthError (already recorded) with the 401 challenge attached."""
        if b"access_token" in query_string and "access_token" in parse_qs(query_string.decode("latin-1")):
            refusal = AuthError("tokens in the query string are refused; send them in the Authorization header",
                                "token_in_query")
            with contextlib.suppress(GatewayError):  # refused either way; recorded when the ledger can
                await self._record(refusal, realm, remote)
            raise refusal
        try:
            return await identity.authenticate(bearer_credential(authorization))
        except AuthError as exc:
            await self._record(exc, realm, remote)
            raise

    async def forbidden(self, principal: Principal, realm: str, remote: str | None, detail: str,
                        **fields: Any) -> None:
        """Record that an identified caller was refused (403) what it asked for; never raises."""
        try:
            await self.ledger.append("auth.forbidden", {"principal": principal.summary(), "server": realm,
                                                        "remote": remote, "detail": detail, **fields})
        except GatewayError as exc:  # refused either way; the log says a record is missing
            log.error("auth.forbidden for %s not recorded: %s", principal.key, exc.message)

    async def _record(self, exc: AuthError, realm: str, remote: str | None) -> None:
        key, count = self.refusals.observe((remote or "", realm, exc.reason))
        if count is None:
            self._start_flusher()
            return
        try:
            await self.ledger.append("auth.denied", {"server": realm, "reason": exc.reason, "detail": exc.message,
                                                     "remote": remote, "count": count})
        except GatewayError:
            if count > 1:
                self.refusals.restore(key, count - 1)  # the carried ones are still owed
            raise

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self.refusals.pending:
            await asyncio.sleep(self.refusals.interval / 2)
            await self._write(self.refusals.due())

    async def _write(self, owed: list[tuple[RefusalKey, int]]) -> None:
        for (remote, realm, reason), count in owed:
            detail = (f"{count} refusal(s) of this kind from sources past the records one interval may write "
                      f"({self.refusals.max_immediate} a {self.refusals.interval:g}s), counted together"
                      if remote == OVERFLOW_SOURCE else
                      f"{count} more refusal(s) of this kind from this source, counted within "
                      f"{self.refusals.interval:g}s of the last record")
            try:
                await self.ledger.append("auth.denied", {
                    "server": realm, "reason": reason, "remote": None if remote == "" else remote,
                    "count": count, "aggregated": True, "detail": detail})
            except GatewayError as exc:
                log.error("aggregated auth.denied (%d) not recorded yet: %s", count, exc.message)
                self.refusals.restore((remote, realm, reason), count)

    async def close(self) -> None:
        """Write what is still counted (at shutdown): no refusal goes unrecorded."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
        owed = self.refusals.drain()
        await self._write(owed)
        if self.refusals.pending:
            log.error("%d refusals could not be recorded at shutdown", self.refusals.pending)

    def challenge(self, exc: AuthError, metadata_url: str) -> tuple[tuple[bytes, bytes], ...]:
        """The RFC 9728 `WWW-Authenticate` header for a 401."""
        error_code = ("invalid_request" if exc.reason in ("missing_token", "invalid_request", "token_in_query")
                      else "invalid_token")
        value = self._challenge(metadata_url, None if exc.reason == "missing_token" else error_code, exc.message)
        return ((b"www-authenticate", value.encode("latin-1", "replace")),)
