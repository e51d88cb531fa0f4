"""Which characters a reader does not see: the one definition used wherever outside text is shown to a
person (the console and the CLI, `ui/visible.py`) and where a name must read as what it is
(`policy/rules.py::name_problem`: a tool or prompt name holding one is refused). Pure; no I/O.

A character is hidden when it draws no visible mark of its own, or a mark indistinguishable from
something else:

- by general category: Cc (controls), Cf (format: bidi controls, zero-width characters, tags),
  Cs (lone surrogates), Co (private use: no agreed glyph), Cn (unassigned in this Python's Unicode
  database, which may be older than the reader's fonts), Zl and Zp (line and paragraph separators),
  and Zs other than U+0020 (no-break, en, em, thin, ideographic … spaces, which read as a plain space);
- Default_Ignorable_Code_Point, which Python's `unicodedata` does not expose, from the table below:
  what a renderer draws as nothing (The Unicode Standard, §5.21 "Ignoring Characters in Processing";
  UAX #44). It is derived (DerivedCoreProperties.txt) as Other_Default_Ignorable_Code_Point + Cf +
  Variation_Selector − White_Space − U+FFF9..FFFB − U+13430..1343F − Prepended_Concatenation_Mark; the
  Cf part is already hidden by category, the rest are marks and letters that draw nothing: variation
  selectors (Mn), U+034F COMBINING GRAPHEME JOINER (Mn), the Mongolian free variation selectors and Khmer
  inherent vowels (Mn), the Hangul fillers (Lo), and reserved code points kept for future ignorables;
- blank glyphs that are neither: U+2800 BRAILLE PATTERN BLANK and U+1D159 MUSICAL SYMBOL NULL NOTEHEAD
  (So), drawn as an empty cell, and used as "invisible" letters for exactly that reason.

Tab and newline are controls and so hidden here; a display may keep them (`ui/visible.py` does).
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right

#: general categories whose characters are hidden (Zs: all but U+0020, which `hidden` never reports)
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})

#: Default_Ignorable_Code_Point, inclusive ranges, as DerivedCoreProperties.txt lists it (Unicode 14.0
#: through 16.0; U+180F was the last addition, in 14.0)
DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),    # Cf  SOFT HYPHEN
    (0x034F, 0x034F),    # Mn  COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),    # Cf  ARABIC LETTER MARK
    (0x115F, 0x1160),    # Lo  HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),    # Mn  KHMER VOWEL INHERENT AQ, AA
    (0x180B, 0x180D),    # Mn  MONGOLIAN FREE VARIATION SELECTOR ONE..THREE
    (0x180E, 0x180E),    # Cf  MONGOLIAN VOWEL SEPARATOR
    (0x180F, 0x180F),    # Mn  MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x200B, 0x200F),    # Cf  ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),    # Cf  LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),    # Cf  WORD JOINER..INVISIBLE PLUS
    (0x2065, 0x2065),    # Cn  <reserved>
    (0x2066, 0x206F),    # Cf  LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0x3164, 0x3164),    # Lo  HANGUL FILLER
    (0xFE00, 0xFE0F),    # Mn  VARIATION SELECTOR-1..16
    (0xFEFF, 0xFEFF),    # Cf  ZERO WIDTH NO-BREAK SPACE
    (0xFFA0, 0xFFA0),    # Lo  HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),    # Cn  <reserved>
    (0x1BCA0, 0x1BCA3),  # Cf  SHORTHAND FORMAT LETTER OVERLAP..UP STEP
    (0x1D173, 0x1D17A),  # Cf  MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0000, 0xE0000),  # Cn  <reserved>
    (0xE0001, 0xE0001),  # Cf  LANGUAGE TAG
    (0xE0002, 0xE001F),  # Cn  <reserved>
    (0xE0020, 0xE007F),  # Cf  TAG SPACE..CANCEL TAG
    (0xE0080, 0xE00FF),  # Cn  <reserved>
    (0xE0100, 0xE01EF),  # Mn  VARIATION SELECTOR-17..256
    (0xE01F0, 0xE0FFF),  # Cn  <reserved>
)

#: drawn as an empty cell though neither a space nor default-ignorable
BLANK_GLYPHS = frozenset({0x2800, 0x1D159})

_STARTS = tuple(start for start, _ in DEFAULT_IGNORABLE)
_ENDS = tuple(end for _, end in DEFAULT_IGNORABLE)


def default_ignorable(code: int) -> bool:
    """Whether code point `code` is Default_Ignorable_Code_Point."""
    i = bisect_right(_STARTS, code) - 1
    return i >= 0 and code <= _ENDS[i]


def hidden(ch: str) -> bool:
    """Whether the one character `ch` is not seen as itself by a reader (see the module's docstring)."""
    if " " <= ch <= "~":
        return False
    code = ord(ch)
    return unicodedata.category(ch) in HIDDEN_CATEGORIES or default_ignorable(code) or code in BLANK_GLYPHS


def first_hidden(text: str) -> str | None:
    """The first hidden character of `text`, or None."""
    if text.isascii() and text.isprintable():
        return None
    return next((ch for ch in text if hidden(ch)), None)


def escaped(text: str, limit: int) -> str:
    """`text` for a terminal: at most `limit` characters (then "…"), each control or hidden one written as its
    Python escape (`\\x1b`, `\\u200b`), so what an outsider wrote can neither steer the screen nor hide."""
    shown = "".join(ch.encode("unicode_escape").decode("ascii") if not ch.isprintable() or hidden(ch) else ch
                    for ch in text[:limit])
    return shown + ("…" if len(text) > limit else "")


def json_visible(text: str) -> str:
    """A JSON text (a record) for a terminal: every control or hidden character written as its JSON escape
    (`\\u202e`, a pair for one beyond the BMP). The result parses to the same value, so a pipe to `jq` reads
    what the ledger holds, and a caller's bidi override cannot reorder what a person reads."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() and not hidden(ch):
            out.append(ch)
        elif ord(ch) > 0xFFFF:
            code = ord(ch) - 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


__all__ = ["BLANK_GLYPHS", "DEFAULT_IGNORABLE", "HIDDEN_CATEGORIES", "default_ignorable", "escaped", "first_hidden",
           "hidden", "json_visible"]
