"""Keys that name an account (`to_account`, `fromAccount`, `beneficiary-account`, `account_id`, ...).

An outside probe sent a bank account number as `transfer_funds(to_account="6296819001")`: the key
rules knew `account_number`, `acct` and `bank_account` but not these, and a bare 10-digit value has
no other cue, so the number reached the ledger and the approval preview. Such keys are now a weak
cue (like `name` and `address`): the value is masked as US_BANK_ACCOUNT if it reads as an account
number (6-17 digits, bare or grouped by single spaces or dashes); an internal id (`A-2001`, the demo
bank's), an account kind, a UUID or an e-mail stays as it is (an e-mail is still an EMAIL). Keys in
which another word follows the account (`account_type`, `account_count`, `accounts_total`) name a
property of the account and are no cue.

Every case in the positive tests leaked before the fix (they fail with the masking package of the
tree before it); the negative tests are guards. As in test_masking_gaps.py, both the shipped
example config's `standard` profile (partial) and the ledger's profile (every detector, redact)
are exercised.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from ledgergate.config import load_config
from ledgergate.demo.data import Bank
from ledgergate.masking.engine import Masker
from ledgergate.masking.settings import MaskingSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ledgergate.yaml"
MASKER = Masker.from_settings(load_config(EXAMPLE, env={"EVERYTHING_KEY": "x"}).settings.masking)
PROFILES = ["standard", None]  # None: the ledger's profile (every detector, redact)
PROFILE_IDS = ["standard", "ledger"]
PSEUDO = Masker.from_settings(MaskingSettings.model_validate({
    "profiles": {"pseudo": {"detectors": ["US_BANK_ACCOUNT"], "operator": "pseudonym"}},
    "pseudonym_key": "account-keys-test-key-0123456789",
}))

ACCOUNT = "6296819001"  # the probe's value: 10 digits, no checksum, no other cue
DIGITS = "62968190"     # enough of it to identify it (partial shows the last four)

ACCOUNT_KEYS = [
    "to_account", "from_account", "account", "destination_account", "beneficiary_account", "debit_account",
    "credit_account", "payee_account", "source_account", "target_account", "settlement_account",
    "toAccount", "fromAccount", "ToAccount", "DestinationAccount", "beneficiaryAccount", "payeeAccount",
    "TO_ACCOUNT", "FROM-ACCOUNT", "to-account", "Beneficiary-Account", "payee account", "to.account",
    "ACCOUNT", "Account", "subAccount", "payeeaccount",
    "account_id", "accountId", "AccountID", "account-id", "acct_id", "acctId", "account_nr", "accounts",
    "to_acct", "ｔｏ＿ａｃｃｏｕｎｔ",  # full-width: canonicalised like every key
]
# Keys the rules already knew (a strong rule: any value is masked); guards, they passed before too.
KNOWN_KEYS = ["account_no", "acct_no", "account_number", "accountNumber", "acct", "bank_account"]
# Values that read as an account number (as the canonical form sees them).
ACCOUNT_VALUES: list[tuple[str, Any]] = [
    ("bare", ACCOUNT),
    ("int", int(ACCOUNT)),
    ("integral float", float(ACCOUNT)),
    ("dashes", "6296-8190-01"),
    ("spaces", "6296 8190 01"),
    ("padded", " 6296819001 "),
    ("six digits", "629681"),
    ("seventeen digits", "62968190016296819"),
    ("full-width", "６２９６８１９００１"),
    ("zero-width inside", "6296\u200b819001"),
]


def _shown_digits(value: Any) -> str:
    return "".join(ch for ch in json.dumps(value, ensure_ascii=False) if ch.isdigit())


def _args(key: str, value: Any) -> dict[str, Any]:
    """A `tools/call` request's params, as the ledger and the approval preview get them."""
    return {"name": "transfer_funds", "arguments": {key: value, "amount": 125.5, "memo": "rent"}}


