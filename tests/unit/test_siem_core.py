"""The SIEM export's pure parts: the state file round trip and its refusals, syslog framing."""

from __future__ import annotations

import pytest

from ledgergate.audit import merkle
from ledgergate.audit.siem import Cursor, VerifiedRecord, dump_state, octet_counted, parse_state, syslog_message


def _cursor(n: int) -> Cursor:
    tree = merkle.CompactRange()
    for i in range(n):
        tree.append(merkle.leaf_hash(b"r%d" % i))
    return Cursor("gw-0", "ledgergate/gw-0", n, list(tree.edge))


@pytest.mark.parametrize("n", [0, 1, 7, 1024, 1025])
def test_state_round_trip(n: int) -> None:
    cursors = {"gw-0": _cursor(n)}
    back = parse_state(dump_state(cursors))
    assert back == cursors
    assert back["gw-0"].tree().root() == cursors["gw-0"].tree().root()


@pytest.mark.parametrize(("text", "problem"), [
    (b"{", "not JSON"),
    (b'{"version": 2, "logs": {}}', "expected"),
    (b'{"version": 1, "logs": {"a": {"origin": "o", "next": -1, "edge": []}}}', "needs"),
    (b'{"version": 1, "logs": {"a": {"origin": "o", "next": 3, "edge": ["00"]}}}', "does not fit a tree of 3"),
    (b'{"version": 1, "logs": {"a": {"origin": "o", "next": 1, "edge": ["zz"]}}}', "hex"),
])
def test_state_refusals(text: bytes, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_state(text)
    assert problem in str(err.value)


def test_syslog_message_carries_the_record_unchanged() -> None:
    record = b'{"event":"rpc.request","log":"gw-0","seq":4,"time":"2026-11-26T01:00:00.123456Z","v":1}'
    rec = VerifiedRecord(4, record, "2026-11-26T01:00:00.123456Z", "rpc.request")
    message = syslog_message(rec, "gw host\n", 42)
    assert message == b"<134>1 2026-11-26T01:00:00.123456Z gwhost ledgergate 42 rpc.request - " + record
    assert octet_counted(message) == str(len(message)).encode() + b" " + message
    odd = VerifiedRecord(4, record, "yesterday", "")
    assert syslog_message(odd, "", 1).startswith(b"<134>1 - - ledgergate 1 - - ")
