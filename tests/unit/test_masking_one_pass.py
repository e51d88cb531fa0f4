"""The property the masking stage's one pass rests on (gateway/stages/masking.py): when the ledger's
profile (every detector) finds nothing in a value, no caller profile — whatever its detectors,
operator or blob setting — finds or changes anything in it either. If this ever fails, the stage
would send an answer unmasked that the caller's own pass would have masked."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.masking import MaskResponse
from ledgergate.masking.engine import Masker
from ledgergate.masking.names import BUILTIN_DETECTORS
from ledgergate.masking.settings import MaskingSettings
from ledgergate.policy.decision import Decision
from ledgergate.principal import Principal

DETECTORS = sorted(BUILTIN_DETECTORS)
# every single detector, every pair, all of them; each operator; binary withheld or not; and a
# custom detector (by pattern and by key) that only some profiles enable
PROFILES: dict[str, dict[str, Any]] = {}
for i, combo in enumerate([[d] for d in DETECTORS] + [list(p) for p in itertools.combinations(DETECTORS, 2)]
                          + [DETECTORS, [*DETECTORS, "EMPLOYEE_ID"], ["EMPLOYEE_ID"]]):
    PROFILES[f"p{i}"] = {"detectors": combo, "operator": ("redact", "partial", "pseudonym")[i % 3],
                         "binary": "withhold" if i % 2 else "pass"}
MASKER = Masker.from_settings(MaskingSettings.model_validate({
    "profiles": PROFILES, "pseudonym_key": "one-pass-test-key-0123456789",
    "detectors": [{"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{5}", "keys": ["employee"]}],
}))

FRAGMENTS = [
    "078-05-1120", "078 05 1120", "ssn: 078051120", "4111 1111 1111 1111", "4111111111111111",
    "GB82 WEST 1234 5698 7654 32", "gb82west12345698765432", "alice@example.com", "+1 (415) 555-0100",
    "415.555.0100", "routing 021000021", "account 000123456789", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "Name: John Smith",
    "password=hunter2hunter2", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "Dr. Maria Garcia", "12 Main Street, Springfield", "born 1980-01-02", "date of birth: 02/01/1980",
    "EMP-12345", "2026-11-26", "12:30", "order 42", "id 9", "version 1.2.3", "hello", "Echo: hello 17",
    "１２３-４５-６７８９", "078\u200b-05-1120", "{\"ssn\": 78051120}", "total: 1234567", "USD 100.00",
]
words = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12),
                  st.text("0123456789 -.:/+", max_size=16))
texts = st.lists(words, max_size=5).map(" ".join)
keys = st.one_of(st.sampled_from(["name", "email", "ssn", "employee", "address", "phone", "note", "text",
                                  "data", "dob", "account", "card", "type", "content"]), st.text(max_size=6))
# blobs: standard base64 (text, binary, an SSN), and the forms clients decode too: MIME-wrapped,
# URL-safe, unpadded (an SSN, binary, clean text), and values that are base64 in no form
BLOBS = ["aGVsbG8gd29ybGQ=", "AAECAwQF/w==", "MDc4LTA1LTExMjA=", "c3NuIDA3OC0wNS0xMTIw\n", "c3NuIDA3OC0wNS0xMTIw\r\n",
         "AAECAwQF_w", "Pz8_Pz4-ID0gMDc4LTA1LTExMjA", "aGVsbG8gd29ybGQ", "aGVs\nbG8g\nd29y\nbGQ=", "QUJD!!", "QUJDR"]
leaves = st.one_of(texts, st.integers(), st.integers(min_value=10**8, max_value=10**20), st.booleans(),
                   st.none(), st.sampled_from(BLOBS), st.floats(allow_nan=False),
                   st.sampled_from([4111111111111111.0, -5.555555555554444e15, 4.111111111111117e18, 12.5]))
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_nothing_the_ledger_profile_misses_is_found_by_any_caller_profile(value: Any) -> None:
    _, ledger_found = MASKER.mask_for_ledger(value)
    if ledger_found:
        return
    for name in PROFILES:
        masked, found = MASKER.mask(value, name)
        assert found == {}, (name, found)
        assert masked == value, name


def test_the_generated_values_do_carry_findings() -> None:
    """The property above is only worth something if the fragments are found: every one of the
    sensitive fragments is found by the ledger's profile."""
    sensitive = [f for f in FRAGMENTS if not any(f.startswith(c) for c in (
        "2026-", "12:30", "order", "id ", "version", "hello", "Echo", "total", "USD"))]
    missed = [f for f in sensitive if not MASKER.mask_for_ledger({"note": f})[1]]
    assert not missed


def _call(profile: str) -> Call:
    call = Call(server="s", principal=Principal("p", "p", "human", frozenset()),
                message={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {}}})
    call.decision = Decision("allow", "r", mask=profile)
    return call


async def test_the_stage_sends_a_clean_answer_as_it_came_and_masks_one_with_a_finding() -> None:
    stage = MaskResponse(MASKER)
    clean = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "Echo: hello"}]}}
    call = _call("p0")
    assert await stage.on_response(call, clean) is clean
    assert call.masked == {} and call.ledger_view == (clean, clean["result"])

    email = next(n for n, p in PROFILES.items() if p["detectors"] == ["EMAIL"])
    dirty = {"jsonrpc": "2.0", "id": 1,
             "result": {"content": [{"type": "text", "text": "mail alice@example.com, ssn 078-05-1120"}]}}
    call = _call(email)
    out = await stage.on_response(call, dirty)
    text = out["result"]["content"][0]["text"]
    assert "alice@example.com" not in text and "078-05-1120" in text  # the caller's profile: EMAIL only
    assert call.masked == {"EMAIL": 1}
    ledger_text = call.ledger_view[1]["content"][0]["text"]  # the ledger's: everything
    assert "alice@example.com" not in ledger_text and "078-05-1120" not in ledger_text


def _list_call(profile: str) -> Call:
    call = Call(server="s", principal=Principal("p", "p", "human", frozenset()),
                message={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    call.decision = Decision("allow", "r", mask=profile)
    return call


async def test_a_definition_is_recorded_as_the_caller_is_sent_it_not_rewritten_by_key_names() -> None:
    """A schema's `"ssn": {"type": "string"}` names a field; the ledger used to record it as
    `"type": "[US_SSN]"`, a schema no client was sent. A value in a definition is still masked."""
    stage = MaskResponse(MASKER)
    tool = {"name": "lookup", "description": "find a customer",
            "inputSchema": {"type": "object", "properties": {"ssn": {"type": "string", "description": "their SSN"},
                                                             "card_number": {"type": "string"}}}}
    clean = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [tool]}}
    call = _list_call("p0")
    assert await stage.on_response(call, clean) is clean
    recorded = call.ledger_view[1]["tools"][0]["inputSchema"]["properties"]
    assert recorded == tool["inputSchema"]["properties"], recorded

    leaky = {**tool, "description": "e.g. lookup(ssn='078-05-1120') for alice@example.com"}
    dirty = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [leaky]}}
    call = _list_call(next(iter(PROFILES)))
    await stage.on_response(call, dirty)
    described = call.ledger_view[1]["tools"][0]["description"]
    assert "078-05-1120" not in described and "alice@example.com" not in described
    assert call.ledger_view[1]["tools"][0]["inputSchema"]["properties"]["ssn"] == {"type": "string",
                                                                                  "description": "their SSN"}
