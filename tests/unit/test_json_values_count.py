"""`offload.json_values` (the values of a JSON text, counted before it is parsed), `offload.ValuesInFlight`
(the values of large messages processed at once) and their settings, `limits.max_json_values` and
`limits.json_values_in_flight`."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import orjson
import pytest

from ledgergate.config import ConfigError, parse_config
from ledgergate.gateway.offload import ValuesInFlight, json_values

IDENTITY = "identity: {api_keys: true}\n"


def counted(value: Any) -> int:
    """What `json_values` counts exactly: every value, and every empty object or array once more."""
    if isinstance(value, dict | list):
        children = list(value.values() if isinstance(value, dict) else value)
        return 1 + (0 if children else 1) + sum(counted(c) for c in children)
    return 1


_PIECES = ["a", ",", "[", "{", "]", "}", '"', "\\", " ", "é", "\n", "\t", "x,", "\u2028", "\U0001f600"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 8)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rng.choice([0, -1.5, None, True, False, _text(rng)])
    if roll < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_the_count_is_exact_outside_strings_once_past_the_limit_and_never_below_the_values() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        value = _value(rng)
        exact = counted(value)
        for text in (orjson.dumps(value), json.dumps(value).encode(),
                     json.dumps(value, ensure_ascii=False, indent=2).encode()):
            assert json_values(text, 0) == exact, text  # past the limit: strings' commas and brackets left out
            assert json_values(text, 1 << 30) >= exact  # under it: the quick count, an upper bound


def test_strings_across_the_counting_slices_are_followed() -> None:
    value = {"code": ["for (a, b) in [{x}]:\\ \"q\", " * 5_000, "[{,"] * 40, "rows": [[] for _ in range(3_000)]}
    text = json.dumps(value).encode()
    assert len(text) > 5 * 64 * 1024
    assert json_values(text, 0) == counted(value) == 1 + 1 + 80 + 1 + 3_000 * 2


def test_a_csv_in_one_string_is_a_single_value_and_one_key_objects_are_two_each() -> None:
    csv = json.dumps({"csv": "1,2,3,4,5\n" * 200_000}).encode()
    assert json_values(csv, 500_000) == 2
    objects = b"[" + b",".join([b'{"a":0}'] * 300_000) + b"]"
    assert json_values(objects, 500_000) == 1 + 300_000 * 2  # the array, then each object and its value


@pytest.mark.parametrize("text", [
    b'"' + b'\\"' * 1_400_000,  # one string that never closes, a quote at every other byte
    b'\\"' * 1_400_000 + b"\\",
    b'"\\' * 1_400_000,
    b'[' + b'"",' * 1_398_000 + b'""]',
    b"[" + b'{"a":0},' * 524_000 + b"{}]",
])
def test_counting_a_hostile_4_mib_text_takes_one_pass(text: bytes) -> None:
    started = time.perf_counter()
    json_values(text, 0)
    assert time.perf_counter() - started < 0.5  # about 35 ms at worst here; a quadratic scan would take hours


def test_values_are_taken_waited_for_and_given_back() -> None:
    async def main() -> None:
        budget = ValuesInFlight(100)
        assert await budget.take(60, 0) and budget.used == 60
        assert not await budget.take(50, 0.05)  # no room within the wait
        waiting = asyncio.create_task(budget.take(50, 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        budget.give_back(60)
        assert await waiting and budget.used == 50
        assert await budget.take(50, 0) and budget.used == 100
        budget.give_back(0)
        budget.give_back(100)
        assert budget.used == 0

    asyncio.run(main())


def test_the_defaults_and_their_bounds() -> None:
    limits = parse_config(IDENTITY, "t.yaml", env={}).limits
    assert (limits.max_json_values, limits.json_values_in_flight) == (500_000, 750_000)
    raised = parse_config(IDENTITY + "limits: {max_json_values: 2000000, json_values_in_flight: 2000000}\n",
                          "t.yaml", env={}).limits
    assert (raised.max_json_values, raised.json_values_in_flight) == (2_000_000, 2_000_000)


@pytest.mark.parametrize(("text", "problem"), [
    ("limits: {json_values_in_flight: 400000}\n",
     ("line 2: limits.json_values_in_flight: must be at least limits.max_json_values (500000): a message at that "
      "cap would never fit")),
    ("limits:\n  max_json_values: 65535\n",
     "line 3: limits.max_json_values: Input should be greater than or equal to 65536"),
])
def test_settings_that_would_refuse_everything_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(IDENTITY + text, "t.yaml", env={})
    assert caught.value.problems == [problem]
