"""Bodies that parse into far more memory than their size, through a real gateway (`ledgergate serve`) in
front of server-everything, with real OIDC tokens: `limits.max_json_values` and `limits.json_values_in_flight`.

A 4 MiB body of one-key objects (`[{"a":0},{"a":0},...]`, 524,000 of them) took the gateway up 300 MB, and
eight at once 1.2 GB (docs/security.md §2, measured before these limits). Now such a body is refused 413
before it is parsed, and the messages under the cap are processed at most 750,000 values at a time, so eight
at once stay within a few hundred MB. Legitimate large messages (a 3 MiB base64 file, 5,000 records, a CSV
of half a million commas in one string) pass as before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import gateway as gw
from tests.support.oidc import Provider
from tests.support.procs import Proc

pytestmark = [pytest.mark.node, pytest.mark.timeout(300)]

POLICIES = [{"name": "staff", "match": {"groups": ["staff"], "servers": ["everything"]}, "effect": "allow",
             "mask": "standard"}]
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
MAX_BODY = 4 * 1024 * 1024  # the default `limits.max_body_bytes`
MAX_VALUES = 500_000  # the default `limits.max_json_values`
#: in a body refused for its values; it must appear in no answer, log line or record
MARKER = "zq-body-marker-5d1c"
MB = 1024 * 1024


def call(rpc_id: int, tool: str, args: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call",
                         "params": {"name": tool, "arguments": args, "_meta": META}})


def headers(tool: str = "echo") -> dict[str, str]:
    return {**HEADERS, "Mcp-Name": tool}


def json_values(body: bytes) -> int:
    """What the gateway counts in a body whose strings hold no `,`, `[` or `{` (these tests' own)."""
    return len(body) - len(body.translate(None, b",[{")) + 1


def one_key_objects(rpc_id: int, *, size: int | None = None, values: int | None = None) -> bytes:
    """A `tools/call` of `echo` whose arguments hold one-key objects, the shape that took the most memory a
    value: as many as fit in `size` bytes, or as make `values` values in all."""
    head, tail = call(rpc_id, "echo", {"message": MARKER, "items": "@"}).split(b'"@"')
    if size is not None:
        count = (size - len(head) - len(tail) - 1) // 8
    else:
        assert values is not None
        count = (values - json_values(head + b"[]" + tail)) // 2
    body = head + b"[" + b",".join([b'{"a":0}'] * count) + b"]" + tail
    assert size is None or len(body) <= size
    assert values is None or json_values(body) <= values
    return body


def rss_mb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the process, in MiB: its resident memory now and at its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def start(directory: Path, idp: Provider, upstream: Proc, limits: dict[str, Any] | None = None) -> gw.RunningGateway:
    extra: dict[str, Any] = {"audit": {"signing_key": "./data/ledger.key", "checkpoint_interval": "1h"}}
    if limits:
        extra["limits"] = limits
    return gw.start(directory, idp.issuer, {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}},
                    POLICIES, extra)


async def post_all(running: gw.RunningGateway, token: str, bodies: list[bytes]) -> list[httpx.Response]:
    """Every body POSTed at once, each on its own connection."""
    async def one(body: bytes) -> httpx.Response:
        async with running.http(token) as http:
            return await http.post(running.url("everything"), headers=headers(), content=body, timeout=120)
    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def small_call(running: gw.RunningGateway, token: str) -> None:
    async with running.http(token) as http:
        r = await http.post(running.url("everything"), headers=headers(), content=call(1, "echo", {"message": "hi"}))
        assert r.status_code == 200 and "Echo: hi" in r.text, r.text[:300]


