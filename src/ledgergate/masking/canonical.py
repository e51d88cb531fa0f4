"""The canonical form text is matched in, and the way back to the original characters.

Why: a careless or hostile upstream can write `０７８-０５-１１２０` (full-width), put a
zero-width space between two digits, use an en dash or Arabic-Indic digits; none of
that changes what a person reads, so none of it may change what the scanner finds.
Text is matched after NFKC (compatibility forms become their plain letters and
digits), with invisible format characters removed, every decimal digit of any
script mapped to its ASCII digit and every dash to '-'. A finding in the canonical
text is mapped back to the original span — the whole of it, including any invisible
characters inside — so the masked output covers exactly what the client would have
seen.

Speed: most text is ASCII (nothing to do, one C-level check) or already canonical
(two C-level checks); only text that really needs it pays for the per-character map.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["Canonical", "canonicalize"]

# Invisible characters: every format character (Unicode category Cf: zero-width space,
# joiners, bidi controls, soft hyphen, BOM, tag characters, ...) and the invisible
# fillers and variation selectors that are not Cf.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F), (0xE0100, 0xE01EF),
)
_INVISIBLE_CLASS = "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in _INVISIBLE_RANGES)
_INVISIBLE = frozenset(chr(c) for a, b in _INVISIBLE_RANGES for c in range(a, b + 1))
_DASHES = ("\u058a\u05be\u1400\u1806\u2010-\u2015\u2212\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d\u301c\u3030"
           "\ufe31\ufe32\ufe58\ufe63\uff0d")
_DASH_SET = frozenset(re.sub(r"(.)-(.)", lambda m: "".join(chr(c) for c in range(ord(m[1]), ord(m[2]) + 1)), _DASHES))
# Anything the cheap path cannot leave as it is: invisibles, dashes, non-ASCII digits.
_ODD = re.compile(f"[{_INVISIBLE_CLASS}{_DASHES}]|(?=\\d)[^\\x00-\\x7f]")


class Canonical:
    """Canonical text plus, per canonical character, the original span it came from."""

    __slots__ = ("_ends", "_starts", "text")

    def __init__(self, text: str, starts: list[int], ends: list[int]) -> None:
        self.text = text
        self._starts = starts
        self._ends = ends

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original [start, end) that canonical [start, end) was made from (end > start)."""
        return self._starts[start], self._ends[end - 1]


def _plain(ch: str) -> str:
    if ch in _DASH_SET:
        return "-"
    if not ch.isascii() and ch.isdecimal():
        return str(unicodedata.decimal(ch))
    return ch


def canonicalize(text: str) -> Canonical | None:
    """The canonical form of a non-ASCII `text`, or None when it is already canonical."""
    if _ODD.search(text) is None and unicodedata.is_normalized("NFKC", text):
        return None
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch in _INVISIBLE:
            i += 1
            continue
        j = i + 1
        # a base character and its combining marks normalise together (e + U+0301 -> é)
        while j < n and (unicodedata.combining(text[j]) or text[j] in _INVISIBLE):
            j += 1
        chunk = text[i:j]
        if j - i > 1:
            chunk = "".join(c for c in chunk if c not in _INVISIBLE)
        for c in unicodedata.normalize("NFKC", chunk):
            out.append(_plain(c))
            starts.append(i)
            ends.append(j)
        i = j
    # Invisible characters between two kept ones belong to the span that ends after them,
    # so a finding covers them too: extend each end over the invisibles that follow it.
    for k in range(len(ends)):
        e = ends[k]
        while e < n and text[e] in _INVISIBLE:
            e += 1
        ends[k] = e
    return Canonical("".join(out), starts, ends)
