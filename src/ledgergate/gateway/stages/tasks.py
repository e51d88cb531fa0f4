"""task ownership (request side) and task records (response side), for the Tasks extension:
a task is usable only by the identity whose call created it (see gateway/tasks.py)."""

from __future__ import annotations

import dataclasses

from ledgergate.errors import PolicyDenied
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.gateway.tasks import (
    GATEWAY_TASK_PREFIX,
    TASK_ENDED,
    TASK_METHODS,
    UNKNOWN_MASK,
    TaskOwners,
)
from ledgergate.upstream.base import Message


class TaskOwnership:
    def __init__(self, owners: TaskOwners, evidence: Evidence) -> None:
        self.owners = owners
        self.evidence = evidence

    async def on_request(self, call: Call) -> None:
        if call.method not in TASK_METHODS:
            return
        task_id = call.params.get("taskId")
        if self.owners.owns(call.server, call.principal.key, task_id):
            # a task's status and result are shown as the call that created it would be; policy decided
            # this poll as housekeeping, with a profile of its own
            mask = self.owners.mask_of(call.server, task_id)
            if call.decision is not None and mask is not UNKNOWN_MASK:
                call.decision = dataclasses.replace(call.decision, mask=mask)
            return
        await self.evidence.record("policy.denied", call, reason="task not owned", task=task_id)
        # a gateway task (one holding a call for approval) ends with the replica holding it: say what to do
        why = f": {TASK_ENDED}" if isinstance(task_id, str) and task_id.startswith(GATEWAY_TASK_PREFIX) else ""
        raise PolicyDenied(f"unknown task for this identity{why} (request id {call.request_id})",
                           data={"requestId": call.request_id, "reason": "task_not_owned"})


class TaskRecords:
    def __init__(self, owners: TaskOwners) -> None:
        self.owners = owners

    async def on_response(self, call: Call, response: Message) -> Message:
        result = response.get("result")
        if not isinstance(result, dict):
            return response
        if "task" in result:
            self.owners.record(call.server, call.principal.key, result, call.mask_profile)
        elif call.method == "tasks/list":
            return {**response, "result": self.owners.filter_list(call.server, call.principal.key, result)}
        return response
