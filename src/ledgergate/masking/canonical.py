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

Escapes are a second disguise of the same kind: `4111%201111...` in a URL,
`078&#45;05&#45;1120` in HTML or `4111\\n1111...` in JSON-as-text read as plain digits
to anyone who decodes them, and every client does. `decode_escapes` gives that decoded
reading, canonicalised as above, with the same map back to the original characters;
the engine scans it *as well as* the text as written (a decoded `%2F` could otherwise
end a URL's authority early and leave the rest of a password bare).

Speed: most text is ASCII (nothing to do, one C-level check) or already canonical
(two C-level checks); only text that really needs it pays for the per-character map.
Text with no '%', '&' or '\\' never reaches the escape decoder.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from html.entities import html5 as _HTML5_REFERENCES

__all__ = ["Canonical", "canonicalize", "decode_escapes", "may_have_escapes"]

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
# Dashes and minus signs, folded wherever they stand: each reads as '-' and none is common enough
# in ordinary text for the slow path to matter (U+02D7 modifier minus, U+2043 hyphen bullet and
# U+2796 heavy minus were added after an outside probe; U+FE58/FE63/FF0D also fold through NFKC).
_DASHES = ("\u02d7\u058a\u05be\u1400\u1806\u2010-\u2015\u2043\u2212\u2796\u2e17\u2e1a\u2e3a\u2e3b\u2e40"
           "\u2e5d\u301c\u3030\ufe31\ufe32\ufe58\ufe63\uff0d")
_DASH_SET = frozenset(re.sub(r"(.)-(.)", lambda m: "".join(chr(c) for c in range(ord(m[1]), ord(m[2]) + 1)), _DASHES))
# Look-alikes of the ASCII separators (an outside probe wrote `078・05・1120`), in two kinds.
# Rare in ordinary text, so folded wherever they stand, like the dashes: math operators and
# punctuation that read as a tilde, asterisk, colon, bar, slash or dot.
_FOLDS = {
    "\u223c": "~", "\u2053": "~",                                             # ∼ ⁓
    "\u2217": "*", "\u066d": "*",                                             # ∗ ٭
    "\u2236": ":", "\ua789": ":",                                             # ∶ ꞉
    "\u2223": "|",                                                             # ∣
    "\u2044": "/", "\u2215": "/",                                             # ⁄ ∕
    "\u2027": ".", "\u2219": ".", "\u22c5": ".", "\u2e31": ".", "\u2e33": ".",  # ‧ ∙ ⋅ ⸱ ⸳
}
_PLAIN = {**dict.fromkeys(_DASH_SET, "-"), **_FOLDS}
# Common in ordinary text, so folded only where they join an ASCII digit to an ASCII letter or
# digit (`０７８ー０５ー１１２０`, `GB82・WEST・…`): the katakana prolonged sound mark `ー` (U+30FC;
# half-width U+FF70 is it after NFKC) is in most Japanese loanwords, the katakana middle dot `・`
# joins Japanese words, the middle dot `·` Catalan letters (`l·l`), `•` starts list items and `─`
# `━` draw tables. Such text keeps its canonical form, and its cheap path.
_JOINERS = {"\u30fc": "-", "\u2500": "-", "\u2501": "-", "\u30fb": ".", "\u00b7": ".", "\u2022": "."}
_JOINER_CLASS = "".join(_JOINERS)
_JOINER_CHARS = tuple(_JOINERS)
# Anything the cheap path cannot leave as it is: invisibles, dashes and other folded look-alikes,
# non-ASCII digits.
_ODD = re.compile(f"[{_INVISIBLE_CLASS}{_DASHES}{''.join(_FOLDS)}]|(?=\\d)[^\\x00-\\x7f]")
# ... and a joiner between an ASCII digit and an ASCII letter or digit (full-width neighbours are
# not NFKC-stable and other digits are odd: both take the per-character path anyway). A separate
# pattern, run only if the text holds a joiner and an ASCII digit at all (C-level `in` scans): a
# third alternative in _ODD would cost every non-ASCII text ~40% more.
_JOINED = re.compile(f"[{_JOINER_CLASS}](?:(?<=[0-9].)(?=[0-9A-Za-z])|(?<=[0-9A-Za-z].)(?=[0-9]))")


def _joined(text: str) -> bool:
    """Whether a joiner in `text` joins an ASCII digit (see _JOINED)."""
    return (any(ch in text for ch in _JOINER_CHARS) and any(d in text for d in "0123456789")
            and _JOINED.search(text) is not None)


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
    plain = _PLAIN.get(ch)
    if plain is not None:
        return plain
    if not ch.isascii() and ch.isdecimal():
        return str(unicodedata.decimal(ch))
    return ch


def canonicalize(text: str) -> Canonical | None:
    """The canonical form of a non-ASCII `text`, or None when it is already canonical."""
    if _ODD.search(text) is None and unicodedata.is_normalized("NFKC", text) and not _joined(text):
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
    canon = "".join(out)
    if any(ch in canon for ch in _JOINER_CHARS):  # one character for one: the maps stay as they are
        canon = _JOINED.sub(lambda m: _JOINERS[m.group()], canon)
    return Canonical(canon, starts, ends)


# --------------------------------------------------------------------------- escapes

# The three escape syntaxes a client decodes without a second thought, in one pattern:
_ESCAPE = re.compile(
    # WHATWG URL standard, "percent-decode": '%' and two hex digits is one byte; a run of
    # them is UTF-8 (so `%E2%80%8B`, a zero-width space, is one character)
    r"(?P<pct>(?:%[0-9A-Fa-f]{2})+)"
    # HTML5 character references (WHATWG HTML §13.2.5.72-80): decimal, hexadecimal, named
    r"|&(?:#(?P<dec>[0-9]+)|#[xX](?P<hex>[0-9A-Fa-f]+)|(?P<name>[A-Za-z][A-Za-z0-9]*))(?P<semi>;?)"
    # JSON string escapes (RFC 8259 §7); `\\` is matched so the `n` of `\\n` is not taken as an escape
    r"|\\(?:u(?P<u>[0-9A-Fa-f]{4})|(?P<json>[\"\\/bfnrt]))"
)
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# Escapes that change nothing a detector could miss in the text as written: a text with only
# these (JSON-as-text quotes, `&amp;` in URLs) is not scanned a second time.
_INERT = frozenset({'"', "\\", "&"})
_LEGACY_NAME_MAX = 6  # the longest HTML5 name still decoded without its ';' (`Aacute`, `middot`)
_CACHE_MAX = 4096  # distinct escapes remembered; a document repeats a few (`&nbsp;`, `%20`) many times
_Piece = tuple[str, int, int]  # decoded characters and the [start, end) they come from, in the escape


@dataclass(frozen=True)
class _Escape:
    """One escape match, decoded: what it reads as, and which of its characters each piece covers."""

    length: int  # of the match as written
    replacement: str  # the match as a reader sees it (pieces' text, then any uncovered tail as written)
    pieces: tuple[_Piece, ...]
    telling: bool  # decodes to something a detector could miss in the text as written


def may_have_escapes(text: str) -> bool:
    """Whether `text` can hold an escape at all: three C-level scans, the common case's only cost."""
    return "%" in text or "&" in text or "\\" in text


def _plain_text(decoded: str) -> str:
    """Decoded characters as the canonical form has them (NFKC, no invisibles, plain digits and
    dashes): done per escape, the decoded reading of ASCII text mostly stays ASCII (`&nbsp;` is
    ' ', `&#8203;` nothing), so it seldom takes canonicalize's per-character path."""
    if decoded.isascii():
        return decoded
    return "".join(_plain(c) for c in unicodedata.normalize("NFKC", decoded) if c not in _INVISIBLE)


def _percent(run: str) -> list[_Piece]:
    """Each character a run of %XX decodes to (UTF-8), with its escapes' span; bytes that are
    not UTF-8 stay as written (surrogateescape marks them), as a lenient reader shows them."""
    out: list[_Piece] = []
    pos = 0
    for ch in bytes.fromhex(run.replace("%", "")).decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8: kept as written
            out.append((run[pos:pos + 3], pos, pos + 3))
            pos += 3
        else:
            width = 3 * len(ch.encode("utf-8"))
            out.append((ch, pos, pos + width))
            pos += width
    return out


def _named_reference(m: re.Match[str]) -> _Piece | None:
    """A named HTML5 reference: `&name;` from the table, or a legacy name without ';' that
    the HTML parser still decodes when it is a prefix (`&nbsp1111` reads as NBSP + `1111`)."""
    name = m.group("name")
    if m.group("semi") and name + ";" in _HTML5_REFERENCES:
        return _HTML5_REFERENCES[name + ";"], 0, len(m.group())
    for k in range(min(len(name), _LEGACY_NAME_MAX), 1, -1):
        decoded = _HTML5_REFERENCES.get(name[:k])  # only legacy names are in the table without ';'
        if decoded is not None:
            return decoded, 0, 1 + k
    return None


def _raw_pieces(m: re.Match[str]) -> list[_Piece]:
    """What one escape match decodes to, relative to the match; [] when it is no real escape."""
    if m.group("pct") is not None:
        return _percent(m.group("pct"))
    if m.group("name") is not None:
        piece = _named_reference(m)
        return [] if piece is None else [piece]
    if m.group("dec") is not None or m.group("hex") is not None:
        # html.unescape applies the spec's repairs (0x80-0x9F as windows-1252, invalid as U+FFFD)
        return [(html.unescape(m.group()), 0, len(m.group()))]
    code = m.group("u")
    if code is not None:
        ch = chr(int(code, 16))
        return [] if "\ud800" <= ch <= "\udfff" else [(ch, 0, len(m.group()))]
    return [(_JSON_ESCAPES[m.group("json")], 0, len(m.group()))]


_CACHE: dict[str, _Escape] = {}


def _escape(m: re.Match[str]) -> _Escape:
    """The decoded form of an escape match, cached by its text (pure: the same text, the same form)."""
    raw = m.group()
    hit = _CACHE.get(raw)
    if hit is None:
        found = _raw_pieces(m)
        pieces = tuple((_plain_text(d), s, e) for d, s, e in found)
        end = pieces[-1][2] if pieces else 0
        hit = _Escape(len(raw), "".join(p for p, _s, _e in pieces) + raw[end:], pieces,
                      any(d not in _INERT and d != raw[s:e] for d, s, e in found))
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[raw] = hit
    return hit


class _Decoded(Canonical):
    """A decoded reading whose map back to the original is built only when a finding asks for it.

    Why lazy: most text with escapes (URLs, HTML) holds nothing sensitive, and the per-character
    map is the costly part; the decoded text itself is joined from cached pieces.
    """

    __slots__ = ("_escapes", "_source")

    def __init__(self, text: str, source: str, escapes: list[tuple[int, _Escape]]) -> None:
        super().__init__(text, [], [])
        self._source = source
        self._escapes = escapes

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if not self._starts:
            self._starts, self._ends = _escape_map(self._source, self._escapes)
        return super().original_span(start, end)


def _escape_map(source: str, escapes: list[tuple[int, _Escape]]) -> tuple[list[int], list[int]]:
    """Per character of the canonical decoded text, the original [start, end) it came from."""
    chunks: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def plain(upto: int, pos: int) -> None:  # text between escapes maps to itself
        chunks.append(source[pos:upto])
        starts.extend(range(pos, upto))
        ends.extend(range(pos + 1, upto + 1))

    pos = 0
    for at, esc in escapes:
        plain(at, pos)
        for text, s, e in esc.pieces:
            if text:
                chunks.append(text)
                starts.extend([at + s] * len(text))
                ends.extend([at + e] * len(text))
            elif ends and ends[-1] == at + s:
                ends[-1] = at + e  # an invisible belongs to the character before it (as in canonicalize)
        pos = at + (esc.pieces[-1][2] if esc.pieces else 0)
    plain(len(source), pos)
    canon = canonicalize("".join(chunks))
    if canon is None:
        return starts, ends
    return [starts[i] for i in canon._starts], [ends[j - 1] for j in canon._ends]


def decode_escapes(text: str) -> Canonical | None:
    """`text` as a client reads it once percent-escapes, HTML character references and JSON
    string escapes are decoded (one level, as a reader decodes once), then canonicalised;
    None when it holds no escape that could hide anything.

    Each decoded character maps back to the whole escape it came from, so a finding in
    the decoded text masks exactly the original characters, escapes included.
    """
    cached = _CACHE.get  # inline: a document repeats a few escapes, and a hit then costs no call
    escapes = [(m.start(), cached(m.group()) or _escape(m)) for m in _ESCAPE.finditer(text)]
    if not any(esc.telling for _at, esc in escapes):
        return None
    parts: list[str] = []
    pos = 0
    for at, esc in escapes:
        parts.append(text[pos:at])
        parts.append(esc.replacement)
        pos = at + esc.length
    parts.append(text[pos:])
    decoded = "".join(parts)
    canon = canonicalize(decoded)
    return _Decoded(decoded if canon is None else canon.text, text, escapes)
