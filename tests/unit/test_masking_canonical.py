"""Numbers in disguise: canonical form (NFKC, invisibles, any digits and dashes), every single
separator, IBANs in any case, no tail left behind; blobs withheld by profile; properties."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.masking.canonical import canonicalize
from ledgergate.masking.engine import BLOB_UNSCANNED, BLOB_WITHHELD, Masker
from ledgergate.masking.settings import MaskingSettings

ALL = ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET",
       "PERSON", "ADDRESS", "DATE_OF_BIRTH"]
MASKER = Masker.from_settings(MaskingSettings.model_validate({
    "profiles": {"partial": {"detectors": ALL, "operator": "partial"},
                 "redact": {"detectors": ALL, "operator": "redact"},
                 "pseudo": {"detectors": ALL, "operator": "pseudonym"},
                 "withhold": {"detectors": ALL, "binary": "withhold"}},
    "pseudonym_key": "canonical-test-key-0123456789",
}))
FULLWIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"}
SSN, CARD, IBAN = "078-05-1120", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00"


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


@pytest.mark.parametrize("sep", [" ", "-", ".", "_", "/"])
def test_any_single_separator(sep: str) -> None:
    for text, det, digits in ((f"SSN 078{sep}05{sep}1120", "US_SSN", "078051120"),
                              (f"card 4111{sep}1111{sep}1111{sep}1111", "CREDIT_CARD", "4111111111111111"),
                              (f"call 212{sep}555{sep}0134", "PHONE", "2125550134")):
        masked, counts = MASKER.mask(text, "redact")
        assert counts == {det: 1} and digits[:6] not in _digits(masked), text


@pytest.mark.parametrize("text", ["ssn=078_05_1120", "ssn: 078 05 1120", "SSN=078.05.1120", "ssn=078/05/1120x"])
def test_keyed_value_leaves_no_tail(text: str) -> None:
    masked, counts = MASKER.mask(text, "redact")
    assert counts == {"US_SSN": 1} and not any(ch.isdigit() for ch in masked), masked


@pytest.mark.parametrize("iban", [IBAN, IBAN.lower(), IBAN.replace(" ", "").lower(), IBAN.replace(" ", "-"),
                                  "gb82 west 1234 5698 7654 32", "Gb82WeSt12345698765432"])
def test_iban_any_case_and_separator(iban: str) -> None:
    masked, counts = MASKER.mask(f"pay to {iban} today", "redact")
    assert masked == "pay to [IBAN] today" and counts == {"IBAN": 1}


@pytest.mark.parametrize("disguise", [
    lambda s: s.translate(FULLWIDTH),                       # full-width digits and dashes
    lambda s: "\u200b".join(s),                             # zero-width space between every character
    lambda s: "\u2060".join(s),                             # word joiner
    lambda s: "\u00ad".join(s),                             # soft hyphen
    lambda s: s.replace("-", "\u2013"),                     # en dash
    lambda s: s.replace("-", "\u2212"),                     # minus sign
    lambda s: s.translate({ord(str(i)): 0x0660 + i for i in range(10)}),   # Arabic-Indic digits
    lambda s: s.translate({ord(str(i)): 0x1D7CE + i for i in range(10)}),  # mathematical bold digits
])
def test_disguised_ssn_is_masked_whole(disguise: Any) -> None:
    value = disguise(SSN)
    text = f"SSN {value} on file"
    masked, counts = MASKER.mask(text, "partial")
    assert counts == {"US_SSN": 1}
    assert masked == "SSN ***-**-1120 on file"  # the whole original span replaced, canonical last four


def test_disguised_name_and_key() -> None:
    masked, counts = MASKER.mask({"ｃｕｓｔｏｍｅｒ＿ｎａｍｅ": "x", "note": "Account holder: Ｊａｎｅ Ｄｏｅ"}, "redact")
    assert masked == {"ｃｕｓｔｏｍｅｒ＿ｎａｍｅ": "[PERSON]", "note": "Account holder: [PERSON]"}
    assert counts == {"PERSON": 2}


def test_canonical_map_covers_invisibles_inside() -> None:
    c = canonicalize("a0\u200b7\u200b8b")
    assert c is not None and c.text == "a078b"
    assert c.original_span(1, 4) == (1, 6)
    assert canonicalize("café") is None  # already canonical: nothing to map


def test_pseudonym_joins_disguised_and_plain() -> None:
    a, _ = MASKER.mask(f"SSN {SSN}", "pseudo")
    b, _ = MASKER.mask(f"SSN {SSN.translate(FULLWIDTH)}", "pseudo")
    assert a == b


def test_error_text_is_masked_like_any_string() -> None:
    """The gateway masks a JSON-RPC error object with the caller's profile: message and data."""
    error = {"code": -32000, "message": f"lookup failed for SSN {SSN} (holder: Jane Doe)",
             "data": {"card": CARD.replace(" ", "")}}
    masked, counts = MASKER.mask(error, "redact")
    assert masked == {"code": -32000, "message": "lookup failed for SSN [US_SSN] (holder: [PERSON])",
                      "data": {"card": "[CREDIT_CARD]"}}


