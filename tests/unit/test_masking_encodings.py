"""Sensitive data in encodings the strict paths missed: base64 blobs that are not strict standard
base64 (MIME line-wrapped, URL-safe, unpadded) and numbers sent as JSON floats (`4111111111111111.0`,
`4.111111111111111e15`). A client decodes both to the sensitive value, so both must be masked."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import pytest

from ledgergate.masking.engine import BLOB_UNSCANNED, BLOB_WITHHELD, Masker
from ledgergate.masking.settings import MaskingSettings

SSN, CARD = "078-05-1120", "4111111111111111"
ALL = ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"]
MASKER = Masker.from_settings(MaskingSettings.model_validate({
    "profiles": {"partial": {"detectors": ALL, "operator": "partial"},
                 "withhold": {"detectors": ALL, "operator": "redact", "binary": "withhold"},
                 "cards": {"detectors": ["CREDIT_CARD"], "operator": "redact"}},
}))
PROFILES = [None, "partial", "withhold", "cards"]

# long enough to wrap (76 base64 characters a line), and with bytes that encode to `+`/`/` (`-`/`_`)
TEXT = f"customer record >>> ssn {SSN} card {CARD} ??? note: the quick brown fox jumps over the lazy dog~\n"
BINARY = b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfb" + bytes(range(256)) * 2


def _wrapped(raw: bytes) -> str:
    return base64.encodebytes(raw).decode()


def _crlf(raw: bytes) -> str:
    return base64.encodebytes(raw).decode().replace("\n", "\r\n")


def _urlsafe(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _unpadded(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def _urlsafe_unpadded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _urlsafe_wrapped_unpadded(raw: bytes) -> str:
    text = _urlsafe_unpadded(raw)
    return "\r\n".join(text[i:i + 64] for i in range(0, len(text), 64))


def _spaced(raw: bytes) -> str:  # whitespace of every kind between groups, and around the value
    text = base64.b64encode(raw).decode()
    return " \t" + " ".join(text[i:i + 4] for i in range(0, len(text), 4)) + "\f\v\n"


ENCODINGS = [_wrapped, _crlf, _urlsafe, _unpadded, _urlsafe_unpadded, _urlsafe_wrapped_unpadded, _spaced]


def _lenient(value: str) -> bytes:
    """What a forgiving client reads (the SDKs' decoders, `atob`, Node's Buffer)."""
    text = "".join(value.split()).replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _places(value: str) -> list[tuple[Any, Any]]:
    """The blob shapes the walker knows, each with how to read the blob back."""
    return [
        ({"contents": [{"uri": "file:///a", "mimeType": "text/csv", "blob": value}]},
         lambda out: out["contents"][0]["blob"]),
        ({"content": [{"type": "image", "mimeType": "image/png", "data": value}]},
         lambda out: out["content"][0]["data"]),
        ({"resource": {"blob": value}, "n": 1}, lambda out: out["resource"]["blob"]),
    ]


def test_the_encodings_are_what_they_say_and_not_strict_base64() -> None:
    """The variants exercise what they claim, and the old strict decode refused every one of them."""
    assert "-" in _urlsafe(TEXT.encode()) and "_" in _urlsafe(TEXT.encode())
    assert not _unpadded(TEXT.encode()).endswith("=") and len(_unpadded(TEXT.encode())) % 4
    assert "\r\n" in _crlf(TEXT.encode()) and "\n" in _wrapped(TEXT.encode())
    for encode in ENCODINGS:
        assert _lenient(encode(TEXT.encode())) == TEXT.encode()
        assert _lenient(encode(BINARY)) == BINARY
        with pytest.raises(binascii.Error):
            base64.b64decode(encode(TEXT.encode()), validate=True)


# ---------------------------------------------------------------------------------------- text blobs

REDACTED = TEXT.replace(SSN, "[US_SSN]").replace(CARD, "[CREDIT_CARD]")
EXPECTED: dict[str | None, tuple[str, dict[str, int]]] = {
    None: (REDACTED, {"US_SSN": 1, "CREDIT_CARD": 1}),
    "withhold": (REDACTED, {"US_SSN": 1, "CREDIT_CARD": 1}),  # text is scanned, not withheld
    "partial": (TEXT.replace(SSN, "***-**-1120").replace(CARD, "************1111"), {"US_SSN": 1, "CREDIT_CARD": 1}),
    "cards": (TEXT.replace(CARD, "[CREDIT_CARD]"), {"CREDIT_CARD": 1}),
}


@pytest.mark.parametrize("encode", ENCODINGS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("profile", PROFILES)
def test_text_in_a_lenient_blob_is_masked(encode: Any, profile: str | None) -> None:
    value = encode(TEXT.encode())
    expected, expected_counts = EXPECTED[profile]
    for shape, read in _places(value):
        masked, counts = MASKER.mask(shape, profile)
        # re-encoded as standard base64, masked with the profile's detectors and operator
        assert base64.b64decode(read(masked), validate=True).decode() == expected
        assert counts == expected_counts
        again, counts_again = MASKER.mask(masked, profile)  # idempotent
        assert again == masked and counts_again == {}


@pytest.mark.parametrize("encode", ENCODINGS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("profile", PROFILES)
def test_clean_text_in_a_lenient_blob_passes_unchanged_and_uncounted(encode: Any, profile: str | None) -> None:
    value = encode(b"status: shipped, 3 items, total 41.20 USD; nothing to see here at all, really.\n" * 2)
    for shape, read in _places(value):
        masked, counts = MASKER.mask(shape, profile)
        assert read(masked) is value and counts == {}


# -------------------------------------------------------------------------------------- binary blobs

@pytest.mark.parametrize("encode", ENCODINGS, ids=lambda f: f.__name__)
def test_binary_in_a_lenient_blob_is_counted_unscanned_or_withheld(encode: Any) -> None:
    value = encode(BINARY)
    for shape, read in _places(value):
        masked, counts = MASKER.mask(shape, None)
        assert read(masked) == value and counts == {BLOB_UNSCANNED: 1}
        masked, counts = MASKER.mask(shape, "partial")
        assert read(masked) == value and counts == {BLOB_UNSCANNED: 1}
        masked, counts = MASKER.mask(shape, "withhold")
        assert read(masked) == "" and counts == {BLOB_WITHHELD: 1}


UNDECODABLE = [
    "QUJD!!",                      # a character of neither alphabet
    "QUJD=QUJD",                   # padding inside (Python's non-validating decoder reads on past it)
    "QUJDR",                       # a dangling character: no base64 has 4n+1 of them
    "QUJDRA==\u00e9",              # non-ASCII
    "data:text/plain;base64,QUJD", # a data: URL, not base64
]


@pytest.mark.parametrize("value", UNDECODABLE)
def test_a_blob_that_is_base64_in_no_form_does_not_pass_silently(value: str) -> None:
    for shape, read in _places(value):
        masked, counts = MASKER.mask(shape, None)
        assert read(masked) == value and counts == {BLOB_UNSCANNED: 1}
        masked, counts = MASKER.mask(shape, "withhold")
        assert read(masked) == "" and counts == {BLOB_WITHHELD: 1}


@pytest.mark.parametrize("value", [f"ssn: {SSN}!", f"SSN {SSN}", f"card {CARD}, ssn {SSN}.", f"{CARD} (visa)"])
def test_text_in_a_blob_field_is_still_scanned_as_text_and_counted(value: str) -> None:
    """A text value where base64 belongs may be shown as text (as before) or decoded to bytes we cannot
    inspect: masked as text, and counted unscanned; withheld where the profile withholds."""
    masked, counts = MASKER.mask({"blob": value}, None)
    assert SSN not in masked["blob"] and CARD not in masked["blob"]
    assert counts[BLOB_UNSCANNED] == 1 and counts.keys() - {BLOB_UNSCANNED} <= {"US_SSN", "CREDIT_CARD"}
    assert len(counts) >= 2
    masked, counts = MASKER.mask({"blob": value}, "withhold")
    assert masked == {"blob": ""} and counts == {BLOB_WITHHELD: 1}


# ------------------------------------------------------------------- strict standard base64: as before

@pytest.mark.parametrize("profile", PROFILES)
def test_strict_standard_base64_behaves_as_before(profile: str | None) -> None:
    text_blob = base64.b64encode(TEXT.encode()).decode()
    masked, counts = MASKER.mask({"blob": text_blob}, profile)
    decoded = base64.b64decode(masked["blob"], validate=True).decode()
    assert CARD not in decoded
    clean = base64.b64encode(b"nothing here").decode()
    masked, counts = MASKER.mask({"blob": clean}, profile)
    assert masked["blob"] is clean and counts == {}
    png = base64.b64encode(BINARY).decode()
    masked, counts = MASKER.mask({"blob": png}, profile)
    if profile == "withhold":
        assert masked == {"blob": ""} and counts == {BLOB_WITHHELD: 1}
    else:
        assert masked["blob"] is png and counts == {BLOB_UNSCANNED: 1}
    masked, counts = MASKER.mask({"blob": ""}, profile)
    assert masked == {"blob": ""} and counts == {}


def test_a_blob_beside_a_sensitive_key_or_a_non_binary_type_is_not_a_blob() -> None:
    """Only `blob` and the `data` of image/audio content are decoded; elsewhere base64 is text."""
    value = _wrapped(TEXT.encode())
    masked, counts = MASKER.mask({"type": "text", "data": value}, None)
    assert masked["data"] is value and counts == {}


# ----------------------------------------------------------------------------------------- floats

CARDS = [4111111111111111, 5555555555554444, 378282246310005, 6011000990139424, 4012888888881881]


@pytest.mark.parametrize("number", [*CARDS, *(-c for c in CARDS)])
@pytest.mark.parametrize("profile", PROFILES)
def test_an_integral_float_is_masked_as_the_equal_int(number: int, profile: str | None) -> None:
    as_float = float(number)
    assert int(as_float) == number  # exactly representable
    as_int = MASKER.mask(number, profile)
    assert isinstance(as_int[0], str) and as_int[1] == {"CREDIT_CARD": 1}
    assert MASKER.mask(as_float, profile) == as_int
    exponent = float(f"{number / 10**15!r}e15")  # 4.111111111111111e15 is the same float
    assert exponent == as_float and MASKER.mask(exponent, profile) == as_int


@pytest.mark.parametrize("profile", PROFILES)
def test_integral_floats_under_lists_and_nested_dicts(profile: str | None) -> None:
    value = {"rows": [{"id": 7, "value": 4111111111111111.0, "amount": 12.5},
                      [5.555555555554444e15, -4.012888888881881e15, 1.0, 100000.0]],
             "meta": {"deep": {"deeper": [{"n": 378282246310005.0}]}}}
    masked, counts = MASKER.mask(value, profile)
    as_ints = {"rows": [{"id": 7, "value": 4111111111111111, "amount": 12.5},
                        [5555555555554444, -4012888888881881, 1.0, 100000.0]],
               "meta": {"deep": {"deeper": [{"n": 378282246310005}]}}}
    assert (masked, counts) == MASKER.mask(as_ints, profile)
    assert counts == {"CREDIT_CARD": 4}
    assert masked["rows"][0]["amount"] == 12.5 and masked["rows"][1][2:] == [1.0, 100000.0]
    assert all(type(x) is float for x in masked["rows"][1][2:])
    flat = repr(masked)
    assert not any(str(c)[:-4] in flat for c in CARDS)


def test_a_float_beyond_2_53_is_also_checked_as_json_writes_it() -> None:
    """4.111111111111117e18 is the integer 4111111111111116800, but JavaScript and the ledger's
    RFC 8785 JSON write it `4111111111111117000`: a Luhn-valid 19-digit Visa number."""
    value = 4.111111111111117e18
    assert int(value) == 4111111111111116800
    assert MASKER.mask(4111111111111116800, None)[1] == {}
    masked, counts = MASKER.mask({"v": value}, None)
    assert masked == {"v": "[CREDIT_CARD]"} and counts == {"CREDIT_CARD": 1}


@pytest.mark.parametrize("value", [12.5, -12.5, 4111111111111111.5, 0.1, 1e-300, 5e-324, 99999.0, -99999.0, 1.0,
                                   123456789.0, 1234567890123.0, 1e300, -1e300, 1.7976931348623157e308,
                                   math.inf, -math.inf, 0.0])
@pytest.mark.parametrize("profile", PROFILES)
def test_other_floats_stay_as_they_are(value: float, profile: str | None) -> None:
    masked, counts = MASKER.mask({"v": value, "l": [value]}, profile)
    assert counts == {}
    assert masked == {"v": value, "l": [value]} and type(masked["v"]) is float and type(masked["l"][0]) is float


@pytest.mark.parametrize("profile", PROFILES)
def test_negative_zero_and_nan_stay(profile: str | None) -> None:
    masked, counts = MASKER.mask([-0.0, math.nan], profile)
    assert counts == {} and math.copysign(1.0, masked[0]) == -1.0 and math.isnan(masked[1])


def test_floats_under_a_sensitive_key_as_before() -> None:
    masked, _ = MASKER.mask({"ssn": 78051120.0, "card_number": [4111111111111111.0, 12.5],
                             "account_number": math.inf}, None)
    assert masked == {"ssn": "[US_SSN]", "card_number": ["[CREDIT_CARD]", "[CREDIT_CARD]"],
                      "account_number": "[US_BANK_ACCOUNT]"}


def test_an_integral_float_key_is_checked_as_the_int() -> None:
    masked, counts = MASKER.mask({4111111111111111.0: "x", 1.5: "y", 7.0: "z"}, None)
    assert masked == {"[CREDIT_CARD]": "x", 1.5: "y", 7.0: "z"} and counts == {"CREDIT_CARD": 1}


@pytest.mark.parametrize("value", [4.111111111111117e18, 4111111111111111.0, -4111111111111111.0])
def test_a_float_under_a_generic_key_is_read_as_without_the_key(value: float) -> None:
    """`name` forces PERSON only on a name: a float under it is checked as the integers it equals, exactly
    as without the key, so the ledger's profile (with PERSON) finds what a profile without PERSON finds."""
    ledger, ledger_counts = MASKER.mask({"name": value}, None)
    cards, card_counts = MASKER.mask({"name": value}, "cards")
    assert ledger_counts == card_counts == {"CREDIT_CARD": 1}
    assert isinstance(ledger["name"], str) and ledger == cards
