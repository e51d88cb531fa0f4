"""PERSON, ADDRESS and DATE_OF_BIRTH: positives by key, cue and shape, and the look-alikes that must stay."""

from __future__ import annotations

import json

import pytest

from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings

MASKER = Masker.from_settings(MaskingSettings.model_validate({"profiles": {
    "personal": {"detectors": ["PERSON", "ADDRESS", "DATE_OF_BIRTH"]},
    "numbers": {"detectors": ["US_SSN", "CREDIT_CARD", "PHONE"]},
}}))


def _mask(value: object, profile: str | None = "personal") -> tuple[object, dict[str, int]]:
    return MASKER.mask(value, profile)


# ------------------------------------------------------------------------------------- PERSON

@pytest.mark.parametrize(("text", "name"), [
    ("Account holder: Jane Q. Doe, since 2019", "Jane Q. Doe"),
    ("Customer Maria Garcia-Lopez called about a dispute.", "Maria Garcia-Lopez"),
    ("Dear Mr. O'Connor,", "O'Connor"),
    ("Spoke with Dr. Amanda McDonald today", "Amanda McDonald"),
    ("name: John Smith Jr.", "John Smith Jr"),
    ("Beneficiary is Zoë Müller.", "Zoë Müller"),
    ("ACCOUNT HOLDER: JANE DOE", "JANE DOE"),
    ("card holder Robert De Niro reported it stolen", "Robert De Niro"),
])
def test_person_after_a_cue(text: str, name: str) -> None:
    masked, counts = _mask(text)
    assert counts == {"PERSON": 1} and name not in str(masked) and "[PERSON]" in str(masked)


@pytest.mark.parametrize("text", [
    "Customer Service Team will reply within 24 hours.",
    "Client: Acme Corp renewed the contract.",
    "Client: Brown LLC renewed.",
    "Vendor Smith, Johnson and Williams sent the invoice.",
    "The customer Portal Update is live.",
    "Jane Doe signed.",  # no cue: a bare capitalised pair is not enough
    "Account Holder Agreement, Section 4",
])
def test_person_lookalikes_stay(text: str) -> None:
    assert _mask(text) == (text, {})


@pytest.mark.parametrize("key", ["customer_name", "fullName", "Account-Holder", "first_name", "cardholderName",
                                 "last name"])
def test_person_by_key(key: str) -> None:
    masked, counts = _mask({key: "Jane", "other": "Jane"})
    assert masked == {key: "[PERSON]", "other": "Jane"} and counts == {"PERSON": 1}


def test_generic_name_key_needs_a_persons_name() -> None:
    value = {"name": "Jane Doe", "tool": {"name": "get_account"}, "acct": {"name": "Primary Checking"},
             "company": {"name": "Acme Holdings"}, "n": {"name": 12345678}}
    masked, counts = _mask(value)
    assert masked == {"name": "[PERSON]", "tool": {"name": "get_account"}, "acct": {"name": "Primary Checking"},
                      "company": {"name": "Acme Holdings"}, "n": {"name": 12345678}}
    assert counts == {"PERSON": 1}


@pytest.mark.parametrize("text", [
    json.dumps({"customer_name": "Jane Doe", "balance": 10}),
    json.dumps({"t": json.dumps({"full_name": "Jane Doe", "x": 1})}),                  # escaped JSON in text
    json.dumps({"t": json.dumps({"name": "Jane Doe", "note": 'say "hi"'})}),
])
def test_person_in_json_text_escaped_or_not(text: str) -> None:
    masked, counts = _mask(text)
    assert "Jane" not in masked and counts == {"PERSON": 1}
    json.loads(masked)  # still JSON, and the inner document too
    inner = json.loads(masked)
    if "t" in inner:
        json.loads(inner["t"])


# ------------------------------------------------------------------------------------ ADDRESS

@pytest.mark.parametrize("address", [
    "123 Main Street",
    "4567 Johnson Crossing Suite 900\nNorth Lisa, CA 90210",
    "12 W. 34th St., Apt 5B, New York, NY 10001-1234",
    "77 Sunset Blvd",
    "PSC 1234, Box 5678\nAPO AP 12345",
    "USNS Smith\nFPO AE 12345",
    "P.O. Box 77, Reno, NV 89501",
    "18053 Daniel Meadows\nAmberchester, PW 19684",
])
def test_address_by_shape(address: str) -> None:
    text = f"Ship to {address} please."
    masked, counts = _mask(text)
    assert counts == {"ADDRESS": 1} and masked == "Ship to [ADDRESS] please."


@pytest.mark.parametrize("text", [
    "ZIP+4 90210-1234",
    "UPS tracking 1Z999AA10123456784",
    "USPS tracking 9400 1000 0000 0000 0000 00",
    "SKU AB-4821-XL qty 3",
    "3 Items in Room 204",
    "version 2 Release Notes",
    "from 10.0.0.1 at 12:30:00",
])
def test_address_lookalikes_stay(text: str) -> None:
    assert _mask(text) == (text, {})


def test_address_by_key() -> None:
    value = {"mailing_address": "1 Infinite Loop", "address": "12 Main St, Springfield, IL 62704",
             "server": {"address": "10.0.0.1"}, "wallet": {"address": "0xabc123"}}
    masked, counts = _mask(value)
    assert masked == {"mailing_address": "[ADDRESS]", "address": "[ADDRESS]",
                      "server": {"address": "10.0.0.1"}, "wallet": {"address": "0xabc123"}}
    assert counts == {"ADDRESS": 2}


# ------------------------------------------------------------------------------ DATE_OF_BIRTH

