"""Single separators beyond space, dash, dot, underscore and slash (outside probe, finding F3).

The probe wrote SSNs, cards and IBANs with `~ : | * = #`, the katakana middle dot `・` and the
katakana prolonged sound mark `ー` (U+30FC, half-width U+FF70) as the dash, and all of them
reached the ledger and the caller in the clear. Fixed as a class (docs/masking.md, *Separators*):

- separators that make a grouped number on their own, like '-': `~` and `*` (and their full-width
  forms), and look-alikes folded to an ASCII separator: dashes (`ー` `ｰ` `⁃` `˗` `➖` between digits
  or everywhere) and dots (`・` `·` `•`);
- keyword separators `: ; = # |`, which also join times, ratios, key=value pairs and table rows:
  an SSN joined by one needs an SSN keyword before it (as a CSV comma does); a card needs none
  (Luhn and the IIN ranges), a run that a like number continues is a list, and an IBAN's mod 97
  is its own evidence.

Every case in POSITIVES leaked before the fix; they run through the Masker the gateway builds from
the shipped example config (`standard`, partial) and through the ledger's profile. The look-alikes
in NEGATIVES must come out unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_masking_properties import _luhn_complete

from ledgergate.config import load_config
from ledgergate.masking.canonical import canonicalize
from ledgergate.masking.engine import Masker
from tests.support.masking_cases import assert_masked_in_place

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ledgergate.yaml"
MASKER = Masker.from_settings(load_config(EXAMPLE, env={"EVERYTHING_KEY": "x"}).settings.masking)
PROFILES = ["standard", None]  # None: the ledger's profile (every detector, redact)

SSN = "078051120"                  # the Woolworth wallet SSN, long published
CARDS = ("4111111111111111", "5555555555554444", "378282246310005")  # Visa, Mastercard, Amex test numbers
IBANS = ("GB82WEST12345698765432", "DE89370400440532013000")         # the registry's examples

# (text before, the sensitive value as written, text after, detector)
POSITIVES: list[tuple[str, str, str, str]] = [
    # the probe's cases
    ("SSN ", "078~05~1120", "", "US_SSN"),
    ("SSN ", "078:05:1120", "", "US_SSN"),
    ("SSN ", "078|05|1120", "", "US_SSN"),
    ("SSN ", "078*05*1120", "", "US_SSN"),
    ("SSN ", "078=05=1120", "", "US_SSN"),
    ("SSN ", "078#05#1120", "", "US_SSN"),
    ("SSN ", "078・05・1120", "", "US_SSN"),
    ("SSN ", "０７８ー０５ー１１２０", "", "US_SSN"),
    ("SSN ", "078ｰ05ｰ1120", "", "US_SSN"),
    ("", "4111~1111~1111~1111", "", "CREDIT_CARD"),
    ("", "4111:1111:1111:1111", "", "CREDIT_CARD"),
    ("", "4111|1111|1111|1111", "", "CREDIT_CARD"),
    ("IBAN ", "GB82:WEST:1234:5698:7654:32", "", "IBAN"),
    # separators that make a number on their own need no keyword, as '-' does not
    ("", "078~05~1120", "", "US_SSN"),
    ("id ", "078*05*1120", " ok", "US_SSN"),
    ("", "078・05・1120", "", "US_SSN"),
    ("", "０７８ー０５ー１１２０", "", "US_SSN"),
    ("memo ", "078ー05ー1120", "", "US_SSN"),            # ASCII digits, U+30FC
    ("", "078ｰ05ｰ1120", " on file", "US_SSN"),
    ("", "078·05·1120", "", "US_SSN"),                    # U+00B7 middle dot
    ("", "078～05～1120", "", "US_SSN"),                   # full-width tilde (NFKC: '~')
    ("", "078＊05＊1120", "", "US_SSN"),                   # full-width asterisk
    ("", "078⁃05⁃1120", "", "US_SSN"),                    # U+2043 hyphen bullet
    ("", "078˗05˗1120", "", "US_SSN"),                    # U+02D7 modifier letter minus
    ("", "078∼05∼1120", "", "US_SSN"),                    # U+223C tilde operator
    ("", "078∗05∗1120", "", "US_SSN"),                    # U+2217 asterisk operator
    ("", "078‧05‧1120", "", "US_SSN"),                    # U+2027 hyphenation point
    ("", "078ー\u200b05ー1120", "", "US_SSN"),             # with a zero-width space inside
    # keyword separators: an SSN after its keyword (any SSN keyword, a few words before)
    ("SSN ", "078;05;1120", " verified", "US_SSN"),
    ("social security ", "078:05:1120", " on file", "US_SSN"),
    ("SS# ", "078#05#1120", "", "US_SSN"),
    ("ssn on file ", "078|05|1120", "", "US_SSN"),
    ("SSN ", "078：05：1120", "", "US_SSN"),               # full-width colon (NFKC: ':')
    ("SSN ", "078∶05∶1120", "", "US_SSN"),                # U+2236 ratio
    # cards: any of them, no keyword (Luhn and the IIN decide)
    ("", "4111*1111*1111*1111", "", "CREDIT_CARD"),
    ("paid with ", "4111=1111=1111=1111", ".", "CREDIT_CARD"),
    ("", "4111#1111#1111#1111", "", "CREDIT_CARD"),
    ("ref ", "4111;1111;1111;1111", " ok", "CREDIT_CARD"),
    ("<td>", "5555|5555|5555|4444", "</td>", "CREDIT_CARD"),
    ("amex ", "3782|822463|10005", "", "CREDIT_CARD"),
    ("amex ", "3782:822463:10005", "", "CREDIT_CARD"),
    ("amex ", "3782~822463~10005", "", "CREDIT_CARD"),
    ("", "5555・5555・5555・4444", "", "CREDIT_CARD"),
    ("", "４１１１ー１１１１ー１１１１ー１１１１", "", "CREDIT_CARD"),
    ("", "4111ｰ1111ｰ1111ｰ1111", "", "CREDIT_CARD"),
    ("", "4111｜1111｜1111｜1111", "", "CREDIT_CARD"),      # full-width bar
    # IBANs: grouped by four with any of them
    ("IBAN ", "GB82|WEST|1234|5698|7654|32", "", "IBAN"),
    ("IBAN ", "GB82~WEST~1234~5698~7654~32", "", "IBAN"),
    ("IBAN ", "DE89=3704=0044=0532=0130=00", "", "IBAN"),
    ("IBAN ", "GB82・WEST・1234・5698・7654・32", "", "IBAN"),
    ("IBAN ", "de89;3704;0044;0532;0130;00", "", "IBAN"),
    ("", "GB82*WEST*1234*5698*7654*32", " payroll", "IBAN"),
]
IDS = [repr(before + value + after)[:60] for before, value, after, _ in POSITIVES]


def _leaks(value: str, detector: str, masked: str) -> bool:
    """Whether the value, or enough of its characters to identify it, is still in the output."""
    plain = canonicalize(masked)
    shown = "".join(ch for ch in (masked if plain is None else plain.text) if ch.isalnum()).upper()
    if detector == "IBAN":
        return any(iban[:-4] in shown or iban[4:12] in shown for iban in IBANS)
    digits = "".join(ch for ch in shown if ch.isdigit())
    numbers = (SSN,) if detector == "US_SSN" else CARDS
    # partial keeps the last four; no longer run of the value's digits may stay
    return value in masked or any(d[:-4] in digits or d[:5] in digits for d in numbers)


@pytest.mark.parametrize("profile", PROFILES, ids=["standard", "ledger"])
@pytest.mark.parametrize(("before", "value", "after", "detector"), POSITIVES, ids=IDS)
def test_separator_is_masked(before: str, value: str, after: str, detector: str, profile: str | None) -> None:
    assert_masked_in_place(MASKER, before, value, after, detector, profile, _leaks)


@pytest.mark.parametrize(("before", "value", "after", "detector"), POSITIVES, ids=IDS)
def test_separator_masking_is_idempotent(before: str, value: str, after: str, detector: str) -> None:
    text = before + value + after
    for profile in PROFILES:
        once, counts = MASKER.mask(text, profile)
        assert counts == {detector: 1}, (profile, once)
        assert MASKER.mask(once, profile) == (once, {}), (profile, once)


def test_probe_wire_shapes() -> None:
    """The probe's transfer memo, as arguments (structured) and as JSON text in a result."""
    memo = {"from_account": "A-2001", "to_account": "A-2003", "amount": 1}
    for text in ("SSN 078:05:1120", "SSN ０７８ー０５ー１１２０", "SSN 078~05~1120"):
        masked, counts = MASKER.mask({**memo, "memo": text}, None)
        assert masked == {**memo, "memo": "SSN [US_SSN]"} and counts == {"US_SSN": 1}, masked
        result = {"content": [{"type": "text", "text": json.dumps({"memo": text}, ensure_ascii=False)}]}
        masked, counts = MASKER.mask(result, "standard")
        assert json.loads(masked["content"][0]["text"]) == {"memo": "SSN ***-**-1120"}, masked
        assert counts == {"US_SSN": 1}


