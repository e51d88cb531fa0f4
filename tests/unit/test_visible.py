"""What the console and the CLI show of outside text: hidden characters made visible, JSON kept JSON; and
what counts as hidden (`ledgergate.invisible`, also what a tool or prompt name may not hold)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from ledgergate.invisible import (
    DEFAULT_IGNORABLE,
    default_ignorable,
    first_hidden,
    hidden,
)
from ledgergate.policy.rules import name_problem
from ledgergate.ui.visible import pretty_json, shown

HIDDEN = ["\u202e", "\u202d", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u2060", "\ufeff",
          "\x1b", "\x00", "\x85", "\u2028", "\u2029", "\U000e0041", "\ue000"]


@pytest.mark.parametrize("ch", HIDDEN)
def test_every_hidden_character_is_written_out(ch: str) -> None:
    out = shown(f"acct {ch}1002-A")
    assert ch not in out and f"[U+{ord(ch):04X}]" in out and out.endswith("1002-A")
    value = {"to_account": f"{ch}1002-A", ch: "key"}
    text = pretty_json(value)
    assert ch not in text and json.loads(text) == value, "still the same JSON"


@pytest.mark.parametrize("text", ["plain", "Müller", "読む", "🙂", "line one\nline two\ttab", "a-b_c/d"])
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    assert shown(text) == text
    assert json.loads(pretty_json({"v": text})) == {"v": text} and text.split("\n")[0] in pretty_json({"v": text})


# ── what counts as hidden (ledgergate.invisible): properties, not a list of examples ────────────────

#: the characters the console probe found drawn as nothing in Chromium while the console showed them raw
DRAWN_AS_NOTHING = ["\ufe00", "\ufe0f", "\U000e0100", "\U000e01ef", "\u034f", "\u180b", "\u180c", "\u180d", "\u180f",
                    "\u17b4", "\u17b5", "\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u00a0", "\u2007", "\u3000",
                    "\u00ad", "\u180e", "\U0001d173", "\U0001bca0", "\U000e0001"]


def test_every_code_point_of_a_hidden_category_or_default_ignorable_is_hidden() -> None:
    """Over the whole code space: the rule is the property, and the table adds to it."""
    for code in range(0x110000):
        ch = chr(code)
        expected = ((unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"} and ch != " ")
                    or default_ignorable(code) or code in (0x2800, 0x1D159))
        assert hidden(ch) is expected, f"U+{code:04X}"


def test_the_default_ignorable_table_is_the_unicode_one() -> None:
    """Default_Ignorable_Code_Point as DerivedCoreProperties.txt derives it: Other_Default_Ignorable_Code_Point
    + Cf + Variation_Selector − White_Space − FFF9..FFFB − 13430..1343F − Prepended_Concatenation_Mark. Checked
    against the copy Perl ships (generated from the UCD) where there is one, and against the derivation's parts
    Python knows."""
    table = {c for start, end in DEFAULT_IGNORABLE for c in range(start, end + 1)}
    assert len(table) == 4174
    variation_selectors = {*range(0x180B, 0x180E), 0x180F, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}
    assert variation_selectors <= table
    not_ignorable_cf = {*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x110BD, 0x110CD,
                        *range(0xFFF9, 0xFFFC), *range(0x13430, 0x13440)}
    cf = {c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"}
    assert cf - not_ignorable_cf <= table and not table & not_ignorable_cf
    for perl in sorted(Path("/usr/share/perl").glob("*/unicore/lib/DI/Y.pl")):
        bounds = [int(n) for n in re.findall(r"^(\d+)$", perl.read_text(), re.MULTILINE)]
        assert table == {c for a, b in zip(bounds[::2], bounds[1::2]) for c in range(a, b)}, perl


@pytest.mark.parametrize("ch", DRAWN_AS_NOTHING)
def test_characters_drawn_as_nothing_are_written_out_and_refused_in_names(ch: str) -> None:
    out = shown(f"A-2002{ch}")
    assert ch not in out and out == f"A-2002[U+{ord(ch):04X}]"
    text = pretty_json({"to_account": f"A-2002{ch}"})
    assert ch not in text and json.loads(text) == {"to_account": f"A-2002{ch}"}
    assert first_hidden(f"pay{ch}") == ch
    assert name_problem(f"pay{ch}now") == f"the name holds the invisible or control character U+{ord(ch):04X}"


@pytest.mark.parametrize("text", ["e\u0301t\u00e9", "\u0915\u094d\u0937", "Ελληνικά", "שלום", "a b", "x_y.z/1"])
def test_combining_marks_and_scripts_that_draw_are_left_alone(text: str) -> None:
    assert shown(text) == text and first_hidden(text) is None
    # as a tool name, a form NFKC folds (`e` + U+0301 for `é`) reads as another name (test_names_and_bindings.py)
    assert (name_problem(text) is None) == (text != "e\u0301t\u00e9")
