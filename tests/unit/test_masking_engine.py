"""Masker construction, operators and the ledger profile."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ledgergate.masking.engine import LEDGER_PROFILE, Masker, MaskingError
from ledgergate.masking.operators import canonical, make_pseudonym, partial, redact
from ledgergate.masking.settings import MaskingSettings

ALL = ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"]
KEY = "k" * 32


def build(**cfg: object) -> Masker:
    return Masker.from_settings(MaskingSettings.model_construct(**{
        "profiles": {}, "detectors": [], "pseudonym_key": None, **cfg}))


def test_example_config_compiles() -> None:
    from ledgergate.config import load_config

    os.environ.setdefault("EVERYTHING_KEY", "x")
    root = Path(__file__).resolve().parents[2]
    loaded = load_config(str(root / "examples" / "ledgergate.yaml"))
    settings = getattr(loaded, "settings", loaded)
    masker = Masker.from_settings(settings.masking)
    assert masker.profiles == {"standard", LEDGER_PROFILE}
    assert masker.mask("SSN 078-05-1120", "standard") == ("SSN ***-**-1120", {"US_SSN": 1})


@pytest.mark.parametrize(("cfg", "message"), [
    ({"profiles": {"p": {"detectors": ["US_SSN", "NOPE"]}}}, r"profile 'p'.*unknown detector 'NOPE'"),
    ({"detectors": [{"name": "EMP_ID", "pattern": "E(\\d"}]}, r"detector 'EMP_ID'.*bad pattern"),
    ({"detectors": [{"name": "EMP_ID", "pattern": "\\d*"}]}, r"detector 'EMP_ID'.*empty string"),
    ({"detectors": [{"name": "emp", "pattern": "E\\d+"}]}, r"detector 'emp'.*name"),
    ({"detectors": [{"name": "US_SSN", "pattern": "E\\d+"}]}, r"built-in"),
    ({"detectors": [{"name": "EMP"}]}, r"detector 'EMP'.*pattern or keys"),
    ({"profiles": {"ledger": {"detectors": []}}}, r"profile 'ledger'.*reserved"),
    ({"profiles": {"p": {"detectors": ["US_SSN"], "operator": "pseudonym"}}}, r"profile 'p'.*pseudonym_key"),
    ({"profiles": {"p": {"operator": "pseudonym"}}, "pseudonym_key": "short"}, r"profile 'p'.*pseudonym_key"),
])
def test_bad_settings_name_the_culprit(cfg: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MaskingSettings.model_validate(cfg)


def test_from_settings_raises_value_error_directly() -> None:
    from ledgergate.masking.settings import ProfileSettings

    bad = MaskingSettings.model_construct(profiles={"p": ProfileSettings(detectors=["NOPE"])},
                                          detectors=[], pseudonym_key=None)
    with pytest.raises(ValueError, match=r"profile 'p'.*unknown detector 'NOPE'"):
        Masker.from_settings(bad)


def test_custom_detector_pattern_and_keys() -> None:
    m = Masker.from_settings(MaskingSettings.model_validate({
        "detectors": [{"name": "EMPLOYEE_ID", "pattern": r"\bEMP-\d{6}\b", "keys": ["employeeId"]}],
        "profiles": {"hr": {"detectors": ["EMPLOYEE_ID"], "operator": "partial"}},
    }))
    masked, counts = m.mask({"employee_id": "whatever", "note": "see EMP-123456 and EMP-1"}, "hr")
    assert masked == {"employee_id": "****ever", "note": "see ***-**3456 and EMP-1"}
    assert counts == {"EMPLOYEE_ID": 2}
    # The ledger profile has every detector, custom ones included, with redact.
    assert m.mask("EMP-123456 078-05-1120", None) == ("[EMPLOYEE_ID] [US_SSN]", {"EMPLOYEE_ID": 1, "US_SSN": 1})


def test_ledger_profile_never_weaker() -> None:
    m = Masker.from_settings(MaskingSettings.model_validate({
        "profiles": {"p": {"detectors": ALL, "operator": "partial"}, "none": {"detectors": []}}}))
    text = "SSN 078-05-1120 card 4111111111111111 mail a@b.io key AKIAIOSFODNN7EXAMPLE"
    ledger, lc = m.mask_for_ledger(text)
    for prof in ("p", "none"):
        _, pc = m.mask(text, prof)
        assert all(lc.get(k, 0) >= v for k, v in pc.items())
    assert m.mask(text, None) == (ledger, lc)
    assert not re.search(r"\d{4}", ledger)


@pytest.mark.parametrize(("detector", "text", "out"), [
    ("US_SSN", "078-05-1120", "***-**-1120"), ("US_SSN", "078051120", "***-**-1120"),
    ("CREDIT_CARD", "4111111111111111", "************1111"), ("CREDIT_CARD", "4111 1111 1111 1111", "**** **** **** 1111"),
    ("US_BANK_ACCOUNT", "000123456789", "********6789"), ("US_BANK_ACCOUNT", "1234567", "[US_BANK_ACCOUNT]"),
    ("PHONE", "(212) 555-0134", "(***) ***-0134"), ("EMAIL", "Jane@Example.com", "***@Example.com"),
    ("IBAN", "DE89 3704 0044 0532 0130 00", "**** **** **** **** **30 00"),
    ("SECRET", "AKIAIOSFODNN7EXAMPLE", "[SECRET]"), ("X", 'ab"cd\\efgh', "******efgh"),
])
def test_partial(detector: str, text: str, out: str) -> None:
    assert partial(detector, text) == out
    assert redact(detector, text) == f"[{detector}]"


def test_pseudonym_is_keyed_stable_and_joins_formats() -> None:
    p1, p2 = make_pseudonym(b"a" * 32), make_pseudonym(b"b" * 32)
    t = p1("US_SSN", "078-05-1120")
    assert re.fullmatch(r"US_SSN_[0-9a-f]{16}", t)
    assert p1("US_SSN", "078051120") == t                     # same person, other format: joins
    assert p2("US_SSN", "078-05-1120") != t                   # other key: unlinkable
    assert p1("US_BANK_ACCOUNT", "078051120") != t            # other detector: unlinkable
    assert p1("PHONE", "+1 (212) 555-0134") == p1("PHONE", "212.555.0134")
    assert canonical("EMAIL", " A@B.io ") == "a@b.io"


def test_pseudonym_profile_end_to_end_and_idempotent() -> None:
    m = Masker.from_settings(MaskingSettings.model_validate({
        "profiles": {"ps": {"detectors": ALL, "operator": "pseudonym"}}, "pseudonym_key": KEY}))
    value = {"a": "SSN 078-05-1120", "b": {"ssn": "078051120"}}
    once, counts = m.mask(value, "ps")
    assert counts == {"US_SSN": 2}
    assert once["a"].removeprefix("SSN ") == once["b"]["ssn"]
    assert m.mask(once, "ps") == (once, {})
    assert m.mask(once, None)[0] == once                      # ledger leaves pseudonyms alone


def test_profiles_property() -> None:
    m = build(profiles={})
    assert m.profiles == {LEDGER_PROFILE}


def test_internal_error_becomes_masking_error(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Masker.from_settings(MaskingSettings.model_validate({}))

    def boom(*_: object) -> None:
        raise RuntimeError("078-05-1120 leaked in a message")

    monkeypatch.setattr(m._scanner, "find", boom)
    with pytest.raises(MaskingError) as exc:
        m.mask({"t": "some text that is long"}, None)
    assert "078" not in str(exc.value) and exc.value.__cause__ is None