def test_binary_blob_withheld_by_profile() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\xff\xfe").decode()
    value = {"contents": [{"uri": "file:///x.png", "blob": png}], "content": [{"type": "image", "data": png}]}
    masked, counts = MASKER.mask(value, "withhold")
    assert masked == {"contents": [{"uri": "file:///x.png", "blob": ""}], "content": [{"type": "image", "data": ""}]}
    assert counts == {BLOB_WITHHELD: 2}
    passed, counts = MASKER.mask(value, "redact")
    assert passed == value and counts == {BLOB_UNSCANNED: 2}


def test_settings_reject_unknown_binary_mode() -> None:
    with pytest.raises(ValueError, match="binary"):
        MaskingSettings.model_validate({"profiles": {"p": {"detectors": [], "binary": "drop"}}})


# ----------------------------------------------------------------------------------- properties

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILES = st.sampled_from(["partial", "redact", "pseudo", None])
ssn_digits = st.builds(lambda a, g, s: f"{a:03d}{g:02d}{s:04d}",
                       st.integers(1, 899).filter(lambda a: a != 666), st.integers(1, 99), st.integers(1, 9999))
invisible = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\u034f"])
values = st.one_of(
    st.builds(lambda d, sep: f"SSN {d[:3]}{sep}{d[3:5]}{sep}{d[5:]}", ssn_digits, st.sampled_from(list(" -._/"))),
    st.sampled_from([f"card {CARD}", f"IBAN {IBAN}", "mail jane.doe@example.com", "call (212) 555-0134",
                     "Account holder: Jane Doe", "born 1984-03-05", "Ship to 123 Main Street, Springfield, IL 62704"]),
)


@st.composite
def disguised(draw: st.DrawFn) -> tuple[str, str]:
    plain = draw(values)
    out = []
    for ch in plain:
        if ch.isalnum() and draw(st.booleans()):
            ch = ch.translate(FULLWIDTH)
        out.append(ch)
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(invisible))
    return plain, "".join(out)


@FAST
@given(pair=disguised(), profile=PROFILES)
def test_disguised_variants_are_detected_too(pair: tuple[str, str], profile: str | None) -> None:
    plain, variant = pair
    _, plain_counts = MASKER.mask(plain, profile)
    masked, counts = MASKER.mask(variant, profile)
    assert plain_counts and counts == plain_counts
    # what is left outside the findings keeps its disguise; in canonical form it reads as the plain output
    canon = canonicalize(masked)
    assert (masked if canon is None else canon.text) == MASKER.mask(plain, profile)[0]


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=40), values, st.builds(lambda p: p[1], disguised()))
json_values = st.recursive(json_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.sampled_from(["name", "ssn", "note", "address", "dob", "id", "customer_name", "x"]),
                    kids, max_size=4)), max_leaves=12)


def _shape(v: Any) -> Any:
    if isinstance(v, dict):
        return {"dict": sorted((k, _shape(x)) for k, x in v.items())}
    if isinstance(v, list):
        return [_shape(x) for x in v]
    return "leaf"


@FAST
@given(value=json_values, profile=PROFILES)
def test_idempotent_and_structure_kept(value: Any, profile: str | None) -> None:
    once, _ = MASKER.mask(value, profile)
    twice, counts = MASKER.mask(once, profile)
    assert twice == once and counts == {}
    assert _shape(once) == _shape(value)


@FAST
@given(value=json_values, profile=PROFILES)
def test_json_text_stays_json(value: Any, profile: str | None) -> None:
    text = json.dumps(value)
    masked, _ = MASKER.mask(text, profile)
    assert _shape(json.loads(masked)) == _shape(json.loads(text)) or isinstance(json.loads(text), (int, float))


def test_forced_value_is_masked_in_canonical_form() -> None:
    wide = {"ssn": SSN.translate(FULLWIDTH)}
    assert MASKER.mask(wide, "partial")[0] == {"ssn": "***-**-1120"}
    assert MASKER.mask(wide, "pseudo")[0] == MASKER.mask({"ssn": SSN}, "pseudo")[0]
