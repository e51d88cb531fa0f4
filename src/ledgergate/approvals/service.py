"""The approvals service: request, decide, wait, run once, expire — recorded in the ledger, kept in the store.

Evidence comes first. A request or a decision is appended to the ledger
before the store changes, so every effect has a record before it can
release a call; if the ledger cannot record it, nothing is applied and the
caller gets the error. If the store then cannot apply it (down, or another
replica moved the approval first), an `approval.void` record says so, so an
auditor never reads a decision that took no effect without being told.
Running a granted call goes the other way round (the store decides who runs
it, exactly once, then `approval.executed` is recorded before the call is
forwarded; if that record fails the claim is undone). Expiry, a denial that
releases nothing, is applied first and recorded after (undone if the record
fails, so the next sweep retries it).

Waiting: each held call awaits a future for its approval id. A change made
here wakes it directly; on PostgreSQL a `Listener` hears other replicas'
changes (LISTEN/NOTIFY); and a slow poll over the waited ids covers what no
bus carries (the CLI deciding on SQLite from another process, a listener
reconnecting).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ledgergate.approvals import model
from ledgergate.approvals.model import (
    Approval,
    ApprovalNotFound,
    ApprovalUnavailable,
    Binding,
    NotPending,
    rfc3339,
)
from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.principal import Principal
from ledgergate.policy.decision import ApproverSpec
from ledgergate.store.db import StoreURL
from ledgergate.store.approvals_store import (
    ApprovalStore,
    ApprovalStoreError,
    DuplicatePending,
    Listener,
)

log = logging.getLogger("ledgergate.approvals")

AppendFn = Callable[[str, Mapping[str, Any]], Awaitable[Any]]

#: rows read per store query while paging, and at most per listing call (`ApprovalService.page`)
_PAGE_ROWS = 500
SCAN_ROWS = 5000


def open_store(url: str | StoreURL, base_dir: Any = None) -> ApprovalStore[Approval]:
    """The approvals table of the configured store, handing back `Approval`s."""
    return ApprovalStore.from_url(url, Approval.from_doc, base_dir)


class Notifier(Protocol):
    """Who hears about approvals (webhooks). Must never block or raise."""

    def notify(self, event: str, approval: Approval) -> None: ...


def _approvers(spec: ApproverSpec) -> dict[str, Any]:
    return {"groups": list(spec.groups), "subjects": list(spec.subjects), "count": spec.count}


class ApprovalService:
    """One per gateway process (and one per CLI run). `await start()` before use, `await close()` after."""

    def __init__(self, store: ApprovalStore[Approval], append: AppendFn, settings: ApprovalsSettings, *,
                 notifier: Notifier | None = None, clock: Callable[[], float] = time.time,
                 poll_interval: float | None = None, expire_interval: float = 1.0, listen: bool = True,
                 args_key: bytes | None = None) -> None:
        self.store = store
        #: the key of the arguments' digest in a binding (`model.args_digest`); a service that only decides
        #: (the CLI's) needs none
        self._args_key = args_key
        self.settings = settings
        self._append = append
        self._notifier = notifier
        self._clock = clock
        self._poll_interval = poll_interval if poll_interval is not None else (5.0 if store.is_postgres else 1.0)
        self._expire_interval = expire_interval
        self._listen = listen and store.is_postgres
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listener: Listener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()  # one decision at a time in this process; replicas race on `version`
        self._asking: dict[str, list[Any]] = {}  # one request per identical call at a time in this process
        self._closed = False
        self._owns_notifier = False

    @classmethod
    def from_settings(cls, settings: ApprovalsSettings, storage: str, base_dir: Path | None, append: AppendFn,
                      **kw: Any) -> ApprovalService:
        """The service the gateway runs: the configured store, and webhooks if any are configured
        (started and closed with the service)."""
        from ledgergate.approvals.webhooks import WebhookNotifier

        notifier = WebhookNotifier(settings.webhooks, console_url=settings.console_url) if settings.webhooks else None
        service = cls(open_store(storage, base_dir), append, settings, notifier=notifier, **kw)
        service._owns_notifier = notifier is not None
        return service

    def binding_for(self, principal: Principal, server: str, method: str, target: str | None, arguments: Any,
                    rule: str, policy_version: str) -> model.Binding:
        """The binding of a call, its arguments digested under this deployment's key."""
        if self._args_key is None:
            raise RuntimeError("this approvals service was made without the arguments' key: it cannot bind calls")
        return model.binding_for(principal, server, method, target, arguments, rule, policy_version, self._args_key)

    # ── lifecycle ────────────────────────────────────────────────────────────
    async def start(self, *, background: bool = True) -> None:
        """Open the store; start the bus listener (PostgreSQL), the poll and the expiry sweep."""
        await self._io(self.store.open)
        if self._owns_notifier:
            await self._notifier.start()  # type: ignore[union-attr]
        if self._listen:
            self._listener = Listener(self.store.url, self._wake, self._wake_all)
            if not await self._listener.start():
                log.warning("approvals listener not ready yet; held calls fall back to polling meanwhile")
        self._tasks.append(asyncio.create_task(self._poll(), name="approvals-poll"))
        if background:
            self._tasks.append(asyncio.create_task(self._sweep(), name="approvals-expiry"))

    async def close(self) -> None:
        """Stop background work; calls still waiting get ApprovalUnavailable (their approvals stay stored)."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        self._wake_all()
        if self._owns_notifier:
            await self._notifier.close()  # type: ignore[union-attr]
        await asyncio.to_thread(self.store.close)

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.listening.is_set()

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except ApprovalStoreError as exc:
            log.error("approvals store: %s", exc)
            raise ApprovalUnavailable("the approvals store is unavailable; nothing was changed") from None

    async def _void(self, approval_id: str, why: str, **fields: Any) -> None:
        """Best effort: say in the ledger that a record written just before took no effect."""
        try:
            await self._append("approval.void", {"approval": approval_id, "reason": why, **fields})
        except Exception as exc:  # noqa: BLE001 - the original error is what the caller must see
            log.error("could not record that approval %s took no effect: %s", approval_id, exc)

    def _tell(self, event: str, approval: Approval) -> None:
        if self._notifier is not None:
            try:
                self._notifier.notify(event, approval)
            except Exception:  # noqa: BLE001 - a notifier never stops an approval
                log.exception("approval notifier failed")

    # ── requesting ───────────────────────────────────────────────────────────
    async def request(self, *, principal: Principal, server: str, method: str, target: str | None,
                      arguments: Any, masked_args: Any, rule: str, policy_version: str,
                      approvers: ApproverSpec, justification: str | None = None, session: str | None = None,
                      request_id: str | None = None) -> Approval:
        """The pending approval for this exact call: the existing one if an identical call is already
        waiting, else a new one (recorded as `approval.requested`, then stored).

        `arguments` are the raw arguments and are only hashed; `masked_args` is the
        ledger-masked preview approvers are shown; `justification` is recorded as given
        (mask it first if it may carry sensitive data).
        """
        binding = self.binding_for(principal, server, method, target, arguments, rule, policy_version)
        if justification is not None:
            justification = model.check_reason(justification, what="justification", limit=model.MAX_JUSTIFICATION)
        elif approvers.justification == "required":
            raise model.BadDecision(f"rule {rule!r} needs a justification for this call")
        entry = self._asking.setdefault(binding.key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._request(binding, principal, masked_args, approvers, justification, session,
                                           request_id)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._asking.pop(binding.key, None)

    async def _request(self, binding: Binding, principal: Principal, masked_args: Any, approvers: ApproverSpec,
                       justification: str | None, session: str | None, request_id: str | None) -> Approval:
        existing = await self._io(self.store.pending_for, binding.key)
        now = self._clock()
        if existing is not None:
            if existing.expires > now:
                return existing
            await self.expire_due()  # its time is up: record that before asking again
        cap = self.settings.max_pending
        waiting = await self._io(self.store.list, "pending", cap, binding.principal)
        if len(waiting) >= cap:
            raise model.TooManyPending(f"Too Many Requests: {len(waiting)} approvals of this identity are already "
                                       f"waiting (approvals.max_pending); ask again once some are decided")
        approval = Approval(
            id=model.new_id(), binding=binding, requester=principal.summary(), masked_args=masked_args,
            approvers=approvers, created=now, expires=now + self.settings.timeout, justification=justification,
            session=session, request_id=request_id)
        fields = {**self._call_fields(approval), "args": masked_args, "justification": justification,
                  "approvers": _approvers(approvers), "expires": rfc3339(approval.expires)}
        await self._append("approval.requested", fields)
        try:
            stored = await self._io(self.store.insert, approval)
        except DuplicatePending:
            # Another request for the same call (here or on another replica) was stored first.
            other = await self._io(self.store.pending_for, binding.key)
            await self._void(approval.id, "an identical call is already waiting",
                             duplicate_of=other.id if other else None)
            if other is None:
                raise ApprovalUnavailable("the approval changed while it was being requested; retry") from None
            return other
        except ApprovalUnavailable:
            await self._void(approval.id, "the approvals store could not keep it")
            raise
        self._tell("approval.requested", stored)
        return stored

    async def admit(self, *, principal: Principal, server: str, method: str, target: str | None, arguments: Any,
                    masked_args: Any, rule: str, policy_version: str, approvers: ApproverSpec,
                    justification: str | None = None, session: str | None = None,
                    request_id: str | None = None) -> tuple[Approval, bool]:
        """What the approval stage does first for an `approve` decision, in the right order:
        `(approval, True)` when an open grant for this exact call was just claimed (run it now, once;
        `approval.executed` is recorded), else `(pending approval, False)` to hold the call on
        (`request` is idempotent, so a repeated call joins the approval already waiting)."""
        binding = self.binding_for(principal, server, method, target, arguments, rule, policy_version)
        granted = await self.claim_grant(binding, request_id)
        if granted is not None:
            return granted, True
        pending = await self.request(principal=principal, server=server, method=method, target=target,
                                     arguments=arguments, masked_args=masked_args, rule=rule,
                                     policy_version=policy_version, approvers=approvers,
                                     justification=justification, session=session, request_id=request_id)
        return pending, False

    def _call_fields(self, a: Approval) -> dict[str, Any]:
        b = a.binding
        fields: dict[str, Any] = {"approval": a.id, "principal": dict(a.requester), "server": b.server,
                                  "method": b.method, "args_digest": b.args_digest, "rule": b.rule,
                                  "policy_version": b.policy_version}
        if b.target is not None:
            fields["target"] = b.target
        if a.session is not None:
            fields["session"] = a.session
        if a.request_id is not None:
            fields["request_id"] = a.request_id
        return fields

    # ── deciding ─────────────────────────────────────────────────────────────
    async def decide(self, approval_id: str, decider: Principal, verdict: str, reason: Any, *,
                     shown_digest: str | None = None) -> Approval:
        """Apply one person's verdict. Raises the model's precise errors (403/404/409/400), or
        LedgerUnavailable / ApprovalUnavailable (503) with nothing applied."""
        async with self._lock:
            return await self._decide(approval_id, decider, verdict, reason, shown_digest)

    async def _decide(self, approval_id: str, decider: Principal, verdict: str, reason: Any,
                      shown_digest: str | None) -> Approval:
        recorded: set[str] = set()
        for _ in range(5):
            current = await self.get(approval_id)
            try:
                new = model.decide(current, decider, verdict, reason, self._clock(), self.settings.grant_window,
                                   shown_digest=shown_digest)
            except model.ApprovalError:
                if recorded:
                    await self._void(approval_id, f"the approval became {current.status} before the decision "
                                                  "was applied", approver=decider.summary())
                raise
            vote = new.decisions[-1]
            if "decided" not in recorded:
                await self._append("approval.decided", {
                    **self._call_fields(current), "approver": decider.summary(), "approver_display": vote.display,
                    "operator": vote.operator, "verdict": vote.verdict, "reason": vote.reason,
                    "preview_digest": vote.preview_digest})
                recorded.add("decided")
            if new.status != "pending" and new.status not in recorded:
                await self._append(f"approval.{'granted' if new.status == 'approved' else 'denied'}", {
                    **self._call_fields(new), "approvals": new.approvals, "close_reason": new.close_reason,
                    "granted_until": rfc3339(new.granted_until)})
                recorded.add(new.status)
            try:
                stored = await self._io(self.store.update, new, current.version)
            except ApprovalUnavailable:
                await self._void(approval_id, "the approvals store could not apply the decision",
                                 approver=decider.summary())
                raise
            if stored is None:
                continue  # another replica changed it: re-read and re-check; the decision record stands
            if new.status != "pending" and recorded - {"decided", new.status}:
                await self._void(approval_id, f"the approval ended {new.status}, not "
                                              f"{', '.join(sorted(recorded - {'decided', new.status}))}")
            self._wake(approval_id)
            self._tell("approval.decided", stored)
            if stored.status != "pending":
                self._tell(f"approval.{'granted' if stored.status == 'approved' else 'denied'}", stored)
            return stored
        await self._void(approval_id, "the approval kept changing while the decision was applied")
        raise ApprovalUnavailable(f"approval {approval_id} kept changing; decide again")

    async def cancel(self, approval_id: str, reason: str) -> Approval:
        """Withdraw a pending approval (e.g. the requester gave up): recorded, then stored."""
        async with self._lock:
            current = await self.get(approval_id)
            new = model.cancel(current, self._clock(), reason)
            await self._append("approval.cancelled", {**self._call_fields(new), "reason": new.close_reason})
            try:
                stored = await self._io(self.store.update, new, current.version)
            except ApprovalUnavailable:
                await self._void(approval_id, "the approvals store could not apply the cancellation")
                raise
            if stored is None:
                await self._void(approval_id, "the approval changed before it was cancelled")
                raise NotPending(f"approval {approval_id} changed before it was cancelled; look again", "changed")
            self._wake(approval_id)
            return stored

    # ── reading ──────────────────────────────────────────────────────────────
    async def get(self, approval_id: str) -> Approval:
        if not model.looks_like_id(approval_id):
            raise ApprovalNotFound(f"no approval {approval_id[:60]!r}")
        found = await self._io(self.store.get, approval_id)
        if found is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return found

    async def latest(self, binding: Binding) -> Approval | None:
        """The newest approval of this exact call in any state (e.g. to tell a repeated call it was denied)."""
        found: Approval | None = await self._io(self.store.latest_for, binding.key)
        return found

    async def list(self, status: str | None = None, limit: int = 100,
                   principal_key: str | None = None) -> list[Approval]:
        if status is not None and status not in model.STATUSES:
            raise model.BadDecision(f"status must be one of {', '.join(model.STATUSES)}")
        return list(await self._io(self.store.list, status, max(1, min(limit, 1000)), principal_key))

    async def page(self, status: str | None, limit: int, keep: Callable[[Approval], bool],
                   after: model.Cursor | None = None,
                   scan: int = SCAN_ROWS) -> tuple[builtins.list[Approval], model.Cursor | None]:
        """Up to `limit` approvals that `keep` admits (what one caller may see), newest first, from
        `after` on, and the cursor to continue from (None: nothing further is stored).

        Filtering after a fixed read (the newest 1,000, then who may see them) hid from an approver
        every approval of theirs behind 1,000 newer ones of others; so the store is read page by page
        until `limit` are found. At most `scan` rows are read per call, so a caller who may see few
        of many costs a bounded read: they get fewer than `limit` and a cursor to go on with."""
        if status is not None and status not in model.STATUSES:
            raise model.BadDecision(f"status must be one of {', '.join(model.STATUSES)}")
        found: builtins.list[Approval] = []
        read = 0
        while True:
            want = min(_PAGE_ROWS, scan - read)
            rows: builtins.list[Approval] = list(await self._io(self.store.list, status, want, None,
                                                       None if after is None else (after.created, after.id)))
            read += len(rows)
            for row in rows:
                after = model.Cursor(row.created, row.id)
                if keep(row):
                    found.append(row)
                    if len(found) == limit:
                        return found, after
            if len(rows) < want:
                return found, None
            if read >= scan:
                return found, after

    # ── running the granted call ─────────────────────────────────────────────
    async def claim_grant(self, binding: Binding, request_id: str | None) -> Approval | None:
        """The approval that lets this exact call run now, moved to executed (exactly once across every
        caller and replica), with `approval.executed` recorded; None if no grant is open for it."""
        now = self._clock()
        claimed: Approval | None = await self._io(
            self.store.claim, binding.key, now, lambda a: model.execute(a, now, request_id))
        if claimed is None:
            return None
        try:
            await self._append("approval.executed", {
                **self._call_fields(claimed), "request_id": request_id, "approved_request_id": claimed.request_id})
        except Exception:
            approved = dataclasses.replace(claimed, status="approved", executed_at=None, executed_request_id=None)
            try:
                undone = await self._io(self.store.unclaim, claimed, approved)
            except ApprovalUnavailable:
                undone = False
            if not undone:
                log.error("approval %s is marked executed but its record failed; its call was not run", claimed.id)
            raise
        self._wake(claimed.id)
        return claimed

    # ── waiting ──────────────────────────────────────────────────────────────
    async def wait(self, approval_id: str, timeout: float) -> Approval:
        """The approval as soon as it is no longer pending, or as it is when `timeout` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            if self._closed:
                raise ApprovalUnavailable("the approvals service is shutting down; retry the call")
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(approval_id, set())
            waiters.add(fut)  # before reading, so a change between the read and the wait is not missed
            try:
                current = await self.get(approval_id)
                remaining = deadline - loop.time()
                if current.status != "pending" or remaining <= 0:
                    return current
                handle = loop.call_later(remaining, _settle, fut)
                try:
                    await fut
                finally:
                    handle.cancel()
            finally:
                waiters.discard(fut)
                if not waiters:
                    self._waiters.pop(approval_id, None)

    @property
    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    def _wake(self, approval_id: str) -> None:
        for fut in self._waiters.get(approval_id, ()):
            _settle(fut)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for fut in waiters:
                _settle(fut)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            if not self._waiters:
                continue
            try:
                statuses = await asyncio.to_thread(self.store.statuses, list(self._waiters))
            except Exception as exc:  # noqa: BLE001 - waiters time out on their own
                log.warning("approvals poll failed: %s", exc)
                continue
            for approval_id, status in statuses.items():
                if status != "pending":
                    self._wake(approval_id)

    # ── expiry ───────────────────────────────────────────────────────────────
    async def expire_due(self) -> builtins.list[Approval]:
        """Pending approvals past their expiry become expired (a denial), each recorded."""
        now = self._clock()
        done: builtins.list[Approval] = []
        for current in await self._io(self.store.due, now):
            try:
                new = model.expire(current, now)
            except NotPending:
                continue
            stored = await self._io(self.store.update, new, current.version)
            if stored is None:
                continue  # decided or expired elsewhere meanwhile
            try:
                await self._append("approval.expired", {**self._call_fields(stored), "close_reason": stored.close_reason,
                                                        "approvals": stored.approvals})
            except Exception:
                with contextlib.suppress(ApprovalUnavailable):
                    await self._io(self.store.update, current, stored.version)  # back to pending; next sweep retries
                raise
            self._wake(stored.id)
            self._tell("approval.expired", stored)
            done.append(stored)
        return done

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._expire_interval)
            try:
                await self.expire_due()
            except Exception as exc:  # noqa: BLE001 - keep sweeping; expiry is retried
                log.warning("approval expiry sweep failed: %s", exc)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


__all__ = ["AppendFn", "ApprovalService", "Notifier", "open_store"]