def _assert_masked(out: Any, value: Any, profile: str | None) -> None:
    if profile is None:
        assert out == "[US_BANK_ACCOUNT]", out
    else:  # partial: stars and at most the last four digits (under 8 digits: redacted)
        assert out == "[US_BANK_ACCOUNT]" or ("*" in out and len(_shown_digits(out)) <= 4), out
    written = str(int(value)) if isinstance(value, float) else str(value)
    digits = "".join(ch for ch in unicodedata.normalize("NFKC", written) if ch.isdigit())
    assert digits[:-4] not in _shown_digits(out), out


# ------------------------------------------------------------------------------------ positives

@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("key", ACCOUNT_KEYS)
def test_account_key_in_tool_arguments(key: str, profile: str | None) -> None:
    masked, counts = MASKER.mask(_args(key, ACCOUNT), profile)
    assert counts == {"US_BANK_ACCOUNT": 1}, masked
    out = masked["arguments"]
    assert out[key] == ("[US_BANK_ACCOUNT]" if profile is None else "******9001"), out
    assert out["amount"] == 125.5 and out["memo"] == "rent" and masked["name"] == "transfer_funds"
    assert DIGITS not in _shown_digits(masked)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize(("shape", "value"), ACCOUNT_VALUES, ids=[s for s, _ in ACCOUNT_VALUES])
@pytest.mark.parametrize("key", ["to_account", "fromAccount", "beneficiary-account", "account_id"])
def test_account_shaped_values(key: str, shape: str, value: Any, profile: str | None) -> None:
    masked, counts = MASKER.mask({key: value}, profile)
    assert counts == {"US_BANK_ACCOUNT": 1}, masked
    _assert_masked(masked[key], value, profile)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("key", ["to_account", "toAccount", "payee-account", "accounts"])
def test_account_key_in_a_nested_result(key: str, profile: str | None) -> None:
    """Deep in a `tools/call` result's `structuredContent`, in a list, and in a record under the key."""
    structured = {"transfer": {"status": "done", "legs": [{key: ACCOUNT, "amount": 10}, {key: "A-2002"}]},
                  "history": {key: [ACCOUNT, "6296-8190-02", "A-2003"]},
                  "record": {key: {"number": "6296819003", "routing_number": "021000021", "kind": "savings"}}}
    result = {"content": [{"type": "text", "text": "transfer done"}], "structuredContent": structured,
              "isError": False}
    masked, counts = MASKER.mask(result, profile)
    sc = masked["structuredContent"]
    label = "[US_BANK_ACCOUNT]" if profile is None else None
    legs = sc["transfer"]["legs"]
    assert legs[1] == {key: "A-2002"} and legs[0]["amount"] == 10
    history = sc["history"][key]
    assert history[2] == "A-2003"
    record = sc["record"][key]
    assert record["kind"] == "savings"
    for out in (legs[0][key], history[0], history[1], record["number"]):
        assert (out == label) if label else ("*" in out), out
    assert record["routing_number"] == ("[ABA_ROUTING]" if profile is None else "*****0021")
    assert counts == {"US_BANK_ACCOUNT": 4, "ABA_ROUTING": 1}, masked
    for number in ("629681900", "62968190"):
        assert number not in _shown_digits(masked)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize(("text", "value"), [
    ('{"to_account": "6296 8190 01", "amount": 125.5}', "6296 8190 01"),
    ('{"fromAccount": "6296-8190-01"}', "6296-8190-01"),
    ('{"beneficiary_account":"6296 8190 01"}', "6296 8190 01"),
    ('{"account_id": "6296-819-001", "limit": 4}', "6296-819-001"),
    ("transfer toAccount=6296-8190-01&amount=10", "6296-8190-01"),
    ("Account: 6296 8190 01", "6296 8190 01"),
    (json.dumps({"t": json.dumps({"payee_account": "6296 8190 01"})}), "6296 8190 01"),  # JSON escaped in text
])
def test_account_key_in_text(text: str, value: str, profile: str | None) -> None:
    """The same keys in JSON-as-text and `key=value` text (a bare digit run there already had its
    keyword: grouped account numbers did not)."""
    masked, counts = MASKER.mask(text, profile)
    assert counts == {"US_BANK_ACCOUNT": 1}, masked
    assert value not in masked and "62968190" not in "".join(ch for ch in masked if ch.isdigit())
    if profile is None:
        assert masked == text.replace(value, "[US_BANK_ACCOUNT]")
    if text.startswith("{"):
        json.loads(masked)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_demo_bank_account_numbers_masked_ids_kept(profile: str | None) -> None:
    """The demo bank's `transfer_funds`/`list_transactions` take an internal id (`A-2001`) or an account
    number: the number is masked, the id is an id (not an account number) and stays readable."""
    bank = Bank()
    for account in bank.accounts.values():
        for key in ("to_account", "from_account", "account_id"):
            masked, counts = MASKER.mask(_args(key, account.account_number), profile)
            assert counts == {"US_BANK_ACCOUNT": 1}, (key, masked)
            assert account.account_number[:6] not in _shown_digits(masked)
            kept, none = MASKER.mask(_args(key, account.id), profile)
            assert kept == _args(key, account.id) and none == {}


