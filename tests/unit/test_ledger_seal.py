"""Whole-record masking on the way into the ledger (gateway/stages/audit.py `seal`, `Evidence`,
`MaskedLedger`), with the real masker: any field a caller or upstream could fill is masked, the
gateway's own ids, digests and counters are kept exactly, and nothing is masked twice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledgergate.gateway.call import Call
from ledgergate.gateway.stages.audit import UNMASKED_FIELDS, Evidence, MaskedLedger, seal
from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings
from ledgergate.principal import Principal

SSN = "536-22-8143"
MASKER = Masker.from_settings(MaskingSettings())
ALICE = Principal("https://idp", "alice@bank.example", "human", frozenset({"staff"}))


class Ledger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def append(self, event: str, fields: Mapping[str, Any]) -> int:
        self.records.append((event, dict(fields)))
        return len(self.records) - 1


class CountingMasker:
    def __init__(self) -> None:
        self.calls = 0

    def mask(self, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
        return MASKER.mask(value, profile)

    def mask_for_ledger(self, value: Any) -> tuple[Any, dict[str, int]]:
        self.calls += 1
        return MASKER.mask_for_ledger(value)


def test_every_field_of_the_callers_choosing_is_masked_and_the_gateways_own_are_kept() -> None:
    fields = {"request_id": "req_1", "session": "s1", "principal": ALICE.summary(), "server": "bank",
              "args_hmac": "ab" * 32, "args_masked": {"US_SSN": 1}, "masked": {"US_SSN": 2}, "latency_ms": 123456789,
              "count": 536228143, "target": f"bank://c?ssn={SSN}", "detail": f"bad {SSN}", "method": f"x/{SSN}",
              "client": {"name": f"agent {SSN}", "version": "1"}, "anything_new": [f"{SSN}"]}
    sealed = seal(MASKER, fields)
    assert SSN not in repr(sealed)
    for key in UNMASKED_FIELDS & fields.keys():
        assert sealed[key] == fields[key], key
    assert sealed["latency_ms"] == 123456789 and sealed["count"] == 536228143
    assert sealed["principal"]["subject"] == "alice@bank.example", "who asked stays readable"
    assert sealed["client"] == {"name": "agent [US_SSN]", "version": "1"}


async def test_evidence_masks_each_value_once_per_record() -> None:
    masker = CountingMasker()
    ledger = Ledger()
    evidence = Evidence(ledger, masker, lambda v: "digest")
    call = Call(server="bank", principal=ALICE, message={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                          "params": {"name": f"t {SSN}", "arguments": {"a": SSN}}})
    await evidence.record("rpc.request", call, with_args=True, rule="r", decision="allow")
    assert masker.calls == 2  # the record's own fields in one walk, the arguments (for their counts) in another
    view, _ = evidence.mask({"text": SSN})  # as AuditResponse does
    await evidence.record("rpc.response", call, premasked={"response": view}, masked={})
    assert masker.calls == 3  # the response once; the method and target are remembered from the last record
    assert ledger.records[1][1]["response"] == {"text": "[US_SSN]"} and ledger.records[1][1]["target"] == "t [US_SSN]"
    await evidence.append("session.opened", {"session": "s", "client": {"name": SSN}})
    assert masker.calls == 4
    text = repr(ledger.records)
    assert SSN not in text and ledger.records[0][1]["args_masked"] == {"US_SSN": 1}
    assert ledger.records[0][1]["args"] == {"a": "[US_SSN]"} and ledger.records[0][1]["target"] == "t [US_SSN]"


async def test_records_written_outside_the_pipeline_are_masked_with_the_current_masker() -> None:
    ledger = Ledger()
    current = {"masker": MASKER}
    masked = MaskedLedger(ledger, lambda: current["masker"])
    await masked.append("auth.denied", {"server": "api", "reason": "invalid_token",
                                        "detail": f"signing algorithm '{SSN}' is not allowed", "count": 1})
    assert ledger.records == [("auth.denied", {"server": "api", "reason": "invalid_token", "count": 1,
                                               "detail": "signing algorithm '[US_SSN]' is not allowed"})]