@pytest.mark.parametrize(("text", "date"), [
    ("born 1984-03-05", "1984-03-05"),
    ("DOB: 03/05/1984", "03/05/1984"),
    ("Date of birth March 5, 1984.", "March 5, 1984"),
    ("birthday: 5 March 1984", "5 March 1984"),
    ("D.O.B. 05.03.1984", "05.03.1984"),
    ("Date of Birth (MM/DD/YYYY): 03/05/1984", "03/05/1984"),
    ("dob=19840305", "19840305"),
])
def test_dob_after_a_cue(text: str, date: str) -> None:
    masked, counts = _mask(text)
    assert counts == {"DATE_OF_BIRTH": 1} and date not in str(masked)


@pytest.mark.parametrize("text", [
    "created 2024-03-05T10:22:11Z",
    json.dumps({"event": "login", "at": "2024-03-05T10:22:11.123Z", "date": "2024-03-05"}),
    "Invoice date 2024-03-05, due 04/05/2024",
    "Statement period March 1, 2024 - March 31, 2024",
])
def test_event_dates_are_not_birth_dates(text: str) -> None:
    assert _mask(text) == (text, {})


@pytest.mark.parametrize("key", ["dob", "date_of_birth", "birthDate", "Birth-Day"])
def test_dob_by_key(key: str) -> None:
    masked, counts = _mask({key: "1984-03-05", "created": "2024-03-05"})
    assert masked == {key: "[DATE_OF_BIRTH]", "created": "2024-03-05"} and counts == {"DATE_OF_BIRTH": 1}


def test_profile_without_personal_detectors_leaves_them() -> None:
    value = {"customer_name": "Jane Doe", "note": "born 1984-03-05 at 123 Main Street"}
    assert MASKER.mask(value, "numbers") == (value, {})


def test_ledger_profile_has_the_personal_detectors() -> None:
    masked, counts = MASKER.mask_for_ledger({"customer_name": "Jane Doe", "dob": "1984-03-05"})
    assert masked == {"customer_name": "[PERSON]", "dob": "[DATE_OF_BIRTH]"}


def test_partial_never_shows_part_of_a_name_address_or_birth_date() -> None:
    m = Masker.from_settings(MaskingSettings.model_validate(
        {"profiles": {"p": {"detectors": ["PERSON", "ADDRESS", "DATE_OF_BIRTH"], "operator": "partial"}}}))
    masked, _ = m.mask({"full_name": "Jane Doe", "dob": "1984-03-05", "street": "123 Main Street"}, "p")
    assert masked == {"full_name": "[PERSON]", "dob": "[DATE_OF_BIRTH]", "street": "[ADDRESS]"}


# ------------------------------------------------------------------- look-alikes, all detectors

@pytest.mark.parametrize("text", [
    "ZIP+4 90210-1234 and 10001-0001",
    "UPS 1Z999AA10123456784, 1ZKQY5894076584219",
    "USPS 9400 1000 0000 0000 0000 00",
    "FedEx 748920119466",
    "SKU WH-2291-0043, SKU 123-ABC-456",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit a585552472136c1960ecb502d3204bdaa18a712a",
    "request 3f0c2b1e-7a4d-4c59-9b1e-2f7d8c6a5b40",
    "created 2024-03-05T10:22:11Z, updated 2024-03-06T08:00:00+01:00",
    "order 123456789 shipped",
    "version 2.13.4 released",
    "from 10.0.12.7 at 12:30:00",
    "epoch 1712345678901",
    json.dumps({"name": "transfer_funds", "arguments": {"limit": 25, "cursor": "eyJwYWdlIjoyfQ"}}),
    "Customer Service Team will reply within 24 hours.",
])
def test_lookalikes_pass_the_ledger_profile_untouched(text: str) -> None:
    assert MASKER.mask_for_ledger(text) == (text, {})


def test_identifier_between_cue_and_name() -> None:
    """The demo bank server writes `Customer C-1001: Alice Nguyen, born 1975-03-02`."""
    text = "Customer C-1001: Alice Nguyen, born 1975-03-02\nAddress: 12 Maple Ave, Springfield, IL 62701"
    masked, counts = MASKER.mask_for_ledger(text)
    assert masked == "Customer C-1001: [PERSON], born [DATE_OF_BIRTH]\nAddress: [ADDRESS]"
    assert counts == {"PERSON": 1, "DATE_OF_BIRTH": 1, "ADDRESS": 1}


@pytest.mark.parametrize(("text", "expected"), [
    ("Ship to 123 Main Street, Springfield.", "Ship to [ADDRESS]."),
    ("address: 12 Elm Rd, Fairview, TN", "address: [ADDRESS]"),
    ("Meet at 5 Park Ave, Then we talk", "Meet at [ADDRESS], Then we talk"),  # a sentence is no city
])
def test_address_takes_a_city_that_ends_the_phrase(text: str, expected: str) -> None:
    assert _mask(text)[0] == expected


def test_negative_number_in_json_text_stays_json() -> None:
    text = json.dumps({"account": -123456789, "list": ["ACCOUNT", -100000]})
    masked, counts = MASKER.mask(text, None)
    assert json.loads(masked) == {"account": "[US_BANK_ACCOUNT]", "list": ["ACCOUNT", "[US_BANK_ACCOUNT]"]}


def test_nested_key_rule_beats_a_generic_one() -> None:
    value = {"name": {"ssn": "078051120", "full_name": "Jane", "label": "Jane Doe", "tag": "vip"}}
    masked, counts = MASKER.mask_for_ledger(value)
    assert masked == {"name": {"ssn": "[US_SSN]", "full_name": "[PERSON]", "label": "[PERSON]", "tag": "vip"}}