def _approval_preview(value: Any) -> Any:
    """What an approver is shown: keyed pseudonyms where the masker has them, else the ledger's view."""
    for_approvers = getattr(MASKER, "mask_for_approvers", None)
    if for_approvers is not None:
        return for_approvers(value, b"approval-preview-key-0123456789")[0]
    return MASKER.mask_for_ledger(value)[0]


def test_approval_preview() -> None:
    """The probe's finding: `transfer_funds(to_account=...)` showed the number in the approval preview."""
    one = _approval_preview({"from_account": "A-2004", "to_account": ACCOUNT, "amount": 12500})
    other = _approval_preview({"from_account": "A-2004", "to_account": "6296819002", "amount": 12500})
    assert one["from_account"] == "A-2004" and one["amount"] == 12500
    assert "US_BANK_ACCOUNT" in one["to_account"] and DIGITS not in _shown_digits(one)
    assert DIGITS not in _shown_digits(other)


def test_pseudonym_joins_account_number_spellings() -> None:
    """The key's value gets the same pseudonym as under `account_number`: one account, one token."""
    a, _ = PSEUDO.mask({"to_account": "6296-8190-01"}, "pseudo")
    b, _ = PSEUDO.mask({"account_number": ACCOUNT}, "pseudo")
    c, _ = PSEUDO.mask({"fromAccount": int(ACCOUNT)}, "pseudo")
    assert a["to_account"] == b["account_number"] == c["fromAccount"]
    assert a["to_account"].startswith("US_BANK_ACCOUNT_")


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_idempotent(profile: str | None) -> None:
    value = {"arguments": {"to_account": ACCOUNT, "fromAccount": "6296-8190-01", "account": "A-2001"},
             "text": '{"to_account": "6296 8190 01"}'}
    once, counts = MASKER.mask(value, profile)
    assert counts == {"US_BANK_ACCOUNT": 3}, once
    twice, again = MASKER.mask(once, profile)
    assert twice == once and again == {}


# ------------------------------------------------------------------------------------ guards

@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("key", KNOWN_KEYS)
def test_known_account_keys_still_masked(key: str, profile: str | None) -> None:
    masked, counts = MASKER.mask(_args(key, ACCOUNT), profile)
    assert counts == {"US_BANK_ACCOUNT": 1} and DIGITS not in _shown_digits(masked), masked


