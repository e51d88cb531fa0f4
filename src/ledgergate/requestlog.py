"""The request id of the call being served, for log lines.

Set once per call where the data path starts running it (`Pipeline.handle`); the JSON log
formatter adds it to every line written in that task and in the tasks it starts, so an operator
can go from the id a caller quotes to the gateway's log lines and the ledger's records.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("ledgergate_request_id", default=None)
