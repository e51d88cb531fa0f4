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


def test_unsafe_values_go_to_the_reference() -> None:
    with pytest.raises(Exception):
        canonical.dumps(2**53)
    with pytest.raises(Exception):
        canonical.dumps(math.nan)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


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
