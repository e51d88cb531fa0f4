"""Who owns a task (the Tasks extension): a task id the upstream issued is usable only by the
identity whose call created it.

Upstream task ids are the server's, and a stateless server shares one id space among every
caller the gateway sends it, so without this binding one principal could poll, fetch or cancel
another's task by its id. Ownership is recorded when a task-creating result passes through and
checked on `tasks/get`, `tasks/result`, `tasks/cancel`; `tasks/list` shows only one's own.
Kept in memory per replica with the task's TTL (bounded): an id this replica did not see is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

TASK_METHODS = ("tasks/get", "tasks/result", "tasks/cancel")
_MAX = 100_000
_DEFAULT_TTL = 24 * 3600.0


#: `mask_of` for a task this gateway did not see created
UNKNOWN_MASK = object()


class TaskOwners:
    def __init__(self) -> None:
        # (server, task id) -> (owner's principal key, expiry, masking profile of the call that made it)
        self._owners: OrderedDict[tuple[str, str], tuple[str, float, str | None]] = OrderedDict()

    def record(self, server: str, principal_key: str, result: Any, mask: str | None = None) -> None:
        """A task a call created; `mask` is that call's masking profile, which its status and result are
        shown with later (`mask_of`), not the profile of whatever rule lets the caller poll."""
        task = result.get("task") if isinstance(result, dict) else None
        if not isinstance(task, dict) or not isinstance(task.get("taskId"), str):
            return
        task_id: str = task["taskId"]
        ttl_ms = task.get("ttl")
        ttl = ttl_ms / 1000 if isinstance(ttl_ms, (int, float)) and ttl_ms > 0 else _DEFAULT_TTL
        self._owners[(server, task_id)] = (principal_key, time.monotonic() + ttl, mask)
        self._owners.move_to_end((server, task_id))
        while len(self._owners) > _MAX:
            self._owners.popitem(last=False)

    def owns(self, server: str, principal_key: str, task_id: Any) -> bool:
        entry = self._owners.get((server, task_id)) if isinstance(task_id, str) else None
        if entry is None or entry[1] < time.monotonic():
            return False
        return entry[0] == principal_key

    def mask_of(self, server: str, task_id: Any) -> Any:
        """The masking profile of the call that created the task (None: unmasked), or `UNKNOWN_MASK`."""
        entry = self._owners.get((server, task_id)) if isinstance(task_id, str) else None
        return UNKNOWN_MASK if entry is None else entry[2]

    def filter_list(self, server: str, principal_key: str, result: Any) -> Any:
        if not isinstance(result, dict) or not isinstance(result.get("tasks"), list):
            return result
        mine = [t for t in result["tasks"] if isinstance(t, dict) and self.owns(server, principal_key, t.get("taskId"))]
        return {**result, "tasks": mine}


TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
GATEWAY_TASK_PREFIX = "lgt_"
#: what a client polling a gateway task that this replica does not hold (any more) is told
TASK_ENDED = ("a task the gateway holds while a call waits for approval lives on the gateway replica that took "
              "the call, until that replica shuts down; if its approval is approved, send the identical call "
              "again and it runs once")


def wants_tasks(capabilities: Any) -> bool:
    """Whether a 2026-07-28 client declared the Tasks extension in its per-request capabilities."""
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


class GatewayTasks:
    """Tasks the gateway itself runs: a call waiting for approval, answered with a task the client
    polls. Kept in memory on the replica that created them (bounded, with their TTL); the call runs
    in the background once approved, and its answer waits here for `tasks/get`."""

    def __init__(self, ttl: float = _DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._running: set[Any] = set()

    def create(self, task_id: str, message: str, poll_ms: int, approval_id: str) -> dict[str, Any]:
        now = _iso(time.time())
        task = {"taskId": task_id, "status": "working", "statusMessage": message, "createdAt": now,
                "lastUpdatedAt": now, "ttl": int(self.ttl * 1000), "pollInterval": poll_ms}
        self._tasks[task_id] = {"task": task, "approval": approval_id, "expires": time.monotonic() + self.ttl}
        while len(self._tasks) > _MAX:
            self._tasks.popitem(last=False)
        return task

    def get(self, task_id: str) -> dict[str, Any] | None:
        entry = self._tasks.get(task_id)
        if entry is None or entry["expires"] < time.monotonic():
            return None
        return entry

    def finish(self, task_id: str, status: str, message: str, outcome: dict[str, Any]) -> None:
        """`outcome` is {"result": ...} or {"error": ...}."""
        entry = self._tasks.get(task_id)
        if entry is None:
            return
        entry["task"] = {**entry["task"], "status": status, "statusMessage": message,
                         "lastUpdatedAt": _iso(time.time())}
        entry.update(outcome)

    def track(self, job: Any) -> None:
        self._running.add(job)
        job.add_done_callback(self._running.discard)

    async def close(self, patience: float = 5.0) -> None:
        """Cancel the tasks still waiting (they record how they ended, `ApprovalGate._released_at_shutdown`),
        and give them `patience` to do so before the ledger closes."""
        jobs = list(self._running)
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=patience)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
