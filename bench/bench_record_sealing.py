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

async def new(n):
    for _ in range(n):
        c = Call(server="everything", principal=P, message=msg)
        await ev.record("rpc.request", c, with_args=True, rule="r", decision="allow")
        view, _ = ev.mask(resp)
        await ev.record("rpc.response", c, premasked={"response": view}, latency_ms=1.0, masked={})

async def old(n):  # what the previous code did: args and response masked, the rest written as is
    for _ in range(n):
        c = Call(server="everything", principal=P, message=msg)
        base = ev.base(c); base.update(ev.args(c.arguments)); base.update(rule="r", decision="allow")
        await ev.ledger.append("rpc.request", base)
        view, _ = ev.mask(resp)
        base = ev.base(c); base.update(latency_ms=1.0, masked={}, response=view)
        await ev.ledger.append("rpc.response", base)

async def main():
    n = 5000
    best = {"old": 1e9, "new": 1e9}
    for _ in range(15):
        for name, fn in [("old", old), ("new", new)]:
            t = time.perf_counter(); await fn(n); dt = (time.perf_counter() - t) / n * 1e6
            best[name] = min(best[name], dt)
    print({k: round(v, 1) for k, v in best.items()}, "us per call (two records), best of 15 alternating runs")
asyncio.run(main())

