"""No number changes on its way through the gateway's JSON codec (issue 20 item 7)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.errors import GatewayError
from ledgergate.wire import jsonrpc


@pytest.mark.parametrize("text", ["18446744073709551616", "-9223372036854775809", "1" + "0" * 40,
                                  "18446744073709551615", "-18446744073709551616", "9007199254740993"])
def test_integers_beyond_64_bits_stay_exact(text: str) -> None:
    body = f'{{"a":[{text}],"b":"{text}"}}'.encode()
    for data in (body, body.decode()):
        value = jsonrpc.parse(data)
        assert type(value["a"][0]) is int and value["a"][0] == int(text) and value["b"] == text
    assert jsonrpc.dumps(jsonrpc.loads(body)) == body


def test_deep_messages_are_written_and_too_deep_ones_refused() -> None:
    body = b"[" * 400 + b"1" + b"]" * 400  # an upstream's answer may nest deeper than a client's request
    assert jsonrpc.dumps(jsonrpc.parse(body)) == body  # orjson alone writes only 254 levels
    at_limit = b"[" * 128 + b"1" + b"]" * 128
    assert jsonrpc.dumps(jsonrpc.loads(at_limit)) == at_limit
    for depth in (129, 200, 600):  # the official Python SDK's servers drop 200 deep without an answer
        with pytest.raises(GatewayError, match="deeper than 128"):
            jsonrpc.loads(b'{"a":' * depth + b"1" + b"}" * depth)
    wide = b"[" + b",".join([b"[[1]]"] * 1000) + b"]"  # many brackets, little depth: accepted
    assert jsonrpc.loads(wide)[999] == [[1]]


def test_invalid_json_is_still_a_parse_error() -> None:
    for bad in (b'{"a":NaN, "b":18446744073709551616}', b'{"a":1e400}', b'{"a":18446744073709551616'):
        with pytest.raises(GatewayError, match="Parse error"):
            jsonrpc.loads(bad)


numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
values = st.recursive(numbers | st.text() | st.booleans() | st.none(),
                      lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                      max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_keeps_every_number(value: object) -> None:
    text = json.dumps(value).encode()
    back = jsonrpc.parse(jsonrpc.dumps(jsonrpc.parse(text)))
    assert json.dumps(back) == json.dumps(value)


@pytest.mark.parametrize("meta", [None, {}, {"progressToken": "p"}, {"progressToken": 7}, {"progressToken": 1.5},
                                  {"progressToken": None}])
def test_a_well_formed_or_absent_meta_passes_the_envelope(meta: object) -> None:
    assert jsonrpc.kind_of({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "_meta": meta}}) \
        == "request"


@pytest.mark.parametrize("meta", ["x", [1], 3, {"progressToken": {}}, {"progressToken": [1]}, {"progressToken": True}])
def test_a_malformed_meta_is_invalid_params(meta: object) -> None:
    with pytest.raises(GatewayError, match="Invalid params") as refused:
        jsonrpc.kind_of({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"_meta": meta}})
    assert refused.value.rpc_code == -32602
