"""The JSON walk: MCP result shapes, key-name rules, structure preservation, odd input."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from ledgergate.masking.engine import BLOB_UNSCANNED, Masker, MaskingError
from ledgergate.masking.settings import MaskingSettings

ALL = ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"]
SSN, CARD = "078-05-1120", "4111111111111111"


@pytest.fixture(scope="module")
def m() -> Masker:
    return Masker.from_settings(MaskingSettings.model_validate({
        "profiles": {"standard": {"detectors": ALL, "operator": "partial"},
                     "mailonly": {"detectors": ["EMAIL"], "operator": "redact"}},
    }))


def test_tools_call_result_text_and_structured_content(m: Masker) -> None:
    record = {"name": "Jane", "ssn": SSN, "card": CARD, "balance": 12.5, "active": True}
    result = {"content": [{"type": "text", "text": json.dumps(record)}],
              "structuredContent": record, "isError": False}
    before = copy.deepcopy(result)
    masked, counts = m.mask(result, "standard")
    assert result == before                                  # input never mutated
    assert counts == {"US_SSN": 2, "CREDIT_CARD": 2}
    text = json.loads(masked["content"][0]["text"])          # JSON-as-text still parses
    assert text == masked["structuredContent"]
    assert masked["structuredContent"] == {"name": "Jane", "ssn": "***-**-1120", "card": "************1111",
                                           "balance": 12.5, "active": True}
    assert masked["isError"] is False and masked["content"][0]["type"] == "text"


def test_resources_read_text_and_blobs(m: Masker) -> None:
    text_blob = base64.b64encode(f"ssn,{SSN}\n".encode()).decode()
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256))).decode()
    result = {"contents": [
        {"uri": "file:///a.txt", "mimeType": "text/plain", "text": f"SSN {SSN}"},
        {"uri": "file:///b.csv", "mimeType": "text/csv", "blob": text_blob},
        {"uri": "file:///c.png", "mimeType": "image/png", "blob": png},
    ]}
    masked, counts = m.mask(result, None)
    assert masked["contents"][0]["text"] == "SSN [US_SSN]"
    assert base64.b64decode(masked["contents"][1]["blob"]).decode() == "ssn,[US_SSN]\n"
    assert masked["contents"][2]["blob"] == png                # binary: left as is, counted
    assert counts == {"US_SSN": 2, BLOB_UNSCANNED: 1}


def test_image_content_data_is_binary(m: Masker) -> None:
    data = base64.b64encode(bytes(range(200, 256)) * 4).decode()
    masked, counts = m.mask({"content": [{"type": "image", "data": data, "mimeType": "image/png"}]}, None)
    assert masked["content"][0]["data"] == data and counts == {BLOB_UNSCANNED: 1}


@pytest.mark.parametrize("kind", [["string", "null"], {"const": "image"}, 3, None, True])
def test_a_type_that_is_not_a_string_beside_data_is_masked_not_refused(m: Masker, kind: object) -> None:
    """JSON Schemas and arbitrary records put lists and objects under `type`; beside `data` that made
    the walk fail (an unhashable set lookup), and every answer carrying one was refused."""
    value = {"type": kind, "data": f"ssn {SSN}", "name": []}
    masked, counts = m.mask(value, None)
    assert masked == {"type": kind, "data": "ssn [US_SSN]", "name": []} and counts == {"US_SSN": 1}


def test_prompts_get_messages(m: Masker) -> None:
    result = {"description": "d", "messages": [
        {"role": "user", "content": {"type": "text", "text": "my card is 4111 1111 1111 1111"}},
        {"role": "assistant", "content": {"type": "resource", "resource": {"uri": "x:", "text": "a@b.io"}}},
    ]}
    masked, counts = m.mask(result, "standard")
    assert masked["messages"][0]["content"]["text"] == "my card is **** **** **** 1111"
    assert masked["messages"][1]["content"]["resource"]["text"] == "***@b.io"
    assert counts == {"CREDIT_CARD": 1, "EMAIL": 1}


def test_sensitive_key_masks_any_shape(m: Masker) -> None:
    value = {"ssn": 78051120, "account_number": {"primary": 12345678901, "alt": ["98765432100", None, True]},
             "routingNumber": "021000021", "password": "x", "note": "fine"}
    masked, counts = m.mask(value, None)
    assert masked == {"ssn": "[US_SSN]",
                      "account_number": {"primary": "[US_BANK_ACCOUNT]", "alt": ["[US_BANK_ACCOUNT]", None, True]},
                      "routingNumber": "[ABA_ROUTING]", "password": "[SECRET]", "note": "fine"}
    assert counts == {"US_SSN": 1, "US_BANK_ACCOUNT": 2, "ABA_ROUTING": 1, "SECRET": 1}


def test_key_rule_respects_profile(m: Masker) -> None:
    masked, counts = m.mask({"ssn": "x-not-an-ssn", "email": "not-an-address"}, "mailonly")
    assert masked == {"ssn": "x-not-an-ssn", "email": "[EMAIL]"}


def test_numbers_outside_sensitive_keys(m: Masker) -> None:
    masked, counts = m.mask({"n": int(CARD), "amount": 123456789, "pi": 3.14, "small": 7}, None)
    assert masked == {"n": "[CREDIT_CARD]", "amount": 123456789, "pi": 3.14, "small": 7}


def test_keys_holding_data_are_masked_and_collisions_kept(m: Masker) -> None:
    value = {SSN: 1, "219-09-9999": 2, 4111111111111111: "k", 5: "five", None: "n", 1.5: "f"}
    masked, counts = m.mask(value, None)
    assert masked == {"[US_SSN]": 1, "[US_SSN] #2": 2, "[CREDIT_CARD]": "k", 5: "five", None: "n", 1.5: "f"}
    assert counts == {"US_SSN": 2, "CREDIT_CARD": 1}


def test_non_sensitive_values_are_identical(m: Masker) -> None:
    value = {"a": [1, 2.5, None, True, "text", {"b": []}], "c": {}, "d": "", "e": "é ✓ 🙂", "f": (1, "x")}
    masked, counts = m.mask(value, "standard")
    assert masked == {**value, "f": [1, "x"]} and counts == {}
    assert masked is not value and masked["a"] is not value["a"]


def test_scalars_at_top_level(m: Masker) -> None:
    assert m.mask(f"SSN {SSN}", "standard") == ("SSN ***-**-1120", {"US_SSN": 1})
    assert m.mask(None, None) == (None, {})
    assert m.mask(42, None) == (42, {})


def test_json_in_text_with_numbers_stays_valid_json(m: Masker) -> None:
    inner = {"account_number": 12345678901, "ids": [4111111111111111, 1], "ssn": None, "x": "SSN 078051120"}
    masked, counts = m.mask(json.dumps(inner), None)
    assert json.loads(masked) == {"account_number": "[US_BANK_ACCOUNT]", "ids": ["[CREDIT_CARD]", 1],
                                  "ssn": None, "x": "SSN [US_SSN]"}
    escaped = json.dumps({"t": json.dumps({"password": 'p"w', "card": CARD})})   # doubly encoded
    masked2, _ = m.mask(escaped, None)
    assert CARD not in masked2 and 'p\\\\"w' not in masked2
    json.loads(json.loads(masked2)["t"])


def test_deep_nesting_does_not_overflow(m: Masker) -> None:
    value: object = f"SSN {SSN}"
    for i in range(50_000):
        value = [value] if i % 2 else {"k": value}
    masked, counts = m.mask(value, None)
    assert counts == {"US_SSN": 1}


def test_huge_string(m: Masker) -> None:
    s = ("x" * 999 + " ") * 5000 + f"SSN {SSN}"
    masked, counts = m.mask(s, None)
    assert counts == {"US_SSN": 1} and masked.endswith("[US_SSN]")
    assert m.mask("1" * 2_000_000, None)[1] == {}
    assert m.mask("a@" * 200_000, None)[1] == {}


@pytest.mark.parametrize("bad", [b"bytes", {1, 2}, object(), {"k": b"v"}, {(1, 2): "tuple key"}])
def test_non_json_fails_closed(m: Masker, bad: object) -> None:
    with pytest.raises(MaskingError) as exc:
        m.mask(bad, None)
    assert exc.value.http_status == 500


def test_cycle_fails_closed(m: Masker) -> None:
    a: list[object] = []
    a.append(a)
    with pytest.raises(MaskingError):
        m.mask(a, None)


def test_unknown_profile_fails_closed(m: Masker) -> None:
    with pytest.raises(MaskingError, match="nope"):
        m.mask("x", "nope")


def test_a_masked_number_in_json_text_is_quoted_but_prose_is_left_alone(m: Masker) -> None:
    as_json = json.dumps([{"account_number": 2951500533, "n": 1}])
    masked, _ = m.mask({"content": [{"type": "text", "text": as_json}]}, "standard")
    assert json.loads(masked["content"][0]["text"]) == [{"account_number": "******0533", "n": 1}]
    prose = "Account A-2001: account number: 2951500533"
    masked, _ = m.mask({"content": [{"type": "text", "text": prose}]}, "standard")
    assert masked["content"][0]["text"] == "Account A-2001: account number: ******0533"
