"""Our fast RFC 8785 path must produce the reference package's bytes exactly."""

from __future__ import annotations

import math

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgergate.audit import canonical

# RFC 8785 Appendix B / §3.2.2.3 number samples and §3.2.3 sorting example.
NUMBERS = [
    (0.0, b"0"), (-0.0, b"0"), (5e-324, b"5e-324"), (1.7976931348623157e308, b"1.7976931348623157e+308"),
    (9007199254740991.0, b"9007199254740991"), (1e21, b"1e+21"), (1e20, b"100000000000000000000"),
    (333333333.3333332, b"333333333.3333332"), (1e-7, b"1e-7"), (0.000001, b"0.000001"), (1.0, b"1"),
    (4.5, b"4.5"), (2e-3, b"0.002"), (0.000001e-1, b"1e-7"),
]


@pytest.mark.parametrize(("number", "text"), NUMBERS)
def test_numbers(number: float, text: bytes) -> None:
    assert canonical.dumps(number) == text
    assert canonical.dumps([number]) == b"[" + text + b"]"


def test_rfc8785_section_3_2_3_sorting() -> None:
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
             "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}
    got = canonical.dumps(value).decode()
    order = ["Carriage Return", "One", "Control", "Latin Small Letter O With Diaeresis", "Euro Sign",
             "Emoji: Grinning Face", "Hebrew Letter Dalet With Dagesh"]  # the order RFC 8785 §3.2.3 prints
    assert [got.index(v) for v in order] == sorted(got.index(v) for v in order)
    assert canonical.dumps(value) == rfc8785.dumps(value)


def test_rfc8785_example_structure() -> None:
    value = {"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"/", "literals": [None, True, False]}
    want = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
    assert canonical.dumps(value) == want


@pytest.mark.parametrize(("value", "text"), [
    (2**53 - 1, b"9007199254740991"),
    (-(2**53) + 1, b"-9007199254740991"),
    (2**53, b'{"$lg.int":"9007199254740992"}'),
    (2**64, b'{"$lg.int":"18446744073709551616"}'),
    (-(2**64) - 1, b'{"$lg.int":"-18446744073709551617"}'),
    (10**40, b'{"$lg.int":"1' + b"0" * 40 + b'"}'),
    (math.nan, b'{"$lg.float":"NaN"}'),
    (math.inf, b'{"$lg.float":"Infinity"}'),
    (-math.inf, b'{"$lg.float":"-Infinity"}'),
])
def test_what_i_json_cannot_carry_is_recorded_as_a_marker(value: object, text: bytes) -> None:
    """Issue 20 item 7: such values used to raise, so the call got a 500 and no record."""
    assert canonical.dumps(value) == text
    assert canonical.dumps({"args": {"n": [value]}}) == b'{"args":{"n":[' + text + b"]}}"


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_deep_values_are_recorded_to_a_digest() -> None:
    import hashlib

    import orjson

    shallow = nested(canonical.MAX_DEPTH - 1)
    assert canonical.dumps(shallow) == b"[" * (canonical.MAX_DEPTH - 1) + b"1" + b"]" * (canonical.MAX_DEPTH - 1)
    for depth in (canonical.MAX_DEPTH + 1, 1000, 5000):  # 5000: deeper than Python's recursion limit
        got = canonical.dumps(nested(depth))
        inner = nested(depth - canonical.MAX_DEPTH)
        digest = hashlib.sha256(b"[" * (depth - canonical.MAX_DEPTH) + b"1" + b"]" * (depth - canonical.MAX_DEPTH))
        marker = b'{"$lg.deep":"sha256:' + digest.hexdigest().encode() + b'"}'
        assert got == b"[" * canonical.MAX_DEPTH + marker + b"]" * canonical.MAX_DEPTH, depth
        assert orjson.loads(got)  # readable by a JSON parser with a depth limit of 1024
        assert inner is not None
    # the digest binds the deep part: a change far down changes the record
    assert canonical.dumps(nested(1000, 1)) != canonical.dumps(nested(1000, 2))


def test_markers_cannot_be_forged_by_input() -> None:
    """The encoding stays one-to-one: input shaped like a marker is escaped, so the HMAC of raw
    arguments never matches two different argument values."""
    assert canonical.dumps({"$lg.int": "18446744073709551616"}) == b'{"$lg.$lg.int":"18446744073709551616"}'
    assert canonical.dumps({"$lg.int": "18446744073709551616"}) != canonical.dumps(2**64)
    assert canonical.dumps({"$lg.$lg.int": 1}) == b'{"$lg.$lg.$lg.int":1}'
    assert canonical.dumps({"$lg.x": 1}) != canonical.dumps({"$lg.$lg.x": 1})
    assert canonical.dumps({"$schema": 1, "$lg": 2}) == b'{"$lg":2,"$schema":1}'  # only the "$lg." prefix
    key = b"k" * 32
    assert canonical.hmac_hex(key, {"a": 2**64}) != canonical.hmac_hex(key, {"a": {"$lg.int": str(2**64)}})


def test_non_json_values_still_fail() -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical.dumps({"x": object()})
    with pytest.raises(ValueError):
        canonical.dumps({1: "x", "a": 2**64})
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError):
        canonical.dumps(cycle)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8).filter(lambda k: not k.startswith("$lg.")), children, max_size=5),
    max_leaves=30,
)  # keys starting "$lg." are escaped on purpose (test_markers_cannot_be_forged_by_input)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_matches_reference(value: object) -> None:
    assert canonical.dumps(value) == rfc8785.dumps(value)


