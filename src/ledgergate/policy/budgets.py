"""Budgets: per-principal call rate limits and the maximum result size.

Pure with respect to time: every check takes `now` (seconds, any monotonic
clock), so tests drive a fake clock and the gateway passes `time.monotonic()`.
The state (token buckets) lives in memory, per gateway replica: N replicas
allow up to N × the configured rate. That is deliberate — a shared counter
would put a database round trip on every call — and is documented in
docs/policy.md.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ledgergate.principal import Principal
from ledgergate.policy.settings import BudgetMatchSettings, BudgetsSettings


class RateLimiter:
    """Token buckets by key: `rate_per_s` tokens per second, at most `burst` saved up.

    A new key starts full. Memory is bounded by `max_keys`: when full, buckets
    that have refilled completely are dropped first (forgetting them changes
    nothing); only if that is not enough are the oldest dropped, which can only
    favour those keys.
    """

    __slots__ = ("rate", "burst", "max_keys", "_buckets", "_lock")

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill time]
        self._lock = threading.Lock()

    def _refilled(self, key: str, now: float) -> list[float]:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            b = [self.burst, now]
            self._buckets[key] = b
            return b
        elapsed = now - b[1]
        if elapsed > 0:  # a clock that steps back neither refills nor penalises
            b[0] = min(self.burst, b[0] + elapsed * self.rate)
            b[1] = now
        return b

    def _evict(self, now: float) -> None:
        full = [k for k, (tokens, last) in self._buckets.items()
                if tokens + max(0.0, now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            for k in list(self._buckets)[: max(1, len(self._buckets) // 2)]:
                del self._buckets[k]

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if available. A refused call takes nothing."""
        with self._lock:
            b = self._refilled(key, now)
            if b[0] >= cost:
                b[0] -= cost
                return True
            return False

    def retry_after(self, key: str, now: float, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens will be available (0 if they are now); for Retry-After."""
        with self._lock:
            b = self._refilled(key, now)
            return 0.0 if b[0] >= cost else (cost - b[0]) / self.rate


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    allowed: bool
    budget: str  # "default" or the override's name
    retry_after: float = 0.0


def _matches(m: BudgetMatchSettings, principal: Principal, server: str) -> bool:
    if m.groups is not None and principal.groups.isdisjoint(m.groups):
        return False
    if m.subjects is not None and not any(fnmatchcase(principal.subject, p) for p in m.subjects):
        return False
    if m.kinds is not None and principal.kind not in m.kinds:
        return False
    if m.servers is not None and not any(fnmatchcase(server, p) for p in m.servers):
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Budget:
    name: str
    match: BudgetMatchSettings | None
    limiter: RateLimiter | None
    max_result_bytes: int | None


class Budgets:
    """The `budgets:` config as checks; the first override that matches a caller wins."""

    def __init__(self, budgets: Sequence[_Budget], per_server: bool, methods: frozenset[str]) -> None:
        self._budgets = tuple(budgets)
        self._per_server = per_server
        self._methods = methods

    @classmethod
    def from_settings(cls, settings: BudgetsSettings) -> Budgets:
        default_limiter = RateLimiter(settings.rate.per_second, settings.rate.burst) if settings.rate else None
        budgets = []
        for o in settings.overrides:
            if o.unlimited_rate:
                limiter = None
            elif o.rate is not None:
                limiter = RateLimiter(o.rate.per_second, o.rate.burst)
            else:
                limiter = default_limiter  # the default rate, in buckets of its own (keys carry the budget name)
            size = o.max_result_bytes if o.max_result_bytes is not None else settings.max_result_bytes
            budgets.append(_Budget(o.name, o.match, limiter, size))
        budgets.append(_Budget("default", None, default_limiter, settings.max_result_bytes))
        return cls(budgets, settings.per_server, frozenset(settings.methods))

    def _budget_for(self, principal: Principal, server: str) -> _Budget:
        for b in self._budgets:
            if b.match is None or _matches(b.match, principal, server):
                return b
        raise AssertionError("the default budget always matches")  # pragma: no cover

    def counts(self, method: str) -> bool:
        """Whether a request with this method spends from the rate budget."""
        return method in self._methods

    def check_call(self, principal: Principal, server: str, method: str, now: float) -> BudgetVerdict:
        """Spend one token for a counted method; refusals say when to retry."""
        b = self._budget_for(principal, server)
        if b.limiter is None or method not in self._methods:
            return BudgetVerdict(True, b.name)
        key = f"{b.name}|{principal.key}" + (f"|{server}" if self._per_server else "")
        if b.limiter.allow(key, now):
            return BudgetVerdict(True, b.name)
        return BudgetVerdict(False, b.name, b.limiter.retry_after(key, now))

    def max_result_bytes(self, principal: Principal, server: str) -> int | None:
        return self._budget_for(principal, server).max_result_bytes

    def check_result_size(self, principal: Principal, server: str, size: int) -> bool:
        """False when a result of `size` bytes (serialized JSON) exceeds the caller's limit."""
        limit = self.max_result_bytes(principal, server)
        return limit is None or size <= limit
