"""Passwords in a URL's userinfo (`scheme://user:password@host`) are SECRET findings.

Only the password is masked: the user name and host stay visible, because operators need
them to tell which database or broker a connection string points at. `partial` never shows
any part of a password.
"""

from __future__ import annotations

import json

import pytest

from ledgergate.masking.detectors import TextScanner
from ledgergate.masking.engine import Masker
from ledgergate.masking.names import BUILTIN_DETECTORS, SECRET
from ledgergate.masking.settings import MaskingSettings

# (URL, password, the URL as the ledger stores it)
EXAMPLES = [
    ("postgres://app:S3cr3tPw@db:5432/x", "S3cr3tPw", "postgres://app:[SECRET]@db:5432/x"),
    ("redis://:pw0rdXYZ@cache:6379/0", "pw0rdXYZ", "redis://:[SECRET]@cache:6379/0"),
    ("mysql://root:hunter2hunter2@10.0.0.5/db", "hunter2hunter2", "mysql://root:[SECRET]@10.0.0.5/db"),
    ("amqp://guest:Gu3st-Passw0rd@mq/vhost", "Gu3st-Passw0rd", "amqp://guest:[SECRET]@mq/vhost"),
    ("mongodb+srv://admin:Adm1nPass@cluster0.example.net/", "Adm1nPass",
     "mongodb+srv://admin:[SECRET]@cluster0.example.net/"),
    ("https://u:p4ssw0rd@host.tld", "p4ssw0rd", "https://u:[SECRET]@host.tld"),
]
IDS = [url.split(":", 1)[0] for url, _, _ in EXAMPLES]

# Not a password in a URL: none of these may give a SECRET finding.
NEGATIVES = [
    "jane.doe@example.com",
    "http://host/path?x=a@b",
    "git@github.com:org/repo",
    "ssh://user@host",
    "https://user@host.tld/x",
    "postgres://app:@db:5432/x",  # an empty password: nothing to hide
    "://u:pw0rd@host",  # no scheme
    "see http://example.com/a and write to a:b@c later",  # '@' after the authority ended
]


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker.from_settings(MaskingSettings.model_validate({
        "profiles": {
            "partial_secret": {"detectors": ["SECRET", "EMAIL"], "operator": "partial"},
            "partial_all": {"detectors": list(BUILTIN_DETECTORS), "operator": "partial"},
            "no_secret": {"detectors": ["EMAIL", "US_SSN"], "operator": "redact"},
        },
    }))


@pytest.mark.parametrize(("url", "password", "ledger"), EXAMPLES, ids=IDS)
def test_url_password_masked_in_ledger(masker: Masker, url: str, password: str, ledger: str) -> None:
    masked, counts = masker.mask_for_ledger(url)
    assert masked == ledger
    assert counts == {SECRET: 1}


@pytest.mark.parametrize(("url", "password", "ledger"), EXAMPLES, ids=IDS)
@pytest.mark.parametrize("profile", ["partial_secret", "partial_all"])
def test_url_password_never_partly_shown(masker: Masker, profile: str, url: str, password: str,
                                         ledger: str) -> None:
    masked, counts = masker.mask(url, profile)
    assert masked == ledger  # partial redacts a SECRET whole: user name and host stay
    assert counts == {SECRET: 1}
    assert password not in masked
    assert password[-4:] not in masked
    assert password[:4] not in masked


@pytest.mark.parametrize("profile", [None, "partial_secret", "partial_all"])
def test_one_letter_password_no_longer_read_as_email(masker: Masker, profile: str | None) -> None:
    # was caught only by accident, as an EMAIL `p@host.tld` (which hid the host)
    assert masker.mask("https://u:p@host.tld", profile) == ("https://u:[SECRET]@host.tld", {SECRET: 1})


@pytest.mark.parametrize(("url", "password", "ledger"), EXAMPLES, ids=IDS)
def test_url_password_scanner_span_is_password_only(url: str, password: str, ledger: str) -> None:
    findings = TextScanner().find(url, frozenset({SECRET}))
    assert [(url[s:e], det) for s, e, det in findings] == [(password, SECRET)]


@pytest.mark.parametrize("text", NEGATIVES)
def test_no_secret_without_url_password(masker: Masker, text: str) -> None:
    findings = TextScanner().find(text, frozenset(BUILTIN_DETECTORS))
    assert all(det != SECRET for _, _, det in findings)
    assert SECRET not in masker.mask_for_ledger(text)[1]


