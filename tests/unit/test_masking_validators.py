"""Checksum and structure validators: table tests with valid values and near misses."""

from __future__ import annotations

import random

import pytest

from ledgergate.masking.validators import aba_valid, card_brand, card_valid, iban_valid, luhn_valid, ssn_valid


@pytest.mark.parametrize(("digits", "ok"), [
    ("4111111111111111", True), ("4111111111111112", False), ("79927398713", True),
    ("79927398710", False), ("0", True), ("", False), ("12a4", False), ("٤١١١", False),
])
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


@pytest.mark.parametrize(("number", "brand"), [
    ("4111111111111111", "visa"), ("4222222222222", "visa"), ("5555555555554444", "mastercard"),
    ("2221000000000009", "mastercard"), ("378282246310005", "amex"), ("371449635398431", "amex"),
    ("6011111111111117", "discover"), ("6445644564456445", "discover"), ("3530111333300000", "jcb"),
    ("30569309025904", "diners"), ("6200000000000005", "unionpay"), ("6759649826438453", "maestro"),
])
def test_card_brands(number: str, brand: str) -> None:
    assert card_brand(number) == brand
    assert card_valid(number)


@pytest.mark.parametrize("number", [
    "4111111111111112",        # Luhn off by one
    "411111111111111",         # Visa with 15 digits
    "3782822463100051",        # Amex with 16 digits
    "9111111111111111",        # no such IIN (9)
    "1234567812345670",        # Luhn-valid, IIN 1 unassigned
    "5555555555554",           # Mastercard too short
    "41111111111111111111",    # 20 digits
])
def test_card_near_misses(number: str) -> None:
    assert not card_valid(number)


@pytest.mark.parametrize(("ssn", "ok"), [
    ("078051120", True), ("123456789", True), ("899999999", True), ("001010001", True),
    ("000123456", False), ("666123456", False), ("900123456", False), ("999999999", False),
    ("123006789", False), ("123450000", False), ("12345678", False), ("1234567890", False),
    ("12345678a", False),
])
def test_ssn(ssn: str, ok: bool) -> None:
    assert ssn_valid(ssn) is ok


@pytest.mark.parametrize(("rtn", "ok"), [
    ("021000021", True), ("011000015", True), ("026009593", True), ("322271627", True),
    ("021000022", False),      # checksum
    ("123456789", False),      # checksum
    ("991000018", False),      # prefix 99 does not exist (checksum valid)
    ("02100002", False), ("0210000210", False),
])
def test_aba(rtn: str, ok: bool) -> None:
    assert aba_valid(rtn) is ok


@pytest.mark.parametrize(("iban", "ok"), [
    ("DE89370400440532013000", True), ("GB82WEST12345698765432", True), ("FR1420041010050500013M02606", True),
    ("NL91ABNA0417164300", True), ("NO9386011117947", True), ("gb82west12345698765432", True),
    ("DE89370400440532013001", False),   # check digits
    ("DE8937040044053201300", False),    # wrong length for DE
    ("XX89370400440532013000", False),   # no such country
    ("GB82WEST1234569876543!", False),
])
def test_iban(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


def _reference_luhn(digits: str) -> bool:
    """Luhn written another way (from the left, with a lookup of doubled digits), as an oracle."""
    doubled = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    parity = len(digits) % 2
    return sum(doubled[int(c)] if i % 2 == parity else int(c) for i, c in enumerate(digits)) % 10 == 0


def test_validators_total_on_junk() -> None:
    """Never an exception, always a bool; anything but ASCII digits is not a number (an Arabic-Indic
    '٣' is not a 3); IBANs take ASCII letters and digits only; and Luhn agrees with an oracle."""
    rng = random.Random(1)
    alphabet = "0123456789ABCDEFxyz -\u0663\x00"
    digit_checks = (luhn_valid, card_valid, ssn_valid, aba_valid)
    seen_true = 0
    for _ in range(4000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        results = {fn: fn(s) for fn in (*digit_checks, iban_valid)}
        assert all(type(r) is bool for r in results.values()), (s, results)
        if not (s.isascii() and s.isdigit()):
            assert not any(results[fn] for fn in digit_checks), (s, results)
        else:
            assert luhn_valid(s) == _reference_luhn(s), s
            seen_true += luhn_valid(s)
        if not (s.isascii() and s.isalnum()):
            assert not results[iban_valid], s
        # the same digits with a non-ASCII digit in them are never valid
        if s.isascii() and s.isdigit() and len(s) > 1:
            assert not luhn_valid(s[:-1] + "\u0663"), s
    assert seen_true > 10  # the oracle was exercised on valid numbers too
