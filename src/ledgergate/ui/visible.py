"""Text from outside (a requester's arguments and justification, an approver's reason, a tool's
name) as the console may show it: every character that changes how the rest reads without being
seen itself is made visible.

A requester chooses the arguments an approver reads. A right-to-left override turned
`"\u202e1002-A\u202c"` into `A-2001` on screen while `1002-A` was what would run; zero-width and
other format characters hide text the same way. HTML escaping does nothing about them. Pure; no I/O.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

#: control, format (bidi overrides and isolates, zero-width characters), private-use, surrogate and
#: unassigned code points, and the Unicode line and paragraph separators
_HIDDEN = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})


def _hidden(ch: str) -> bool:
    return ch not in "\n\t" and (not (" " <= ch <= "~")) and unicodedata.category(ch) in _HIDDEN


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