NOT_ACCOUNT_NUMBERS: list[Any] = [
    "A-2001", "A-2012", "a-2001", "C-1001", "savings", "checking", "Primary Checking", "brokerage",
    "3f2b8c1e-7d4a-4b6e-9c2f-1a2b3c4d5e6f", "37016759-888d-44f8-aa41-d15edb8570cf",  # UUIDs (one digit-led)
    "acc_1Hh1ZX2eZvKYlo2C", "12345", 12345, 2001, "1234567.89", 1234567.89, 12.5, True, False, None, "",
    "n/a", "A-2001 / A-2002", "user@", "#6296",
]


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("value", NOT_ACCOUNT_NUMBERS, ids=[repr(v)[:40] for v in NOT_ACCOUNT_NUMBERS])
@pytest.mark.parametrize("key", ["to_account", "fromAccount", "account", "account_id", "accounts", "to_acct"])
def test_values_that_are_not_account_numbers_stay(key: str, value: Any, profile: str | None) -> None:
    assert MASKER.mask({key: value}, profile) == ({key: value}, {})
    assert MASKER.mask({key: [value]}, profile) == ({key: [value]}, {})


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize(("value", "detector"), [
    ("jane@example.com", "EMAIL"),                  # an e-mail is found by its own detector, as before
    ("GB82 WEST 1234 5698 7654 32", "IBAN"),        # IBANs are found by value
    ("GB82WEST12345698765432", "IBAN"),
])
def test_other_identifiers_keep_their_own_detector(value: str, detector: str, profile: str | None) -> None:
    masked, counts = MASKER.mask({"to_account": value}, profile)
    assert counts == {detector: 1}, masked


PROPERTY_KEYS: dict[str, Any] = {
    "account_type": "savings", "accountType": "checking", "account_count": 1234567, "accountCount": "1234567",
    "accounts_total": 12345678, "accountsTotal": 12345678.0, "account_balance": 2500000,
    "account_opened_at": 1712345678, "accountStatus": "active", "account_name": "Primary Checking",
    "accounts_scanned": 12, "account_limit": "250000", "discount": 1234567, "accounting_period": 202601,
    "account_holder_count": 123456,
}


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("key", list(PROPERTY_KEYS))
def test_keys_naming_a_property_of_an_account_stay(key: str, profile: str | None) -> None:
    """Another word after the account (`account_type`, `accounts_total`): a count, amount or time, not
    the account, even where the value has 6-17 digits."""
    value = {key: PROPERTY_KEYS[key], "id": "A-2001"}
    assert MASKER.mask(value, profile) == (value, {})


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("text", [
    '{"to_account": "A-2001", "amount": 125.5}',
    '{"fromAccount": "savings", "account_type": "checking"}',
    '{"account": "37016759-888d-44f8-aa41-d15edb8570cf", "status": "active"}',  # a UUID after an account key
    '{"account_id": "A-2001", "accounts_scanned": 12}',
    "toAccount=A-2002&limit=5",
    "Account: Primary Checking",
    "Account A-2001: balance 5234.12",
])
def test_text_lookalikes_stay(text: str, profile: str | None) -> None:
    assert MASKER.mask(text, profile) == (text, {})


def test_profile_without_the_detector_leaves_account_keys_alone() -> None:
    masker = Masker.from_settings(MaskingSettings.model_validate(
        {"profiles": {"mail": {"detectors": ["EMAIL"]}}}))
    value = {"to_account": ACCOUNT, "note": '{"to_account": "6296 8190 01"}'}
    assert masker.mask(value, "mail") == (value, {})


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("key", ["account", "toAccount", "accounts"])
def test_an_accounts_numeric_properties_stay_numbers(key: str, profile: str | None) -> None:
    """In a record under an account key, JSON numbers are the account's properties (a balance, a time:
    6-17 digits too) and stay as they are; a string there is still judged by its shape, and a number
    directly under the key is the account's."""
    record = {"id": "A-2001", "balance": 250000, "opened": 1700000000, "limit": 12345678.5,
              "number": "6296819003"}
    masked, _ = MASKER.mask({key: record, "direct": {key: 6296819004}}, profile)
    kept = masked[key]
    assert (kept["id"], kept["balance"], kept["opened"], kept["limit"]) == ("A-2001", 250000, 1700000000, 12345678.5)
    assert "6296819003" not in json.dumps(kept)
    assert "6296819004" not in json.dumps(masked["direct"])
