"""Numbers written by someone else (query parameters, headers, config, event fields).

Only ASCII digits are digits here: `str.isdigit()` is true for '²' and '١', `int()` takes
'١٢' as 12 and fails on '²' with a message that quotes Python, and a 5,000-digit string
costs a quadratic conversion before failing. One parser, bounded in length, answers None
for anything else, so each caller says what was wrong in its own words.
"""

from __future__ import annotations

#: 18 digits are below 2**63, the range every store and protocol here uses
MAX_DIGITS = 18


def parse_uint(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of a non-negative decimal integer in ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
