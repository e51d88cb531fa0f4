"""Gaps an outside leak tester found, each closed as a class (all values here are fake/test values):

1. digit groups joined by line breaks, tabs, runs of spaces, CSV commas or '+' (query strings);
2. percent-encoded separators and digits (WHATWG URL percent-encoding), and JSON string escapes;
3. HTML character references for separators or digits (`&#32;`, `&#x2d;`, `&nbsp;`, `&#52;`);
4. passwords and keys in prose (`password hunter2`, `passwd is ...`, `pwd=...`, `api_key sk-...`);
5. bare provider keys with distinctive prefixes (OpenAI/Anthropic `sk-`, Stripe test, GitLab, npm,
   PyPI, SendGrid, Hugging Face).

Every case in POSITIVES leaked before the fix. They run through the Masker the gateway builds
from the shipped example config (`standard`, partial) and through the ledger's profile; the
look-alikes in NEGATIVES must come out unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_masking_properties import _luhn_complete

from ledgergate.config import load_config
from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings
from tests.support.masking_cases import assert_masked_in_place

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ledgergate.yaml"
# What Snapshot.build does with the shipped config: its `standard` profile plus the built-in ledger.
MASKER = Masker.from_settings(load_config(EXAMPLE, env={"EVERYTHING_KEY": "x"}).settings.masking)
PROFILES = ["standard", None]  # None: the ledger's profile (every detector, redact)
PSEUDO = Masker.from_settings(MaskingSettings.model_validate({
    "profiles": {"pseudo": {"detectors": ["US_SSN", "CREDIT_CARD", "SECRET"], "operator": "pseudonym"}},
    "pseudonym_key": "gaps-test-key-0123456789abcdef",
}))

CARD = "4111111111111111"       # the Visa test number
AMEX = "378282246310005"        # the Amex test number
MC = "5555555555554444"         # the Mastercard test number
SSN = "078051120"               # the Woolworth wallet SSN, long published

_FAKE = "FAKEfake0123456789"    # obviously fake key material with digits and both cases

# (text before, the sensitive value as written, text after, detector)
POSITIVES: list[tuple[str, str, str, str]] = [
    # 1. weak joints, in the exact group shapes
    ("card ", "4111\n1111\n1111\n1111", " exp 12/29", "CREDIT_CARD"),
    ("card ", "4111\r\n1111\r\n1111\r\n1111", "", "CREDIT_CARD"),
    ("", "4111\t1111 1111 1111", " on file", "CREDIT_CARD"),
    ("pay with ", "4111  1111  1111  1111", ".", "CREDIT_CARD"),
    ("row: x,", "4111,1111,1111,1111", ",y", "CREDIT_CARD"),
    ("parts ", "5555, 5555, 5555, 4444", " end", "CREDIT_CARD"),
    ("/pay?q=", "4111+1111+1111+1111", "&x=1", "CREDIT_CARD"),
    ("amex ", "3782\t822463\t10005", "", "CREDIT_CARD"),
    ("amex ", "3782+822463+10005", "", "CREDIT_CARD"),
    ("card\n", "4111\n1111\n1111\n1111", "\n123\n", "CREDIT_CARD"),  # a CVV on the next line is no list
    ("id ", "078+05+1120", " ok", "US_SSN"),
    ("SSN\t", "078\t05\t1120", "", "US_SSN"),
    ("", "078\n05\n1120", "", "US_SSN"),
    ("ssn ", "078   05   1120", " verified", "US_SSN"),
    ("SSN ", "078,05,1120", " on file", "US_SSN"),  # a comma SSN needs its keyword
    # 2. percent-encoding (and JSON string escapes, the same idea in JSON-as-text)
    ("", "4111%201111%201111%201111", "", "CREDIT_CARD"),
    ("card ", "4111%2D1111%2D1111%2D1111", " ok", "CREDIT_CARD"),
    ("/lookup?id=", "078%2D05%2D1120", "&next=1", "US_SSN"),
    ("ssn ", "078%2d05%2d1120", "", "US_SSN"),
    ("https://x.example/p?card=", "4111%201111%201111%201111", "&ok=1", "CREDIT_CARD"),
    ("", "%34%31%31%31 1111 1111 1111", " here", "CREDIT_CARD"),
    ("", "4111%0A1111%0A1111%0A1111", "", "CREDIT_CARD"),
    ("", "078%2B05%2B1120", "", "US_SSN"),
    ("", "4111%E2%80%8B1111%E2%80%8B1111%E2%80%8B1111", " ok", "CREDIT_CARD"),  # UTF-8 zero-width space
    ("search?q=", "078+05+1120", "", "US_SSN"),
    ('{"note": "card ', "4111\\n1111\\n1111\\n1111", '"}', "CREDIT_CARD"),      # JSON-as-text `\n`
    ('{"note": "', "\\u0034111 1111 1111 1111", '"}', "CREDIT_CARD"),
    # 3. HTML character references
    ("", "4111&#32;1111&#32;1111&#32;1111", "", "CREDIT_CARD"),
    ("SSN ", "078&#45;05&#45;1120", "", "US_SSN"),
    ("SSN ", "078&#x2d;05&#x2D;1120", "", "US_SSN"),
    ("<td>", "4111&nbsp;1111&nbsp;1111&nbsp;1111", "</td>", "CREDIT_CARD"),
    ("<td>", "4111&nbsp1111&nbsp1111&nbsp1111", "</td>", "CREDIT_CARD"),  # legacy, no ';'
    ("", "&#52;111 1111 1111 1111", " card", "CREDIT_CARD"),
    ("", "&#x34;&#x31;&#x31;&#x31;-1111-1111-1111", "", "CREDIT_CARD"),
    ("<td>", "078&ndash;05&ndash;1120", "</td>", "US_SSN"),
    ("", "4111&#9;1111&#9;1111&#9;1111", "", "CREDIT_CARD"),
    ("SSN ", "078&#8203;-05-1120", "", "US_SSN"),  # a zero-width space written as a reference
    # 4. secrets in prose
    ("password ", "hunter2", "", "SECRET"),
    ("the password is ", "Tr0ub4dor&3", " for now", "SECRET"),
    ("pwd=", "hunter2", "", "SECRET"),
    ("pwd: ", "hunter22", " (temp)", "SECRET"),
    ("passwd is ", "hunter2", ".", "SECRET"),
    ("DB_PASSWORD ", "hunter2!", "", "SECRET"),
    ("api_key ", "sk-abcdefghijklmnopqrstuvwxyz0123", " set", "SECRET"),
    ("API key ", "ABCD1234efgh5678", " rotated", "SECRET"),
    ("passphrase ", "correct-Horse-9", "", "SECRET"),
    ("client secret ", "Xy7-abc123-def", "", "SECRET"),
    # 5. bare keys with distinctive prefixes
    ("key ", "sk-proj-" + _FAKE * 3 + "_x-" + _FAKE, " used", "SECRET"),
    ("", "sk-" + _FAKE * 2 + "ABCDEFGHIJKL", "", "SECRET"),           # legacy 48-character body
    ("", "sk-ant-api03-" + _FAKE * 5 + "-AA", "", "SECRET"),
    ("", "sk-svcacct-" + _FAKE * 3, "", "SECRET"),
    ("stripe ", "sk_test_" + "4eC39HqLyjWDarjtT1zdp7dc", "", "SECRET"),
    ("gitlab ", "glpat-" + "xxxxFAKE0123456789ab", "", "SECRET"),
    ("npm ", "npm_" + _FAKE * 2, "", "SECRET"),
    ("", "pypi-AgEIcHlwaS5vcmc" + (_FAKE + "_-") * 3, "", "SECRET"),
    ("", "SG." + "FAKEfake0123456789abcd" + "." + "FAKEfake0123456789abcdFAKEfake0123456789abc", "", "SECRET"),
    ("hf ", "hf_" + "FAKEfakeFAKEfakeFAKEfakeFAKEfake01", "", "SECRET"),
]
IDS = [repr(before + value + after)[:60] for before, value, after, _ in POSITIVES]


def _leaks(value: str, detector: str, masked: str) -> bool:
    """Whether the value, or enough of its digits to identify it, is still in the output."""
    if detector == "SECRET":
        return value in masked
    digits = {"CREDIT_CARD": (CARD, AMEX, MC), "US_SSN": (SSN,)}[detector]
    shown = "".join(ch for ch in masked if ch.isdigit())
    # no run of the value's digits long enough to identify it (partial keeps the last four)
    return value in masked or any(d[:-4] in shown or d[:6] in shown for d in digits)


@pytest.mark.parametrize("profile", PROFILES, ids=["standard", "ledger"])
@pytest.mark.parametrize(("before", "value", "after", "detector"), POSITIVES, ids=IDS)
def test_gap_is_masked(before: str, value: str, after: str, detector: str, profile: str | None) -> None:
    assert_masked_in_place(MASKER, before, value, after, detector, profile, _leaks)


@pytest.mark.parametrize(("before", "value", "after", "detector"), POSITIVES, ids=IDS)
def test_gap_masking_is_idempotent(before: str, value: str, after: str, detector: str) -> None:
    text = before + value + after
    for masker, profile in ((MASKER, "standard"), (MASKER, None), (PSEUDO, "pseudo")):
        once, counts = masker.mask(text, profile)
        assert counts == {detector: 1}, (profile, once)
        twice, again = masker.mask(once, profile)
        assert twice == once and again == {}, (profile, once, twice)


def test_exact_original_characters_are_replaced() -> None:
    """A finding in the decoded reading covers its escapes, and nothing around them."""
    cases = {
        "a 4111%201111%201111%201111 b": "a [CREDIT_CARD] b",
        "x&#32;078&#45;05&#45;1120&#32;y": "x&#32;[US_SSN]&#32;y",
        "card 4111&nbsp;1111&nbsp;1111&nbsp;1111%20exp": "card [CREDIT_CARD]%20exp",
        "(4111\t1111\t1111\t1111)": "([CREDIT_CARD])",
        # full-width digits and references together: both canonical steps map back
        "Ｃard ４１１１&#32;1111&#x20;１１１１&nbsp;1111 ｘ": "Ｃard [CREDIT_CARD] ｘ",
        # an invisible written as a reference belongs to the character before it, as in canonicalize
        "caf&eacute; SSN 078&#8203;-05-1120&#8203; ok": "caf&eacute; SSN [US_SSN] ok",
    }
    for text, expected in cases.items():
        assert MASKER.mask(text, None)[0] == expected, text


def test_partial_output_shows_plain_last_four() -> None:
    assert MASKER.mask("card 4111%201111%201111%201111", "standard")[0] == "card **** **** **** 1111"
    assert MASKER.mask("SSN 078&#x2d;05&#x2d;1120", "standard")[0] == "SSN ***-**-1120"
    assert MASKER.mask("q=4111+1111+1111+1111", "standard")[0] == "q=****+****+****+1111"


def test_json_text_stays_json() -> None:
    value = {"rows": [{"note": "card 4111\n1111\n1111\n1111", "id": "x"}, {"n": "078%2D05%2D1120"}]}
    text = json.dumps(value)
    masked, counts = MASKER.mask(text, "standard")
    assert counts.get("CREDIT_CARD") == 1 and counts.get("US_SSN") == 1
    parsed = json.loads(masked)
    assert CARD not in json.dumps(parsed).replace("\\n", "")
    assert parsed["rows"][1]["n"] == "***-**-1120"


# Look-alikes: must come out unchanged under every profile.
NEGATIVES = [
    # numeric lists, tables and columns
    "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "years 2019,2020,2021,2022", "[1200, 3400, 5600, 7800, 9000]",
    "ports 8080,8081,8082,8083,8084", "2301,2302,2303,2304,2305", "2301\n2302\n2303\n2304\n2305",
    "id 1234\t5678\t9012\t3456\t7890", "4111\n1111\n1111\n1111\n1111", "x\t101\t12\t2048\t7\n",
    "dims 512,16,2048", "1,234,567", "$12,345,678.90", "&lt;b&gt;total&lt;/b&gt; 1,234",
    # phones, timestamps, versions, arithmetic
    "tel\t212\t555\t0134 x", "2024-01-02\t12:30:45", "2024\t01\t02", "1.2.3+build.4567", "version 4.1.1+1111",
    "1111+2222=3333", "12/29",
    # the word password (and friends) with no value after it
    "reset your password here", "Your password is incorrect.", "password must be at least 12 characters",
    "password-protected file", "forgot password? click here", "The password field is required.",
    "password hashing uses argon2id", "password sha256 hash", "cat /etc/passwd 0644", "passwords 123456 are weak",
    "api key rotation scheduled", "API key is configured", "secret key stored in vault",
    "password was changed on 2024-05-01", "password is case-sensitive", "password: ********", "password [SECRET]",
    "pass 2 tests", "PASS tests/unit/test_x.py::test_a1", "pwd /home/user1", "password policy v2.1",
    # key-like words that are not keys
    "task-runner-abcdefghijklmnopqrstuvwxyz0123456789ABC", "risk-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "sk-learn-compatible-estimator-implementation-x", "hf_hub_download(repo_id)", "npm_config_cache=/tmp",
    # escapes that decode to nothing sensitive
    "go to 100% now", "AT&T and R&D", "a=1&b=2&c=3", "50%20 off", "C:\\new\\table\\2024",
    "https://example.com/search?q=hello%20world&page=2", "caf&eacute; &amp; bar &#169; 2024",
]


@pytest.mark.parametrize("profile", PROFILES, ids=["standard", "ledger"])
@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alike_is_unchanged(text: str, profile: str | None) -> None:
    assert MASKER.mask(text, profile) == (text, {})


@pytest.mark.parametrize("text", [
    "postgres://app:pa%2Fss1@db.internal/x",   # a decoded '/' must not end the password early
    "password=abc%20def1",                       # nor a decoded space end a keyed value
])
def test_decoded_reading_only_adds(text: str) -> None:
    masked, counts = MASKER.mask(text, None)
    assert counts == {"SECRET": 1} and "%" not in masked and "ss1" not in masked and "def1" not in masked


def test_decoder_maps_back_to_whole_escapes() -> None:
    from ledgergate.masking.canonical import decode_escapes

    c = decode_escapes("4111%201111&#45;1111&nbsp;1111")
    assert c is not None and c.text == "4111 1111-1111 1111"
    assert c.original_span(4, 5) == (4, 7)       # ' ' from %20
    assert c.original_span(9, 10) == (11, 16)    # '-' from &#45;
    assert c.original_span(14, 15) == (20, 26)   # NBSP from &nbsp; then NFKC to ' '
    assert decode_escapes("AT&amp;T said \\\"hi\\\"") is None  # nothing that could hide a value
    assert decode_escapes("plain 100% text") is None


# ------------------------------------------------------------------------------------ properties

cards = st.builds(lambda b: _luhn_complete("4" + b), st.text("0123456789", min_size=14, max_size=14))
ssns = st.builds(lambda a, g, s: f"{a:03d}{g:02d}{s:04d}",
                 st.integers(1, 899).filter(lambda a: a != 666), st.integers(1, 99), st.integers(1, 9999))
joints = st.sampled_from(["\n", "\t", "  ", "+", "%20", "%0A", "%2D", "&#32;", "&#45;", "&#x2d;", "&nbsp;",
                          "\\n", "\\t", "&#9;"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(card=cards, ssn=ssns, joint=joints, profile=st.sampled_from(PROFILES))
def test_generated_values_never_survive_and_mask_once(card: str, ssn: str, joint: str, profile: str | None) -> None:
    text = (f"card {joint.join(card[i:i + 4] for i in range(0, 16, 4))} / "
            f"SSN {joint.join((ssn[:3], ssn[3:5], ssn[5:]))} end")
    masked, counts = MASKER.mask(text, profile)
    assert counts == {"CREDIT_CARD": 1, "US_SSN": 1}, (text, masked)
    digits = "".join(ch for ch in masked if ch.isdigit())
    assert card[:12] not in digits and ssn[:5] not in digits
    assert masked.startswith("card ") and masked.endswith(" end")
    assert MASKER.mask(masked, profile) == (masked, {})
