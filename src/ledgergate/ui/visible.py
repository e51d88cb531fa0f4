"""Text from outside (a requester's arguments and justification, an approver's reason, a tool's
name) as the console may show it: every character that changes how the rest reads without being
seen itself is made visible.

A requester chooses the arguments an approver reads. A right-to-left override turned
`"\u202e1002-A\u202c"` into `A-2001` on screen while `1002-A` was what would run; zero-width and
other format characters hide text the same way, and so do variation selectors, the combining grapheme
joiner, Hangul fillers and the other default-ignorable characters a browser draws as nothing. HTML
escaping does nothing about them. Which characters are hidden is defined once, in `ledgergate.invisible`
(also what policy refuses in a tool or prompt name). Pure; no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from ledgergate.invisible import hidden


def _hidden(ch: str) -> bool:
    """Hidden (`ledgergate.invisible`), but for the newline and tab a display keeps."""
    return ch not in "\n\t" and hidden(ch)


def shown(text: str) -> str:
    """`text` with each hidden character written as `[U+XXXX]` (newlines and tabs kept)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(f"[U+{ord(ch):04X}]" if _hidden(ch) else ch for ch in text)


def pretty_json(value: Any) -> str:
    """Indented JSON for reading, with hidden characters as JSON escapes (`\\u202e`): still the same
    JSON, and what an approver reads is what will run."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if text.isascii():
        return text
    return "".join(_escape(ch) if _hidden(ch) else ch for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON writes a code point beyond the BMP as its UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
