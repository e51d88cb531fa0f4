"""What the console and the CLI show of outside text: hidden characters made visible, JSON kept JSON."""

from __future__ import annotations

import json

import pytest

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
