"""Keyword context across identifiers: the demo bank server's own text must not leak account numbers."""

from __future__ import annotations

import pytest

from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings, ProfileSettings

MASKER = Masker.from_settings(MaskingSettings(profiles={"standard": ProfileSettings(
    detectors=["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"],
    operator="partial")}))


@pytest.mark.parametrize("text", [
    "Account A-2001: number 2951500533, routing 127240772",
    "acct cust_17 no. 2951500533",
    "Account #A-2001 number 2951500533",
])
def test_account_number_after_an_identifier_is_masked(text: str) -> None:
    masked, counts = MASKER.mask(text, "standard")
    assert "2951500533" not in masked and counts.get("US_BANK_ACCOUNT") == 1
    ledger, _ = MASKER.mask_for_ledger(text)
    assert "2951500533" not in ledger


@pytest.mark.parametrize("text", ["order 123456789 shipped", "invoice INV-2001 total 12345678 cents"])
def test_numbers_without_account_context_stay(text: str) -> None:
    assert MASKER.mask(text, "standard")[0] == text