def test_url_in_sentence(masker: Masker) -> None:
    text = ("Migration failed: could not connect to postgres://app:S3cr3tPw@db.internal:5432/ledger, "
            "retrying in 5s; page ops@bank.example.com.")
    masked, counts = masker.mask_for_ledger(text)
    assert masked == ("Migration failed: could not connect to postgres://app:[SECRET]@db.internal:5432/ledger, "
                      "retrying in 5s; page [EMAIL].")
    assert counts == {SECRET: 1, "EMAIL": 1}


def test_url_without_path_at_end_of_sentence(masker: Masker) -> None:
    masked, _ = masker.mask_for_ledger("cache is redis://:pw0rdXYZ@cache:6379 now")
    assert masked == "cache is redis://:[SECRET]@cache:6379 now"


def test_url_in_json_value(masker: Masker) -> None:
    value = {"config": {"dsn": "postgres://app:S3cr3tPw@db:5432/x", "pool": 5}}
    masked, counts = masker.mask_for_ledger(value)
    assert masked == {"config": {"dsn": "postgres://app:[SECRET]@db:5432/x", "pool": 5}}
    assert counts == {SECRET: 1}


def test_url_in_json_text_stays_json(masker: Masker) -> None:
    text = json.dumps({"dsn": "amqp://guest:Gu3st-Passw0rd@mq/vhost", "broker": "rabbit"})
    masked, counts = masker.mask_for_ledger(text)
    assert json.loads(masked) == {"dsn": "amqp://guest:[SECRET]@mq/vhost", "broker": "rabbit"}
    assert counts == {SECRET: 1}


def test_url_in_json_text_with_escaped_slashes(masker: Masker) -> None:
    text = '{"dsn": "postgres:\\/\\/app:S3cr3tPw@db:5432\\/x"}'  # PHP's json_encode escapes '/'
    masked, _ = masker.mask_for_ledger(text)
    assert "S3cr3tPw" not in masked
    assert json.loads(masked) == {"dsn": "postgres://app:[SECRET]@db:5432/x"}


@pytest.mark.parametrize("password", ["p%40ss", "p%40ssw%3Ard%2F1", "%F0%9F%94%91key"])
@pytest.mark.parametrize("profile", [None, "partial_secret"])
def test_percent_encoded_password(masker: Masker, profile: str | None, password: str) -> None:
    masked, counts = masker.mask(f"postgres://app:{password}@db:5432/x", profile)
    assert masked == "postgres://app:[SECRET]@db:5432/x"
    assert counts == {SECRET: 1}


def test_unencoded_at_in_password_masked_up_to_last_at(masker: Masker) -> None:
    masked, _ = masker.mask_for_ledger("postgres://u:pa@ss@h.example.com/x")
    assert masked == "postgres://u:[SECRET]@h.example.com/x"


def test_several_urls_in_one_text(masker: Masker) -> None:
    text = "primary postgres://a:Pw1aaaaa@db1/x replica postgres://b:Pw2bbbbb@db2/x"
    masked, counts = masker.mask_for_ledger(text)
    assert masked == "primary postgres://a:[SECRET]@db1/x replica postgres://b:[SECRET]@db2/x"
    assert counts == {SECRET: 2}


def test_pseudonym_profile_hides_password() -> None:
    masker = Masker.from_settings(MaskingSettings.model_validate({
        "profiles": {"p": {"detectors": ["SECRET"], "operator": "pseudonym"}},
        "pseudonym_key": "k" * 32,
    }))
    masked, counts = masker.mask("postgres://app:S3cr3tPw@db:5432/x", "p")
    assert masked.startswith("postgres://app:SECRET_") and masked.endswith("@db:5432/x")
    assert "S3cr3tPw" not in masked
    assert counts == {SECRET: 1}
    again, again_counts = masker.mask(masked, "p")
    assert again == masked and again_counts == {}


@pytest.mark.parametrize(("url", "password", "ledger"), EXAMPLES, ids=IDS)
def test_masking_twice_changes_nothing(masker: Masker, url: str, password: str, ledger: str) -> None:
    assert masker.mask_for_ledger(ledger) == (ledger, {})


def test_profile_without_secret_leaves_url_password_to_other_detectors(masker: Masker) -> None:
    # SECRET is the profile's choice: without it the scan for URL passwords does not run
    assert masker.mask("postgres://app:S3cr3tPw@db:5432/x", "no_secret") == (
        "postgres://app:S3cr3tPw@db:5432/x", {})