@pytest.mark.parametrize("text", ["DOB 1984~03~05", "born 1984・03・05", "born 03*05*1984",
                                  "date of birth ０３ー０５ー１９８４"])
def test_birth_date_takes_the_same_separators(text: str) -> None:
    masked, counts = MASKER.mask(text, None)
    assert counts == {"DATE_OF_BIRTH": 1} and "1984" not in masked, masked


def test_partial_output() -> None:
    assert MASKER.mask("SSN 078:05:1120", "standard")[0] == "SSN ***-**-1120"
    assert MASKER.mask("SSN ０７８ー０５ー１１２０", "standard")[0] == "SSN ***-**-1120"
    # separators partial does not keep become '*': the output stays plain ASCII
    assert MASKER.mask("card 4111|1111|1111|1111", "standard")[0] == "card ***************1111"
    assert MASKER.mask("card ４１１１ー１１１１ー１１１１ー１１１１", "standard")[0] == "card ****-****-****-1111"


@pytest.mark.parametrize("value", ["078:05:1120", "078;05;1120", "078=05=1120", "078#05#1120", "078|05|1120"])
@pytest.mark.parametrize("profile", PROFILES, ids=["standard", "ledger"])
def test_keyword_separator_ssn_needs_its_keyword(value: str, profile: str | None) -> None:
    """A 3-2-4 joined by ':', ';', '=', '#' or '|' is also a time-like value, a ratio, a key=value
    chain or a table row (`101|12|2048`): without an SSN keyword it is left as it is, as a
    comma-joined one is. With the keyword it is masked (POSITIVES)."""
    for text in (value, f"ref {value} ok", f"row|{value}|x"):
        assert MASKER.mask(text, profile) == (text, {}), text
    assert MASKER.mask(f"SSN {value}", profile)[1] == {"US_SSN": 1}


