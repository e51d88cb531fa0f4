"""In-process cost of writing the two records of one call (rpc.request, rpc.response) through `Evidence`:
the previous way (arguments and result masked, every other field written as given) against whole-record
sealing (every field masked, short repeated fields remembered). No I/O: the ledger is a no-op.

    .venv/bin/python bench/bench_record_sealing.py
"""
import asyncio, time
from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import Evidence
from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings
from ledgergate.principal import Principal

class L:
    async def append(self, e, f): return 0

M = Masker.from_settings(MaskingSettings())
P = Principal("https://idp", "alice", "human", frozenset({"staff"}))
msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hello world"}}}
resp = {"content": [{"type": "text", "text": "Echo: hello world"}]}
ev = Evidence(L(), M, lambda v: "d")


# The Evidence of the commit before whole-record sealing: the same common fields and masked arguments
# (inherited), but every other field written as given, not sealed.
from collections.abc import Mapping
from typing import Any


class OldEvidence(Evidence):
    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        return await self.ledger.append(event, fields)

    async def record(self, event: str, call: Call, *, method: str | None = None, with_args: bool = False,
                     **fields: Any) -> int:
        """One record about `call`: its ids, principal, server, method and target, then `fields`."""
        base = self.base(call, method)
        if with_args:
            base.update(self.args(call.arguments))
        base.update(fields)
        return await self.ledger.append(event, base)


old_ev = OldEvidence(L(), M, lambda v: "d")

async def new(n):
    for _ in range(n):
        c = Call(server="everything", principal=P, message=msg)
        await ev.record("rpc.request", c, with_args=True, rule="r", decision="allow")
        view, _ = ev.mask(resp)
        await ev.record("rpc.response", c, premasked={"response": view}, latency_ms=1.0, masked={})

async def old(n):  # the previous AuditRequest and AuditResponse records
    for _ in range(n):
        c = Call(server="everything", principal=P, message=msg)
        await old_ev.record("rpc.request", c, with_args=True, rule="r", decision="allow")
        view, _ = old_ev.mask(resp)
        await old_ev.record("rpc.response", c, latency_ms=1.0, masked={}, response=view)


async def main():
    n = 5000
    best = {"old": 1e9, "new": 1e9}
    for _ in range(15):
        for name, fn in [("old", old), ("new", new)]:
            t = time.perf_counter(); await fn(n); dt = (time.perf_counter() - t) / n * 1e6
            best[name] = min(best[name], dt)
    print({k: round(v, 1) for k, v in best.items()}, "us per call (two records), best of 15 alternating runs")
asyncio.run(main())