def test_hmac_is_over_canonical_bytes() -> None:
    import hashlib
    import hmac

    key = b"k" * 32
    assert canonical.hmac_hex(key, {"b": 1, "a": [1.0]}) == hmac.new(key, b'{"a":[1],"b":1}', hashlib.sha256).hexdigest()


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.floats(1e-6, 1e22) | st.integers(-(10**17), 10**17).map(float))
def test_floats_match_reference(value: float) -> None:
    assert canonical.dumps(value) == rfc8785.dumps(value)


any_key_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8).filter(lambda k: not k.startswith("$lg.")), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(any_key_values)
def test_slow_path_encoder_matches_reference(value: object) -> None:
    """Our iterative encoder (the path for what the fast one cannot take) is RFC 8785 too."""
    assert canonical._encode(value) == rfc8785.dumps(value)  # noqa: SLF001


# -- a value encoded ahead (`encoded`, off the ledger's writer) and spliced into its record

marker_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
    | st.sampled_from(["$lg.", '"$lg.int"', "\ud7ff\ue000"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["$lg.int", "$lg.deep", "\U0001f600", "\ue000"]),
                      children, max_size=4),
    max_leaves=25,
)  # big integers, NaN, "$lg." keys and keys beyond U+D800: every route `dumps` has


@settings(max_examples=500, deadline=None)
@given(marker_values, marker_values)
def test_a_value_encoded_ahead_gives_its_record_the_same_bytes(args: object, other: object) -> None:
    record = {"event": "rpc.request", "args": args, "other": other, "seq": 7}
    ahead = {**record, "args": canonical.encoded(args, 1)}
    assert canonical.dumps(ahead) == canonical.dumps(record)
    nested_record = {"event": "rpc.response", "response": {"content": args}}
    nested_ahead = {"event": "rpc.response", "response": {"content": canonical.encoded(args, 2)}}
    assert canonical.dumps(nested_ahead) == canonical.dumps(nested_record)


@pytest.mark.parametrize("depth", [canonical.MAX_DEPTH - 3, canonical.MAX_DEPTH - 1, canonical.MAX_DEPTH,
                                   canonical.MAX_DEPTH + 2, 900])
def test_a_deep_value_encoded_ahead_is_cut_to_a_digest_where_its_record_would_cut_it(depth: int) -> None:
    """The `$lg.deep` marker replaces a container at a depth counted from the record: a value encoded on its
    own must be cut at the same place as inside its record."""
    value = nested(depth)
    for at in (1, 2, 3):
        record: object = value
        ahead: object = canonical.encoded(value, at)
        for _ in range(at):
            record, ahead = {"k": record}, {"k": ahead}
        assert canonical.dumps(ahead) == canonical.dumps(record), (depth, at)