# Look-alikes: must come out unchanged under every profile.
NEGATIVES = [
    # times, dates and durations
    "10:30:45", "at 23:59:59.999 UTC", "elapsed 123:45:59", "2024-01-15T10:30:45Z", "2024-01-15 10:30:45,123",
    "2024:01:15", "2024:01:15 10:30:45", "2024・01・15", "open 10:00~12:00", "9:30-17:00 daily", "uptime 1234:56:07",
    # ratios, scores, verses, ports
    "16:9", "ratio 1:2:3", "mix 100:20:1000", "score 3:1", "John 3:16", "8080:8080", "5432:5432:5432",
    # addresses
    "2001:db8:85a3::8a2e:370:7334", "2001:4860:4860:0000:0000:0000:0000:8888", "fe80::1ff:fe23:4567:890a",
    "00:11:22:33:44:55", "mac 00-1A-2B-3C-4D-5E",
    # versions, ids, lists and tables (a like number continuing the run makes it a list)
    "1.2.3", "v4~5~6", "2.0.0-rc.1", "build 1~2~3", "4111:1111:1111:1111:1111", "1234:5678:9012:3456:7890:1234",
    "row 4111;1111;1111;1111;2222", "4111|1111|1111|1111|1111", "qty|101|12|2048|x", "|101|12|2048|",
    "a=123&b=45&c=6789", "x=1;y=22;z=333", "items #123 #45 #6789", "#1 #22 #333", "| 123 | 45 | 6789 |",
    # arithmetic
    "3*4*5 = 60", "12*34*56", "2**10", "1~2~3",
    # Japanese and Catalan text: `ー` and `・` are letters and word joiners there
    "コーヒー3杯・ケーキ2個", "ジョン・スミス", "サーバー2026年", "データ・ベース 12 件", "col·lecció 2024", "l·l 12·5",
    "• 12 items", "── 2024 ──",
]


