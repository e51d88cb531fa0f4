"""`Masker.mask_for_approvers`: what an approver is shown of masked values — keyed pseudonyms that tell
values apart without showing them (the redacted preview made two payments to different IBANs look
alike). Pure: a masker and a key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ledgergate.config import load_config
from ledgergate.masking.engine import Masker, MaskingError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ledgergate.yaml"

MASKER = Masker.from_settings(load_config(EXAMPLE, env={"EVERYTHING_KEY": "x"}).settings.masking)
KEY = bytes(range(32))


def shown(value: object, key: bytes = KEY) -> object:
    return MASKER.mask_for_approvers(value, key)[0]


@pytest.mark.parametrize(("one", "other"), [
    ("GB82WEST12345698765432", "GB33BUKB20201555555555"),
    ("078-05-1120", "219-09-9999"),
    ("4111 1111 1111 1111", "5555 5555 5555 4444"),
    ("ana@example.com", "bob@example.com"),
])
def test_two_values_read_differently_and_show_none_of_their_digits(one: str, other: str) -> None:
    a, b = shown({"to": one}), shown({"to": other})
    assert a != b
    for value, out in ((one, a), (other, b)):
        text = str(out)
        assert value not in text
        for run in re.findall(r"\d{3,}", value):
            assert run not in text, f"{run} of {value} shown: {text}"


@pytest.mark.parametrize(("plain", "spelled"), [
    ("GB82WEST12345698765432", "gb82 west 1234 5698 7654 32"),
    ("078-05-1120", "078 05 1120"),
    ("4111111111111111", "4111-1111-1111-1111"),
])
def test_one_value_written_two_ways_reads_the_same(plain: str, spelled: str) -> None:
    assert shown({"to": plain}) == shown({"to": spelled})


def test_the_pseudonym_is_keyed_and_names_what_it_hides() -> None:
    one = shown({"to": "GB82WEST12345698765432"})
    other_key = shown({"to": "GB82WEST12345698765432"}, bytes(32))
    assert one != other_key, "a pseudonym that does not depend on the key could be computed by anyone"
    assert str(one["to"]).startswith("IBAN_")  # type: ignore[index]


def test_counts_are_by_detector_and_text_around_stays() -> None:
    masked, counts = MASKER.mask_for_approvers({"memo": "rent to GB82WEST12345698765432 by Friday", "amount": 50}, KEY)
    assert counts.get("IBAN") == 1
    assert masked["memo"].startswith("rent to IBAN_") and masked["memo"].endswith(" by Friday")
    assert masked["amount"] == 50


@pytest.mark.parametrize("key", [b"", b"short", bytes(15)])
def test_a_short_key_is_refused_not_used(key: bytes) -> None:
    """Pseudonyms of nine-digit numbers under a known or guessable key are a lookup table away."""
    with pytest.raises(MaskingError):
        MASKER.mask_for_approvers({"ssn": "078-05-1120"}, key)


def test_the_ledger_and_callers_profiles_are_unchanged_by_it() -> None:
    before = MASKER.mask_for_ledger({"to": "GB82WEST12345698765432"})
    shown({"to": "GB82WEST12345698765432"})
    assert MASKER.mask_for_ledger({"to": "GB82WEST12345698765432"}) == before
    assert before[0] == {"to": "[IBAN]"}