async def test_eight_worst_case_bodies_at_once_keep_the_gateways_memory_bounded(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    running = await asyncio.to_thread(start, tmp_path, idp, upstream)  # default limits
    token = idp.token("alice", ["staff"])
    pid = running.proc.proc.pid
    try:
        for _ in range(5):  # warm: the token cached, the upstream session open
            await small_call(running, token)
        base, _ = rss_mb(pid)

        # eight bodies of the maximum size, each 1,048,000 values: refused unparsed, named, at once. Before
        # the limit each was parsed and processed: 1.2 GB and 39 s for the eight
        worst = [one_key_objects(10 + i, size=MAX_BODY) for i in range(8)]
        began = time.perf_counter()
        answers = await post_all(running, token, worst)
        took = time.perf_counter() - began
        _, peak = rss_mb(pid)
        # the eight bodies themselves are 32 MB, held while read and counted (measured: 42-65 MB)
        assert peak - base < 150, f"eight 4 MiB bodies took the gateway up {peak - base} MB in {took:.1f} s"
        for r in answers:
            assert r.status_code == 413, (r.status_code, r.text[:300])
            error = r.json()["error"]
            assert error["message"] == ("Payload Too Large: the message holds more than 500000 JSON values "
                                        "(limits.max_json_values)")
            assert error["data"] == {"reason": "max_json_values", "maxJsonValues": MAX_VALUES}
            assert MARKER not in r.text
        assert took < 20, took

        # eight messages just under the cap (2 MB, 500,000 values each): processed, at most 750,000 values of
        # them at a time, the others waiting; one that waits past 10 s is told to come back. Without the
        # budget the eight took the gateway up 630 MB (measured: 190-250 MB with it)
        at_cap = [one_key_objects(30 + i, values=MAX_VALUES) for i in range(8)]
        answers = await post_all(running, token, at_cap)
        _, peak = rss_mb(pid)
        assert peak - base < 300, f"eight messages at the cap took the gateway up {peak - base} MB"
        served = [r for r in answers if r.status_code == 200]
        for r in answers:
            if r.status_code == 200:
                assert "Echo: " + MARKER in r.text, r.text[:300]
            else:
                assert r.status_code == 503, (r.status_code, r.text[:300])
                assert r.headers["retry-after"] == "5"
                assert r.json()["error"]["data"] == {"reason": "json_values_in_flight", "retryAfter": 5}
        assert len(served) >= 2, [r.status_code for r in answers]

        # every value was given back: a message at the cap alone is served at once, and so is a small call
        began = time.perf_counter()
        [alone] = await post_all(running, token, [one_key_objects(50, values=MAX_VALUES)])
        assert alone.status_code == 200 and time.perf_counter() - began < 8, alone.text[:300]
        await small_call(running, token)
    finally:
        await asyncio.to_thread(running.stop)

    assert MARKER not in running.log()
    docs = running.records()
    refused = [d for d in docs if d["event"] == "request.refused"]
    too_many = [d for d in refused if d["status"] == 413]
    assert len(too_many) == 8, refused
    for d in too_many:
        assert d["error"].endswith("(limits.max_json_values)") and d["principal"]["subject"] == "alice"
        assert d["server"] == "everything" and d["code"] == -32600
    assert len([d for d in refused if d["status"] == 503]) == 8 - len(served)
    assert MARKER not in json.dumps([d for d in docs if d["event"] != "rpc.request" and d["event"] != "rpc.response"])


async def test_legitimate_large_messages_pass(tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    running = await asyncio.to_thread(start, tmp_path, idp, upstream)  # default limits
    blob = base64.b64encode(os.urandom(3 * MB * 3 // 4)).decode()  # a 3 MiB base64 string: two values
    assert len(blob) == 3 * MB
    records_ = [{"id": i, "name": f"customer {i}", "city": "Zurich", "balance": i * 10.5, "active": i % 2 == 0,
                 "tags": ["retail", "eu"], "opened": "2024-01-01", "segment": "A", "score": 0.5, "notes": None}
                for i in range(5_000)]
    csv = "".join(f"{i},{i * 2},x,y,z,{i % 7}\n" for i in range(120_000))  # 600,000 commas, in one string
    assert csv.count(",") > MAX_VALUES
    try:
        async with running.http(idp.token("alice", ["staff"])) as http:
            r = await http.post(running.url("everything"), headers=headers(), content=call(1, "echo", {"message": blob}))
            assert r.status_code == 200, r.text[:300]
            assert r.json()["result"]["content"][0]["text"] == "Echo: " + blob

            body = call(2, "echo", {"message": "records", "records": records_})
            assert json_values(body) > 60_000
            r = await http.post(running.url("everything"), headers=headers(), content=body)
            assert r.status_code == 200 and "Echo: records" in r.text, r.text[:300]

            r = await http.post(running.url("everything"), headers=headers(), content=call(3, "echo", {"message": csv}))
            assert r.status_code == 200, r.text[:300]
            assert r.json()["result"]["content"][0]["text"] == "Echo: " + csv
    finally:
        await asyncio.to_thread(running.stop)


async def test_a_large_message_finding_no_room_waits_then_is_told_to_retry_and_small_ones_pass(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    limits = {"max_json_values": 100_000, "json_values_in_flight": 100_000}
    running = await asyncio.to_thread(start, tmp_path, idp, upstream, limits)
    token = idp.token("alice", ["staff"])
    pad = [{"a": i} for i in range(30_000)]  # 60,000 values
    try:
        async with running.http(token) as http, running.http(token) as other:
            slow = asyncio.create_task(http.post(
                running.url("everything"), headers=headers("trigger-long-running-operation"), timeout=60,
                content=call(1, "trigger-long-running-operation", {"duration": 13, "steps": 2, "pad": pad})))
            await asyncio.sleep(1.5)  # its values are taken while it runs
            # a small call, and a large message of few values (a 1 MiB string), are not held up
            began = time.perf_counter()
            r = await other.post(running.url("everything"), headers=headers(),
                                 content=call(2, "echo", {"message": "x" * MB}))
            assert r.status_code == 200 and time.perf_counter() - began < 3, r.text[:300]
            await small_call(running, token)
            # a second message of many values waits 10 s for room, then is told to come back
            began = time.perf_counter()
            r = await other.post(running.url("everything"), headers=headers(), timeout=60,
                                 content=call(3, "echo", {"message": "second", "pad": pad}))
            waited = time.perf_counter() - began
            assert r.status_code == 503, r.text[:300]
            assert 9 < waited < 12, waited
            assert r.headers["retry-after"] == "5"
            error = r.json()["error"]
            assert "limits.json_values_in_flight" in error["message"] and error["code"] == -32014
            assert r.json()["id"] is None
            first = await slow
            assert first.status_code == 200, first.text[:300]
            # the first gave its values back: the second goes through now
            r = await other.post(running.url("everything"), headers=headers(),
                                 content=call(4, "echo", {"message": "second", "pad": pad}))
            assert r.status_code == 200 and "Echo: second" in r.text, r.text[:300]
    finally:
        await asyncio.to_thread(running.stop)
    refused = [d for d in running.records() if d["event"] == "request.refused"]
    assert [(d["status"], d["code"], d["reason"]) for d in refused] == [(503, -32014, "json_values_in_flight")], refused
    assert "limits.json_values_in_flight" in refused[0]["error"]


async def endpoint_of(stream: httpx.Response) -> tuple[str, Any]:
    lines = stream.aiter_lines()
    async for line in lines:
        if line.startswith("data: "):
            return line[6:], lines
    raise AssertionError("no endpoint event")


async def test_the_legacy_transport_refuses_too_many_values_too(
        tmp_path: Path, idp: Provider, upstream: Proc) -> None:
    running = await asyncio.to_thread(start, tmp_path, idp, upstream)
    try:
        async with running.http(idp.token("alice", ["staff"])) as http, http.stream(
                "GET", f"{running.url('everything')}/sse", headers={"Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            endpoint, _lines = await endpoint_of(stream)
            r = await http.post(f"{running.base}{endpoint}", content=one_key_objects(1, size=MAX_BODY),
                                headers={"Content-Type": "application/json"})
            assert r.status_code == 413, r.text[:300]
            assert r.json()["error"]["data"] == {"reason": "max_json_values", "maxJsonValues": MAX_VALUES}
            assert MARKER not in r.text
            hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "1"}}}
            r = await http.post(f"{running.base}{endpoint}", json=hello)
            assert r.status_code == 202, r.text[:300]
            large = call(2, "echo", {"message": "y" * 100_000, "pad": [{"a": i} for i in range(20_000)]})
            r = await http.post(f"{running.base}{endpoint}", content=large, headers={"Content-Type": "application/json"})
            assert r.status_code == 202, r.text[:300]  # counted, taken, answered on the stream, given back
    finally:
        await asyncio.to_thread(running.stop)
    refused = [d for d in running.records() if d["event"] == "request.refused"]
    assert [(d["status"], d["http_method"]) for d in refused] == [(413, "POST")], refused
    assert refused[0]["error"].endswith("(limits.max_json_values)")