@pytest.mark.parametrize("profile", PROFILES, ids=["standard", "ledger"])
@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alike_is_unchanged(text: str, profile: str | None) -> None:
    assert MASKER.mask(text, profile) == (text, {})


def test_canonical_folds_look_alikes_only_between_digits() -> None:
    """`ー`, `・`, `·`, `•`, `─` are ordinary characters in Japanese, Catalan and drawn text: folded
    only where they join an ASCII digit (so such text keeps its canonical form and cheap path);
    dashes and rare look-alikes are folded wherever they stand."""
    folded = {
        "078ー05ー1120": "078-05-1120", "０７８ー０５ー１１２０": "078-05-1120", "078ｰ05ｰ1120": "078-05-1120",
        "078・05・1120": "078.05.1120", "078･05･1120": "078.05.1120", "078·05·1120": "078.05.1120",
        "GB82・WEST・1234": "GB82.WEST.1234", "12─34": "12-34", "1•2": "1.2",
        "a⁃b": "a-b", "a˗b": "a-b", "a➖b": "a-b", "x∼y": "x~y", "x∗y": "x*y", "x∶y": "x:y", "x∣y": "x|y",
        "1⁄2": "1/2", "x∕y": "x/y", "x⋅y": "x.y",
    }
    for text, expected in folded.items():
        canon = canonicalize(text)
        assert canon is not None and canon.text == expected, (text, canon and canon.text)
    for text in ("コーヒー", "ジョン・スミス", "コーヒー3杯", "l·l", "A・B", "• item", "──┼──", "12 ・ 34"):
        assert canonicalize(text) is None, text
    # a folded joiner maps back to itself: a finding covers exactly the original characters
    canon = canonicalize("SSN ０７８ー０５ー１１２０ ok")
    assert canon is not None and canon.text == "SSN 078-05-1120 ok"
    assert canon.original_span(4, 15) == (4, 15)


# ------------------------------------------------------------------------------------ properties

cards = st.builds(lambda b: _luhn_complete("4" + b), st.text("0123456789", min_size=14, max_size=14))
ssns = st.builds(lambda a, g, s: f"{a:03d}{g:02d}{s:04d}",
                 st.integers(1, 899).filter(lambda a: a != 666), st.integers(1, 99), st.integers(1, 9999))
OWN = ["~", "*", "～", "＊", "ー", "ｰ", "・", "･", "·", "⁃", "∼", "∗"]
KEYWORD = [":", ";", "=", "#", "|", "：", "；", "＝", "＃", "｜"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(card=cards, ssn=ssns, own=st.sampled_from(OWN), keyword=st.sampled_from(KEYWORD),
       profile=st.sampled_from(PROFILES))
def test_generated_values_never_survive(card: str, ssn: str, own: str, keyword: str, profile: str | None) -> None:
    text = (f"card {keyword.join(card[i:i + 4] for i in range(0, 16, 4))} / "
            f"card {own.join(card[i:i + 4] for i in range(0, 16, 4))} / "
            f"id {own.join((ssn[:3], ssn[3:5], ssn[5:]))} / "
            f"SSN {keyword.join((ssn[:3], ssn[3:5], ssn[5:]))} end")
    masked, counts = MASKER.mask(text, profile)
    assert counts == {"CREDIT_CARD": 2, "US_SSN": 2}, (text, masked)
    for part in masked.split(" / "):  # partial keeps each value's last four, and nothing more
        digits = "".join(ch for ch in part if ch.isdigit())
        assert len(digits) <= 4 and card[:12] not in digits and ssn[:5] not in digits, masked
    assert masked.startswith("card ") and masked.endswith(" end")
    assert MASKER.mask(masked, profile) == (masked, {})
