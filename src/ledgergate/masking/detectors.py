"""What counts as sensitive: text patterns, their validators, context rules and key-name rules.

Why one scanner and not one regex per detector: a clean 2 KB tool result has to
pass in microseconds, so every string is searched once by a single combined
pattern whose alternatives all start with a cheap guard (a lookbehind, a
literal or a character class). Only candidates reach Python, and only there do
the checksums run (Luhn, SSN area/group/serial, ABA 3-7-1, IBAN mod 97).

Why context: roughly 89% of random 9-digit numbers are structurally valid SSNs
and 1 in 26 pass the ABA checksum and prefix rule, so a *bare* 9-digit run is
only an SSN / routing number / account number when a keyword for it ("SSN",
"routing", "account", ...) stands just before it with no other number in
between. Formatted values (``123-45-6789``, ``4111 1111 1111 1111``,
``(212) 555-0134``) carry their own evidence and need no keyword.

When a candidate fails validation (or its detector is not in the profile) the
remaining alternatives are tried at the same position before moving on, so a
failed card candidate cannot hide an SSN that starts at the same place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from dataclasses import dataclass
from typing import cast

from ledgergate.masking.canonical import canonicalize
from ledgergate.masking.names import (
    ABA_ROUTING,
    ADDRESS,
    BUILTIN_DETECTORS,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    IBAN,
    PERSON,
    PHONE,
    SECRET,
    US_BANK_ACCOUNT,
    US_SSN,
)
from ledgergate.masking.personal import (
    find_addresses,
    find_birth_dates,
    find_persons,
    looks_like_address,
    looks_like_person,
)
from ledgergate.masking.validators import (
    IBAN_LENGTHS,
    aba_valid,
    card_valid,
    iban_valid,
    ssn_valid,
)

__all__ = [
    "ABA_ROUTING",
    "ADDRESS",
    "BUILTIN_DETECTORS",
    "CREDIT_CARD",
    "DATE_OF_BIRTH",
    "EMAIL",
    "IBAN",
    "PERSON",
    "PHONE",
    "SECRET",
    "US_BANK_ACCOUNT",
    "US_SSN",
    "CustomDetector",
    "Finding",
    "TextScanner",
    "builtin_key_detector",
    "normalize_key",
]

# (start, end, detector): a half-open span of the scanned string.
Finding = tuple[int, int, str]

# --------------------------------------------------------------------------- key-name rules

_KEY_EXACT: dict[str, str] = {
    "ssn": US_SSN, "socialsecurity": US_SSN, "socsec": US_SSN, "itin": US_SSN,
    "acct": US_BANK_ACCOUNT, "dda": US_BANK_ACCOUNT, "accountnumber": US_BANK_ACCOUNT,
    "aba": ABA_ROUTING, "rtn": ABA_ROUTING, "routing": ABA_ROUTING,
    "pan": CREDIT_CARD, "cc": CREDIT_CARD, "ccn": CREDIT_CARD, "cvv": CREDIT_CARD, "cvv2": CREDIT_CARD,
    "cvc": CREDIT_CARD, "cvc2": CREDIT_CARD, "primaryaccountnumber": CREDIT_CARD,
    "iban": IBAN,
    "email": EMAIL, "mail": EMAIL,
    "phone": PHONE, "tel": PHONE, "mobile": PHONE, "telephone": PHONE, "fax": PHONE, "cell": PHONE,
    "token": SECRET, "pwd": SECRET, "pin": SECRET, "cookie": SECRET, "setcookie": SECRET,
    "authorization": SECRET, "proxyauthorization": SECRET, "otp": SECRET,
    "fullname": PERSON, "firstname": PERSON, "lastname": PERSON, "middlename": PERSON, "surname": PERSON,
    "givenname": PERSON, "familyname": PERSON, "legalname": PERSON, "customername": PERSON,
    "clientname": PERSON, "accountholder": PERSON, "accountholdername": PERSON, "holdername": PERSON,
    "cardholder": PERSON, "cardholdername": PERSON, "nameoncard": PERSON, "beneficiaryname": PERSON,
    "applicantname": PERSON, "borrowername": PERSON, "membername": PERSON, "patientname": PERSON,
    "employeename": PERSON, "contactname": PERSON, "maidenname": PERSON, "mothersmaidenname": PERSON,
    "payeename": PERSON, "recipientname": PERSON, "insuredname": PERSON, "ownername": PERSON,
    "signername": PERSON, "primaryholder": PERSON, "jointholder": PERSON, "fname": PERSON, "lname": PERSON,
    "streetaddress": ADDRESS, "homeaddress": ADDRESS, "mailingaddress": ADDRESS,
    "billingaddress": ADDRESS, "shippingaddress": ADDRESS, "residentialaddress": ADDRESS,
    "postaladdress": ADDRESS, "physicaladdress": ADDRESS, "customeraddress": ADDRESS, "street": ADDRESS,
    "streetname": ADDRESS, "addressline": ADDRESS, "addressline1": ADDRESS, "addressline2": ADDRESS,
    "address1": ADDRESS, "address2": ADDRESS, "addr": ADDRESS, "addr1": ADDRESS, "addr2": ADDRESS,
    "residence": ADDRESS, "homeaddr": ADDRESS,
    "dob": DATE_OF_BIRTH, "dateofbirth": DATE_OF_BIRTH, "birthdate": DATE_OF_BIRTH, "birthday": DATE_OF_BIRTH,
    "birthdt": DATE_OF_BIRTH, "dtofbirth": DATE_OF_BIRTH, "bday": DATE_OF_BIRTH,
}
# Generic keys that also name tools, files, hosts and wallets: their value is masked only
# if it reads as the detector's kind of value (a person's name, a postal address).
_KEY_WEAK: dict[str, str] = {"name": PERSON, "displayname": PERSON, "holder": PERSON, "owner": PERSON,
                             "address": ADDRESS, "location": ADDRESS}
# Keys that end by naming an account (`to_account`, `fromAccount`, `beneficiary-account`, `account_id`,
# `accounts`): the account may be given by its number or by an internal id (`A-2001`), a kind
# (`savings`), a UUID or an e-mail, so the value's shape decides (see `account_shaped`). A key in
# which another word follows the account (`account_type`, `account_count`, `accounts_total`,
# `account_opened_at`) names a property of it, not the account: no cue (its value is a count,
# an amount or a time, which can be 6-17 digits too).
_KEY_WEAK_SUFFIXES: tuple[str, ...] = (
    "account", "accounts", "acct", "accts", "accountid", "accountids", "acctid", "acctids",
    "accountnr", "acctnr",
)
WEAK = "?"  # suffix of a detector name from a generic key: the value's shape decides

# Checked longest first, so "primaryaccountnumber" is a card before "accountnumber" is an account.
_KEY_SUFFIXES: tuple[tuple[str, str], ...] = tuple(sorted((
    ("ssn", US_SSN), ("socialsecuritynumber", US_SSN), ("socialsecurityno", US_SSN),
    ("socialsecuritynum", US_SSN), ("socialsecurity", US_SSN),
    ("accountnumber", US_BANK_ACCOUNT), ("accountno", US_BANK_ACCOUNT), ("accountnum", US_BANK_ACCOUNT),
    ("acctnumber", US_BANK_ACCOUNT), ("acctno", US_BANK_ACCOUNT), ("acctnum", US_BANK_ACCOUNT),
    ("bankaccount", US_BANK_ACCOUNT), ("ddanumber", US_BANK_ACCOUNT),
    ("routingnumber", ABA_ROUTING), ("routingno", ABA_ROUTING), ("routingnum", ABA_ROUTING),
    ("abanumber", ABA_ROUTING), ("abano", ABA_ROUTING), ("abanum", ABA_ROUTING),
    ("routingtransitnumber", ABA_ROUTING),
    ("cardnumber", CREDIT_CARD), ("cardno", CREDIT_CARD), ("cardnum", CREDIT_CARD),
    ("creditcard", CREDIT_CARD), ("debitcard", CREDIT_CARD), ("ccnumber", CREDIT_CARD),
    ("primaryaccountnumber", CREDIT_CARD), ("cardpan", CREDIT_CARD), ("cvv", CREDIT_CARD),
    ("iban", IBAN),
    ("email", EMAIL), ("emailaddress", EMAIL),
    ("phonenumber", PHONE), ("phoneno", PHONE), ("phonenum", PHONE), ("phone", PHONE),
    ("mobilenumber", PHONE), ("mobilephone", PHONE), ("cellphone", PHONE), ("telephone", PHONE),
    ("faxnumber", PHONE),
    ("password", SECRET), ("passwd", SECRET), ("passphrase", SECRET), ("secret", SECRET),
    ("secretkey", SECRET), ("secretaccesskey", SECRET), ("clientsecret", SECRET),
    ("apikey", SECRET), ("apitoken", SECRET), ("accesstoken", SECRET), ("refreshtoken", SECRET),
    ("authtoken", SECRET), ("bearertoken", SECRET), ("idtoken", SECRET), ("sessiontoken", SECRET),
    ("securitytoken", SECRET), ("privatekey", SECRET), ("signingkey", SECRET),
    ("credentials", SECRET), ("credential", SECRET),
    ("fullname", PERSON), ("firstname", PERSON), ("lastname", PERSON), ("legalname", PERSON),
    ("holdername", PERSON), ("accountholder", PERSON), ("cardholder", PERSON), ("middlename", PERSON),
    ("surname", PERSON), ("maidenname", PERSON), ("customername", PERSON), ("clientname", PERSON),
    ("streetaddress", ADDRESS), ("homeaddress", ADDRESS), ("mailingaddress", ADDRESS),
    ("billingaddress", ADDRESS), ("shippingaddress", ADDRESS), ("postaladdress", ADDRESS),
    ("residentialaddress", ADDRESS), ("physicaladdress", ADDRESS), ("addressline1", ADDRESS),
    ("addressline2", ADDRESS),
    ("dateofbirth", DATE_OF_BIRTH), ("birthdate", DATE_OF_BIRTH), ("dob", DATE_OF_BIRTH),
    ("birthday", DATE_OF_BIRTH),
), key=lambda pair: -len(pair[0])))


def normalize_key(key: str) -> str:
    """`accountNumber`, `account_number`, `Account-Number` and `account number` compare equal."""
    return "".join(ch for ch in key.lower() if ch.isalnum())


@lru_cache(maxsize=4096)
def builtin_key_detector(key: str) -> str | None:
    """The built-in detector a structured key names, e.g. ``"ssn"`` → US_SSN, or None.

    A generic key (`name`, `address`, `to_account`) gives the detector with the WEAK suffix
    (``"PERSON?"``): its value is masked only if `weak_value_matches` says so. Cached by the key
    as written: the same few keys recur in every message, in text too.
    """
    return _key_rule(normalize_key(key if key.isascii() else _canonical_key(key)))


@lru_cache(maxsize=4096)
def _key_rule(norm: str) -> str | None:
    """The rule for a normalised key; cached because the same few keys come in every message."""
    if not norm:
        return None
    hit = _KEY_EXACT.get(norm)
    if hit is not None:
        return hit
    for suffix, detector in _KEY_SUFFIXES:
        if norm.endswith(suffix):
            return detector
    weak = _KEY_WEAK.get(norm)
    if weak is not None:
        return weak + WEAK
    if norm.endswith(_KEY_WEAK_SUFFIXES):
        return US_BANK_ACCOUNT + WEAK
    return None


_MASK_TOKEN = re.compile(r"\[[A-Z][A-Za-z0-9_]*\]|[A-Z][A-Z0-9_]*_[0-9a-f]{16}")


def _canonical_key(key: str) -> str:
    c = canonicalize(key)
    return key if c is None else c.text


# An account number as a whole value: digit groups joined by single spaces or dashes. Most values
# under account keys are ids or kinds (`A-2001`, `savings`): rejected at their first character.
_ACCOUNT_SHAPE = re.compile(r"\s*(?P<n>[0-9]+(?:[ -][0-9]+)*)\s*")
_ACCOUNT_MIN, _ACCOUNT_MAX = 6, 17  # the digit counts US_BANK_ACCOUNT takes in text


def account_shaped(value: str) -> bool:
    """Whether a whole (canonical) value reads as an account number: 6-17 digits, bare or grouped
    by single spaces or dashes (`6296819001`, `6296-8190-01`). Not `A-2001`, `savings`, a UUID,
    an e-mail, an amount (`1234567.89`) or a short number. (No operator's output has this shape.)"""
    m = _ACCOUNT_SHAPE.fullmatch(value)
    if m is None:
        return False
    n = m.group("n")
    return _ACCOUNT_MIN <= len(n) - n.count(" ") - n.count("-") <= _ACCOUNT_MAX


def weak_value_matches(detector: str, value: str) -> bool:
    """Whether a value under a generic key is the detector's kind of value."""
    if detector == US_BANK_ACCOUNT:
        if value.isascii():
            return account_shaped(value)
        c = canonicalize(value)
        return account_shaped(value if c is None else c.text)
    if _MASK_TOKEN.search(value) is not None:
        return False  # holds what an earlier pass produced: judged by the scanner, not as a whole
    if not value.isascii():
        c = canonicalize(value)
        if c is not None:
            value = c.text
    if detector == PERSON:
        return looks_like_person(value)
    if detector == ADDRESS:
        return looks_like_address(value)
    return True


# --------------------------------------------------------------------------- key names in text

# Key names recognised in free text and JSON-as-text right before ':' or '='. A tiny
# grammar rendered twice: forward (documentation, tests) and reversed, because the
# scanner anchors on the separator and reads the key backwards (see TextScanner).
_S = "~"  # optional separator [_ .-]?
_Node = object


def _opt(*seq: _Node) -> tuple[str, tuple[_Node, ...]]:
    return ("?", seq)


def _alt(*choices: _Node) -> tuple[str, tuple[_Node, ...]]:
    return ("|", choices)


_NUM = _alt("number", "num", "no")
# Keys naming an account (a weak rule: the value's shape decides); unlike the others they may be
# glued to a word before them (`toAccount`, see _KEY_SPELLINGS).
_ACCOUNT_GRAMMAR: tuple[tuple[_Node, ...], ...] = (
    ("account", _opt(_S, _alt("id", "nr"))),
    ("accounts",),
    ("acct", _S, _alt("id", "nr")),
)
_KEY_GRAMMAR: tuple[tuple[_Node, ...], ...] = (
    ("social", _S, "security", _opt(_S, _NUM)),
    ("ssn",),
    (_opt("bank", _S), _alt("account", "acct"), _S, _NUM),
    ("bank", _S, "account"),
    *_ACCOUNT_GRAMMAR,
    ("routing", _S, _NUM),
    ("aba", _S, _NUM),
    (_opt(_alt("credit", "debit"), _S), "card", _S, _NUM),
    ("credit", _S, "card"),
    ("iban",),
    ("phone", _opt(_S, _NUM)),
    ("mobile", _S, _alt("number", "phone")),
    ("telephone",),
    (_opt(_alt("client", "aws"), _S), "secret", _opt(_S, _opt("access", _S), "key")),
    (_alt("password", "passwd", "passphrase", "pwd"),),
    ("api", _S, _alt("key", "token")),
    (_alt("access", "refresh", "auth", "bearer", "id", "session", "security"), _S, "token"),
    ("private", _S, "key"),
    ("authorization",),
    (_opt(_alt("full", "first", "last", "legal", "customer", "client", "holder", "middle", "given", "family"), _S),
     "name"),
    ("surname",),
    (_alt("account", "card"), _S, "holder", _opt(_S, "name")),
    (_opt(_alt("street", "home", "mailing", "billing", "shipping", "postal", "residential"), _S), "address"),
    ("dob",),
    ("date", _S, "of", _S, "birth"),
    ("birth", _S, _alt("date", "day")),
)


def _render(node: _Node, rev: bool) -> str:
    if node == _S:
        return "[_ .-]?"
    if isinstance(node, str):
        return re.escape(node[::-1] if rev else node)
    kind, items = cast(tuple[str, tuple[_Node, ...]], node)
    if kind == "|":
        return "(?:" + "|".join(_render(x, rev) for x in items) + ")"
    if kind == "?":
        return "(?:" + _render_seq(items, rev) + ")?"
    return _render_seq(node, rev)  # type: ignore[arg-type]


def _render_seq(seq: tuple[_Node, ...], rev: bool) -> str:
    parts = [_render(x, rev) for x in seq]
    return "".join(reversed(parts) if rev else parts)


# Forward form: what a key looks like in text (kept for docs and tests).
KEYED_NAMES_RE = re.compile(
    r"(?i:" + "|".join(_render_seq(g, False) for g in _KEY_GRAMMAR) + r"|token)"
)
# Reversed form, matched on text[::-1]: separator first (a charset, so `re` skips to
# the few ':'/'=' quickly), then the key read backwards, then the key's left boundary.
def _last_chars(node: _Node) -> set[str]:
    """Characters a key of the grammar can end with (the first the reversed scan reads)."""
    if isinstance(node, str):
        return set() if node == _S else {node[-1]}
    kind, items = cast(tuple[str, tuple[_Node, ...]], node)
    if kind == "|":
        return set().union(*(_last_chars(x) for x in items))
    return _seq_last_chars(items)


def _seq_last_chars(seq: tuple[_Node, ...]) -> set[str]:
    out: set[str] = set()
    for node in reversed(seq):
        out |= _last_chars(node)
        optional = node == _S or (isinstance(node, tuple) and node[0] == "?")
        if not optional:
            break
    return out


_KEY_LAST = "".join(sorted(set().union(*(_seq_last_chars(g) for g in _KEY_GRAMMAR)) | {"n"}))
_SEP_TOKEN = "\x00"  # one required separator character, [_ .-]


def _spell(node: _Node) -> list[tuple[str, ...]]:
    """Every spelling of a grammar node, as tuples of single characters and _SEP_TOKEN."""
    if node == _S:
        return [(), (_SEP_TOKEN,)]
    if isinstance(node, str):
        return [tuple(node)]
    kind, items = cast(tuple[str, tuple[_Node, ...]], node)
    if kind == "|":
        return [sp for x in items for sp in _spell(x)]
    if kind == "?":
        return [(), *_spell_seq(items)]
    return _spell_seq(cast(tuple[_Node, ...], node))


def _spell_seq(seq: tuple[_Node, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for node in seq:
        out = [a + b for a in out for b in _spell(node)]
    return out


def _trie_regex(spellings: dict[tuple[str, ...], str]) -> str:
    """One regex for many literal spellings, factored by common prefix.

    Why: `re` tries alternatives one by one, but skips in C an alternative whose first item
    is a literal or a character set that does not match. Factored, each ':' of ordinary JSON
    costs one or two such checks instead of one entry into every alternative.
    """
    trie: dict[str, object] = {}
    for tokens, end in spellings.items():
        node = trie
        for tok in tokens:
            node = cast(dict[str, object], node.setdefault(tok, {}))
        node[""] = end  # the end of a key: its boundary pattern

    def render(node: dict[str, object]) -> str:
        parts = [("[_ .-]" if tok == _SEP_TOKEN else re.escape(tok)) + render(cast(dict[str, object], child))
                 for tok, child in sorted(node.items()) if tok != ""]
        if "" in node:
            parts.append(cast(str, node[""]))  # after the longer keys: the longest key wins
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"

    return render(trie)


_KEY_SPELLINGS: dict[tuple[str, ...], str] = {
    tuple(reversed(sp)): "(?![A-Za-z0-9])" for g in _KEY_GRAMMAR for sp in _spell_seq(g)
}
# `token` alone is a key only as a whole word: `next_page_token` and `token_count` are not secrets.
_KEY_SPELLINGS[tuple("nekot")] = "(?![A-Za-z0-9_.-])"
# A key that ends in `account` names an account whatever word is glued before it (`toAccount`,
# `payeeaccount`): no left boundary. A longer key of the grammar (`bankAccount`) still wins.
for _g in _ACCOUNT_GRAMMAR:
    for _sp in _spell_seq(_g):
        _KEY_SPELLINGS[tuple(reversed(_sp))] = ""
# The lookahead right after the separator rejects most ':' of ordinary JSON inside `re`.
# An optional run of backslashes before the key's opening quote: JSON escaped inside text.
_KEYED_REV_SRC = (
    rf"[:=](?=[ \t]*(?:[\"']\\*)?[{_KEY_LAST}{_KEY_LAST.upper()}])[ \t]*(?:[\"']\\*)?(?P<rk>"
    + _trie_regex(_KEY_SPELLINGS) + ")"
)
# Matched on the lower-cased reversed text (case-sensitive literals let `re` reject
# alternatives on their first character); the IGNORECASE twin is for the rare text
# whose lower-casing changes its length (e.g. 'İ').
_KEYED_REV = re.compile(_KEYED_REV_SRC)
_KEYED_REV_I = re.compile(_KEYED_REV_SRC, re.IGNORECASE)
# Every key of the grammar contains one of these: a cheap `in` gate before the keyed scan,
# per detector so a profile only pays for the keys it can use.
_STEMS_BY_DETECTOR: dict[str, tuple[str, ...]] = {
    US_SSN: ("ssn", "social"), US_BANK_ACCOUNT: ("acc",), ABA_ROUTING: ("routing", "aba"),
    CREDIT_CARD: ("card",), IBAN: ("iban",), PHONE: ("phone", "mobile"),
    SECRET: ("secret", "pass", "pwd", "api", "token", "private", "authorization"),
    PERSON: ("name", "holder"), ADDRESS: ("address",), DATE_OF_BIRTH: ("dob", "birth"),  # EMAIL: none
}
_VALUE_STOP = r"""\s"',;&}\]\)<>"""
_KEYED_VALUE = re.compile(
    r"[ \t]*(?:\"(?P<kq>(?:[^\"\\\n]|\\.)*)\"|'(?P<ks>(?:[^'\\\n]|\\.)*)'"
    # a value quoted inside JSON escaped once (\"...\"): a backslash run of 4j+1 before a quote
    # closes it, 4j+3 is an escaped quote inside it, any other run is an escape sequence
    r"|\\\"(?P<ke>(?:[^\"\\\n]|\\+(?![\\\"])|(?:\\\\\\\\)*\\\\\\\")*?)(?:\\\\\\\\)*\\\""
    # deeper escaping: left to the other detectors rather than cut in the wrong place
    r"|(?P<deep>\\{2,}\")"
    # a digit run takes every separator and whatever sticks to it: no tail left bare; a bare value
    # never starts with '[' or '{' (a JSON container in text: cutting into it would break the JSON)
    rf"|(?P<ku>(?i:(?:bearer|basic|token)[ \t]+)?"
    rf"(?:\d[\d \-./()_]*\d[^{_VALUE_STOP}]*|[^{_VALUE_STOP}\[{{][^{_VALUE_STOP}]*)))"
)
# Unquoted values of names, addresses and dates run to the end of the phrase, not the first space.
_PHRASE_TAIL = re.compile(r"[^\n,;\"'<>{}\[\]|]*")
_ADDRESS_TAIL = re.compile(r"[^\n;\"'<>{}\[\]|]*")  # an address has commas in it: the line ends it
_PHRASES = frozenset({PERSON, ADDRESS, DATE_OF_BIRTH})
_LABEL_AT = re.compile(r"[ \t]*\[[A-Z][A-Za-z0-9_]*\]")

# --------------------------------------------------------------------------- patterns

_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,-]*)"
)

# Every alternative starts with a literal, so `re` can skip ahead; each is gated by `in`.
_TOKEN = re.compile("|".join((
    r"AKIA[A-Z0-9]{16}(?![A-Za-z0-9])", r"ASIA[A-Z0-9]{16}(?![A-Za-z0-9])",   # AWS access key ids
    r"ABIA[A-Z0-9]{16}(?![A-Za-z0-9])", r"ACCA[A-Z0-9]{16}(?![A-Za-z0-9])",
    r"A3T[A-Z0-9][A-Z0-9]{16}(?![A-Za-z0-9])",
    r"gh[pousr]_[A-Za-z0-9]{36,255}",                                       # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,255}",                                     # GitHub fine-grained PAT
    r"xox[abposre]-[A-Za-z0-9-]{10,250}",                                   # Slack tokens
    r"xapp-\d-[A-Za-z0-9-]{10,250}",                                        # Slack app tokens
    r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{8,}",   # Slack webhooks
    r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",           # JWT (JWS compact)
    r"sk_live_[A-Za-z0-9]{16,}", r"rk_live_[A-Za-z0-9]{16,}",               # Stripe live keys
    r"sk_test_[A-Za-z0-9]{16,}", r"rk_test_[A-Za-z0-9]{16,}",               # Stripe test-mode keys
    r"AIza[0-9A-Za-z_-]{35}",                                               # Google API key
    # OpenAI (`sk-`, `sk-proj-`, `sk-svcacct-`, `sk-admin-`) and Anthropic (`sk-ant-api03-`) keys:
    # a random base62 body, so a digit and an upper-case letter are in it; `task-`, `disk-` and
    # `sk-learn-style-words` are not keys (the lookbehind sits after the literal, for speed)
    (r"sk-(?<![A-Za-z0-9_-]sk-)(?=[A-Za-z0-9_-]*?[0-9])(?=[A-Za-z0-9_-]*?[A-Z])[A-Za-z0-9_-]{32,}"
     r"(?![A-Za-z0-9_-])"),
    r"glpat-[A-Za-z0-9_-]{20,}",                                            # GitLab personal access token
    r"npm_(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{36}(?![A-Za-z0-9])",             # npm access token
    r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",                              # PyPI API token (macaroon)
    r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])",            # SendGrid API key
    r"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{34}(?![A-Za-z0-9_])",              # Hugging Face access token
)))
_TOKEN_GATES = ("AKIA", "ASIA", "ABIA", "ACCA", "A3T", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
                "github_pat_", "xox", "xapp-", "hooks.slack.com", "eyJ", "_live_", "AIza")
# Prefixes whose first letter is common in prose (s, n, p, h) are gated on their last character,
# punctuation, with a lookbehind for the rest: `re` stops far less often at '-', '_' and '.'.
_PUNCT_GATES = ("sk-", "glpat-", "pypi-", "npm_", "hf_", "_test_", "SG.")
_TOKEN_GATE_SRC = "|".join([*(re.escape(g) for g in _TOKEN_GATES),
                            *(f"{re.escape(g[-1])}(?<={re.escape(g)})" for g in _PUNCT_GATES)])
_TOKEN_GATE = re.compile(_TOKEN_GATE_SRC)

# A password or key written in prose, with no ':' or '=' for the keyed rules to anchor on:
# "password hunter2", "passwd is hunter2", "api key sk-...". Matched on lower-cased text.
# The keyword stands alone (not `/etc/passwd`, `passwords`, `mypassword`); the value is the
# one token after it, and counts only if it reads as a credential (see _credential_like).
_PROSE_SECRET = re.compile(
    r"(?:pass(?:word|wd|phrase|code)|api[_ .-]?(?:key|token|secret)|secret[_ .-]?key|client[_ .-]?secret)"
    r"(?![a-z0-9])[ \t]+(?:(?:is|was)[ \t]+)?(?P<v>[^\s\"'`<>()\[\]{}|,;]+)"
)
_PROSE_STEMS = frozenset({"pass", "api", "secret"})  # each prose keyword contains one
_PROSE_NOT_AFTER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789/\\.")  # left of the keyword
_PROSE_MIN = 6  # shorter "values" after the word password are mostly words and counts
_PROSE_TRAILER = ".:;"  # sentence punctuation after the value (a final "!" or "?" may be the password's)
# Evidence that a word is a credential and not English: a digit, a symbol people put in
# passwords, or a capital after a small letter ("hunter2", "P@ss", "cOrrect"). `-`, `_`, '.'
# and '/' are not evidence: "case-sensitive", "/home/user" and "reset_link" are words.
_CREDENTIAL_EVIDENCE = re.compile(r"[0-9!@#$%^&*+=~?]|[a-z][A-Z]")
# Words with digits that follow "password" in ordinary technical prose: hash algorithms.
_NOT_A_PASSWORD = re.compile(r"(?i)(?:sha-?(?:1|224|256|384|512)|md[45]|argon2(?:id|i|d)?|pbkdf2|bcrypt|scrypt)s?")

# A password in a URL's userinfo (`postgres://app:S3cr3t@db:5432/x`): only text with both
# `://` (or its JSON-escaped `:\/\/`) and '@' is looked at. The authority runs to the first
# '/', whitespace or quote; the userinfo ends at its last '@'; the password is what follows
# the userinfo's first ':' (a user name cannot hold one). `?` and `#` are not taken as ends:
# an unencoded one in a password would otherwise leave its tail bare.
_URL_SEP = re.compile(r":(?://|\\/\\/)")
_URL_AUTHORITY_END = re.compile(r"[/\s\"'`]")
_URL_SCHEME = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-.")

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)

# Any letter case; groups of four joined by one separator of any kind, the keyword ones included:
# the country's length and mod 97 are the evidence, so `:`, `=` or `|` between groups need no cue.
_IBAN_SEP_CLASS = "[ ._/~*:;=#|-]"
_IBAN = re.compile(
    rf"[A-Za-z][A-Za-z]\d\d(?:[A-Za-z0-9]{{11,30}}|(?:{_IBAN_SEP_CLASS}[A-Za-z0-9]{{4}}){{2,7}}"
    rf"(?:{_IBAN_SEP_CLASS}[A-Za-z0-9]{{1,4}})?)(?![A-Za-z0-9])"
)
_IBAN_SEP = frozenset(" ._/~*:;=#|-")
# Where an IBAN can start: two digits after two letters. Digit-led, so `re` tries few places
# (a letter-led search would stop at every letter of every word).
_IBAN_HEAD = re.compile(r"[0-9](?<=[A-Za-z]{2}[0-9])[0-9]")

# A run of at least 6 digits joined by at most two separator characters: the only
# places where SSNs, cards, routing/account numbers and phones can be. A keyword separator
# (below) joins a run too, so the scan that is run anyway finds its candidates (no second pass
# over every ':' of a JSON text), but only after three digits or before four, as in an SSN or a
# card: times (`10:30:45`, in every timestamp) make no run and cost no Python call.
# Paying for the keyword branch: `[0-9]`, not `\d` (scanned text is canonical: every other digit
# became ASCII, and `re` tests the ASCII class faster), and a run is tried only from its first
# digit (a start inside a run that failed cannot succeed: it has fewer digits, the same joints).
_CLUSTER_TAIL = r"(?:[ .()_/~*-]{0,2}[0-9]|[:;=#|](?:(?<=[0-9]{3}[:;=#|])|(?=[0-9]{4}))[0-9]){5,}"  # after a digit
_CLUSTER = re.compile(r"[0-9](?<![0-9][0-9])" + _CLUSTER_TAIL)
_DIGIT_GROUP = re.compile(r"\d+")
# A single separator between digit groups that makes a grouped number on its own: space, dash,
# dot, underscore, slash, tilde or asterisk (`078~05~1120`, `4111*1111*1111*1111`; `～`, `＊`, `ー`,
# `・` and other look-alikes are these after canonicalisation). A group that continues a longer
# grouped number (a digit and a separator before or after) is not one.
_GS = "[ ._/~*-]"
_NOT_AFTER_GROUP = r"(?<!\d)(?<!\d[._/~*-])"
_NOT_BEFORE_GROUP = r"(?!\d|[._/~*-]\d)"
# Keyword separators: ':', ';', '=', '#' and '|' also join times (`10:30:45`), ratios, key=value
# pairs, PSV/CSV fields and numbered items, so they are treated like a CSV comma (see
# _WEAK_GROUPED): only the exact SSN and card group shapes, one kind throughout, no like number
# continuing the run, and a 3-2-4 needs an SSN keyword before it (`101|12|2048` is a row, `SSN
# 078:05:1120` an SSN); a card still needs no keyword (Luhn and the IIN ranges decide).
_KEYWORD_JOINTS = frozenset(":;=#|")
_KEYWORD_GROUPED = re.compile(
    r"\d(?<![\dA-Za-z_]\d)\d\d(?:[:;=#|]\d\d[:;=#|]\d{4}"
    r"|\d[:;=#|](?:\d{4}[:;=#|]\d{4}[:;=#|]\d{4}|\d{6}[:;=#|]\d{4,5}))(?!\d)"
)
_SSN_FMT = re.compile(rf"{_NOT_AFTER_GROUP}\d{{3}}{_GS}\d{{2}}{_GS}\d{{4}}{_NOT_BEFORE_GROUP}")
_CARD_GROUPED = re.compile(
    rf"{_NOT_AFTER_GROUP}\d{{4}}{_GS}\d{{4}}{_GS}\d{{4}}{_GS}\d{{1,7}}(?!\d)"
    rf"|{_NOT_AFTER_GROUP}\d{{4}}{_GS}\d{{6}}{_GS}\d{{4,5}}(?!\d)"
)
_PHONE_NANP = re.compile(
    rf"(?<![\d+])(?:\+?1{_GS}?)?(?:\([2-9]\d{{2}}\)[ ]?|[2-9]\d{{2}}{_GS})[2-9]\d{{2}}{_GS}\d{{4}}{_NOT_BEFORE_GROUP}"
)
_PHONE_INTL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ ._/-]?\(?\d{1,5}\)?){2,6}(?!\d|[._/-]\d)")
# Digits glued to letters are part of an identifier (a hex hash, a UPS `1Z...` number), not a number.
_DIGITS = re.compile(r"(?<![\dA-Za-z])(?<!\d\.)\d{6,19}(?![\dA-Za-z])(?!\.\d)")
# Weaker joints between digit groups: a line break, a tab or a run of spaces (text laid out in
# columns or lines), a CSV comma, and '+' (a space in application/x-www-form-urlencoded query
# strings). Any digits can stand in such a list, so only the exact group shapes of an SSN (3-2-4)
# or a card (4-4-4-4, 4-6-5, 4-6-4) count, with one kind of joint throughout, and the checksums
# still decide (see TextScanner._weak_grouped). Digit-led: `re` skips to digits in C.
_WJ = r"(?:[ \t\r\n]{1,4}|,[ ]?|\+)"
_WEAK_GROUPED = re.compile(
    rf"\d(?<![\dA-Za-z_]\d)\d\d(?:{_WJ}\d\d{_WJ}\d{{4}}|\d{_WJ}(?:\d{{4}}{_WJ}\d{{4}}{_WJ}\d{{4}}|\d{{6}}{_WJ}\d{{4,5}}))"
    r"(?!\d)"
)
_WEAK_DIGITS = re.compile(r"\d+")
_WEAK_JOINTS = re.compile(r"\D+")
_WHITESPACE = frozenset(" \t\r\n")
_LIST_JOINT_MAX = 4  # the longest joint _WJ allows
# Gated by C-level `in` first (a digit-led scan costs as much as _CLUSTER's): compact JSON and
# single-line prose have none of these joints, and a comma only counts right after a digit.
_WEAK_JOINT_CHARS = ("\n", "\t", "\r", "+", "  ")
_COMMA_JOINT = re.compile(r",(?<=\d,) ?\d")

# Context keywords that must appear in the few characters before a *bare* digit run.
# Every alternative starts with a literal so `re` can skip to candidate letters; whole
# words are checked after the first letter (`t(?<![a-z]t)el(?![a-z])` is "tel" alone).


def _word(w: str) -> str:
    return f"{re.escape(w[0])}(?<![a-z]{re.escape(w[0])}){re.escape(w[1:])}(?![a-z])"


_CTX_SSN = re.compile(r"ssn|social\s*security|soc\.?\s*sec|ss\s*#|ss\s*no|itin|taxpayer")
_CTX_ABA = re.compile("|".join(("routing", "transit", _word("aba"), _word("rtn"), _word("r/t"))))
_CTX_ACCOUNT = re.compile("|".join(("account", "acct", "checking", "savings", _word("a/c"), _word("dda"))))
_CTX_PHONE = re.compile("|".join(("phone", "mobile", "whatsapp", _word("tel"), _word("cell"), _word("fax"),
                                  _word("call"), _word("sms"))))
_CTX_CARD = re.compile("|".join(("card", "visa", "mastercard", "amex", "discover", _word("pan"), _word("cc"))))
_CTX_ANY = re.compile("|".join(p.pattern for p in (_CTX_SSN, _CTX_ABA, _CTX_ACCOUNT, _CTX_PHONE)))
_CTX_WINDOW = 40
_LAST_DIGIT = re.compile(r"\d(?=\D*\Z)")
# Identifiers such as `A-2001` or `cust_17` between a keyword and its number are names, not numbers:
# "Account A-2001: number 2951500533" still puts the account number in the keyword's context.
_IDENTIFIER = re.compile(r"\b[a-z]+[-_#]?\d+\b")
# A UUID's first (8) or last (12) group can be all digits: part of an identifier, not a number.
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Za-z])")

# Short strings are screened by one pattern first: most JSON leaves are short and clean.
_SHORT = 256
_GATE = re.compile(
    rf"[0-9](?:{_CLUSTER_TAIL}|\d\d(?:[\t\r\n,+]|  ))|[@:=]|-----BEGIN|[A-Za-z]{{2}}\d\d|"
    + _TOKEN_GATE_SRC
)
_PERSONAL = frozenset({PERSON, ADDRESS, DATE_OF_BIRTH})
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

_NOT_A_VALUE = frozenset({"", "null", "none", "true", "false", "n/a", "na", "-"})

# Outputs of the operators, recognised so masking twice changes nothing (idempotence).
_ALREADY_MASKED = re.compile(
    r"\[[A-Z][A-Za-z0-9_]*\]"                      # redact label
    r"|[*\s().+/_-]*\*[*\s().+/_-]*(?:[A-Za-z0-9][*\s().+/_-]*){0,4}"  # partial: stars, separators, last 4
    r"|\*+@\S+"                                     # partial e-mail
    r"|[A-Z][A-Z0-9_]*_[0-9a-f]{16}"                # pseudonym token
)

_DIGIT_FAMILY = frozenset({US_SSN, CREDIT_CARD, ABA_ROUTING, PHONE, US_BANK_ACCOUNT})
# Rank breaks ties between findings that start at the same place with the same length.
(_RANK_PEM, _RANK_KEYED, _RANK_TOKEN, _RANK_EMAIL, _RANK_IBAN, _RANK_DIGITS, _RANK_CUSTOM,
 _RANK_PERSONAL) = range(8)


def looks_masked(value: str) -> bool:
    """True for what an operator already produced, so it is neither re-masked nor counted."""
    return _ALREADY_MASKED.fullmatch(value) is not None


@dataclass(frozen=True)
class CustomDetector:
    """A detector from config: a regex (may be absent) and/or structured key names."""

    name: str
    pattern: re.Pattern[str] | None
    keys: frozenset[str]  # normalised key names


def _digits(s: str) -> str:
    return "".join(ch for ch in s if "0" <= ch <= "9")


def _context(text: str, start: int, keywords: re.Pattern[str]) -> bool:
    """A keyword within the window before `start`, with no other number in between."""
    window = text[max(0, start - _CTX_WINDOW):start].lower()
    # the common case: one cheap search finds no keyword at all (card keywords are asked for rarely)
    if keywords is not _CTX_CARD and _CTX_ANY.search(window) is None:
        return False
    window = _IDENTIFIER.sub(" ", window)
    m = _LAST_DIGIT.search(window)
    if m is not None:
        window = window[m.end():]
    return keywords.search(window) is not None


# --------------------------------------------------------------------------- classification

def classify_digit_run(text: str, s: int, e: int, enabled: frozenset[str]) -> str | None:
    """A bare digit run text[s:e]: a card on its own evidence, anything else only with context."""
    d = text[s:e]
    n = len(d)
    if n >= 12 and CREDIT_CARD in enabled and card_valid(d):
        # 1 in 10 account numbers passes Luhn: an account keyword (and no card keyword) says which
        if (n <= 17 and US_BANK_ACCOUNT in enabled and _context(text, s, _CTX_ACCOUNT)
                and not _context(text, s, _CTX_CARD)):
            return US_BANK_ACCOUNT
        return CREDIT_CARD
    if n == 9:
        if US_SSN in enabled and ssn_valid(d) and _context(text, s, _CTX_SSN):
            return US_SSN
        if ABA_ROUTING in enabled and aba_valid(d) and _context(text, s, _CTX_ABA):
            return ABA_ROUTING
    if (n == 10 or (n == 11 and d[0] == "1")) and PHONE in enabled:
        local = d[-10:]
        if local[0] >= "2" and local[3] >= "2" and _context(text, s, _CTX_PHONE):
            return PHONE
    if n <= 17 and US_BANK_ACCOUNT in enabled and _context(text, s, _CTX_ACCOUNT):
        return US_BANK_ACCOUNT
    return None


def _in_uuid(text: str, s: int, e: int) -> bool:
    """Whether the digit run text[s:e] is the first or last group of a UUID (checked on findings only)."""
    n = e - s
    start = s if n == 8 else s - 24 if n == 12 else -1
    if start < 0 or (start > 0 and text[start - 1].isalnum()):
        return False
    return _UUID.match(text, start) is not None


def _iban_span(text: str, m: re.Match[str]) -> Finding | None:
    start = m.start()
    if start > 0 and text[start - 1].isalnum():
        return None
    span = m.group()
    expected = IBAN_LENGTHS.get(span[:2].upper())
    if expected is None:
        return None
    # Grouped IBANs may have swallowed a following 4-letter word: cut at the registry length.
    count = 0
    for i, ch in enumerate(span):
        if ch not in _IBAN_SEP:
            count += 1
            if count == expected:
                end = i + 1
                if end < len(span) and span[end] not in _IBAN_SEP:
                    return None
                compact = "".join(c for c in span[:end] if c not in _IBAN_SEP)
                return (start, start + end, IBAN) if iban_valid(compact) else None
    return None


def _shape_wants(groups: tuple[int, ...]) -> tuple[bool, bool, bool, bool]:
    """From a cluster's digit-group lengths: (ssn, card, nanp, long run) worth trying."""
    ssn = card = nanp = False
    for i in range(len(groups)):
        a = groups[i]
        b = groups[i + 1] if i + 1 < len(groups) else 0
        c = groups[i + 2] if i + 2 < len(groups) else 0
        if a == 3 and b == 2 and c == 4:
            ssn = True
        if a == 4 and ((b == 4 and c == 4) or (b == 6 and c in (4, 5))):
            card = True
        if a == 3 and b == 3 and c == 4:
            nanp = True
    return ssn, card, nanp, max(groups) >= 6


def _lower(text: str) -> str:
    """`text` lower-cased with its positions kept (a few characters lower-case to two, e.g. 'İ')."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(_ASCII_LOWER)


def _may_be_prose_secret(text: str) -> bool:
    """Cheap screen of a short string for _PROSE_SECRET: a space or tab and a keyword stem."""
    if " " not in text and "\t" not in text:
        return False
    lowered = text.lower()
    return any(stem in lowered for stem in _PROSE_STEMS)


def _may_have_weak_joints(text: str) -> bool:
    """Whether _WEAK_GROUPED can match at all: any joint character, or a comma after a digit."""
    return any(j in text for j in _WEAK_JOINT_CHARS) or _COMMA_JOINT.search(text) is not None


def _credential_like(value: str) -> bool:
    """Whether the word after "password" is one: long enough, not a placeholder or an earlier
    pass's output, and with a digit, a symbol or mixed case (English words have none)."""
    return (len(value) >= _PROSE_MIN and value.lower() not in _NOT_A_VALUE and not looks_masked(value)
            and _CREDENTIAL_EVIDENCE.search(value) is not None and _NOT_A_PASSWORD.fullmatch(value) is None)


def _joint_kind(joints: list[str]) -> str | None:
    """The one kind of joint between all groups: ' ' (whitespace, mixed freely: a tab then spaces
    is still layout), ',', ', ', '+' or one keyword separator (':', ';', '=', '#', '|'); None for a
    mix of kinds, or for single spaces only (the strict patterns' case)."""
    if all(j == " " for j in joints):
        return None
    if all(set(j) <= _WHITESPACE for j in joints):
        return " "
    first = joints[0]
    if first not in (",", ", ", "+") and first not in _KEYWORD_JOINTS:
        return None
    return first if all(j == first for j in joints) else None


def _list_goes_on(text: str, start: int, end: int, kind: str, first: int | None, last: int | None) -> bool:
    """Whether a like group stands across a like joint just before `start` or after `end`.

    `2301,2302,2303,2304,2305` is a list of numbers, not a card plus a tail; four lines of
    four digits in a column of such lines likewise. For a card a neighbour of another size
    (an expiry `12/29` or a CVV on the next line) does not make a list; `first`/`last` None
    means any neighbouring number does (a TSV row `101<TAB>12<TAB>2048<TAB>7` is no SSN).
    """
    joint = _WHITESPACE if kind == " " else frozenset(kind)
    i = start
    while i > 0 and start - i < _LIST_JOINT_MAX and text[i - 1] in joint:
        i -= 1
    if i < start:
        j = i
        while j > 0 and text[j - 1].isdigit():
            j -= 1
        if i - j == first or (first is None and i > j):
            return True
    k = end
    while k < len(text) and k - end < _LIST_JOINT_MAX and text[k] in joint:
        k += 1
    if k > end:
        n = k
        while n < len(text) and text[n].isdigit():
            n += 1
        if n - k == last or (last is None and n > k):
            return True
    return False


def _weak_grouped_detector(text: str, m: re.Match[str], enabled: frozenset[str]) -> str | None:
    """US_SSN or CREDIT_CARD for a weakly joined candidate that passes its checks, else None.

    A comma-joined 3-2-4 is also a plausible list (`512,16,2048`), and so is one joined by a
    keyword separator (`101|12|2048`, `123:45:6789`); the SSN rules pass 89% of any digits, so such
    an SSN needs an SSN keyword before it. Cards have Luhn and the IIN.
    """
    value = m.group()
    kind = _joint_kind(_WEAK_JOINTS.findall(value))
    if kind is None:
        return None
    groups = _WEAK_DIGITS.findall(value)
    ssn = len(groups) == 3 and len(groups[0]) == 3
    first, last = (None, None) if ssn else (len(groups[0]), len(groups[-1]))
    if _list_goes_on(text, m.start(), m.end(), kind, first, last):
        return None
    digits = "".join(groups)
    if ssn:
        if (US_SSN in enabled and ssn_valid(digits)
                and ((kind[0] != "," and kind not in _KEYWORD_JOINTS) or _context(text, m.start(), _CTX_SSN))):
            return US_SSN
        return None
    return CREDIT_CARD if CREDIT_CARD in enabled and card_valid(digits) else None


class TextScanner:
    """Finds sensitive spans in one string for a given set of enabled detectors.

    Built once per Masker (it knows the custom detectors' names, so it can skip
    pseudonym tokens it produced earlier); `find` is pure and thread-safe.

    Speed comes from gating: each family runs only where it can match — digit
    clusters (found by one charset-led regex), '@' positions, ':'/'=' separators
    (the key is read backwards from a reversed copy), literal token prefixes,
    `://` with '@' for passwords in URLs —
    so clean text costs a few C-level scans and almost no Python.
    """

    def __init__(self, customs: Iterable[CustomDetector] = ()) -> None:
        self._customs = tuple(customs)
        names = sorted({*BUILTIN_DETECTORS, *(c.name for c in self._customs)}, key=len, reverse=True)
        self._masked = re.compile(
            "(?:" + "|".join(re.escape(n) for n in names) + r")_[0-9a-f]{16}(?![A-Za-z0-9_])"
        )
        self._shape_cache: dict[tuple[int, ...], tuple[bool, bool, bool, bool]] = {}
        self._stems: dict[frozenset[str], tuple[str, ...]] = {}

    def _stems_for(self, enabled: frozenset[str]) -> tuple[str, ...]:
        stems = self._stems.get(enabled)
        if stems is None:
            stems = tuple(dict.fromkeys(st for det in BUILTIN_DETECTORS if det in enabled
                                        for st in _STEMS_BY_DETECTOR.get(det, ())))
            if len(self._stems) < 64:
                self._stems[enabled] = stems
        return stems

    def find(self, text: str, enabled: frozenset[str]) -> list[Finding]:
        """Non-overlapping findings, in order, of the detectors in `enabled`."""
        found: list[tuple[int, int, int, str]] = []  # (start, end, rank, detector)
        if not enabled.isdisjoint(BUILTIN_DETECTORS):
            long = len(text) > _SHORT
            if long or _GATE.search(text) is not None or (SECRET in enabled and _may_be_prose_secret(text)):
                self._builtin(text, enabled, found)
            if not enabled.isdisjoint(_PERSONAL):
                self._personal(text, _lower(text), enabled, found.append)  # each finder gates itself
        for custom in self._customs:
            if custom.pattern is not None and custom.name in enabled:
                found.extend((m.start(), m.end(), _RANK_CUSTOM, custom.name)
                             for m in custom.pattern.finditer(text) if m.end() > m.start())
        if not found:
            return []
        if "_" in text:
            found = self._drop_masked(text, found)
        return _resolve(found)

    def _drop_masked(self, text: str, found: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
        """Pseudonym tokens from an earlier pass contain hex digits; never re-mask inside them."""
        spans = [(m.start(), m.end()) for m in self._masked.finditer(text)
                 if m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_")]
        if not spans:
            return found
        return [f for f in found if not any(s <= f[0] and f[1] <= e for s, e in spans)]

    def _builtin(self, text: str, enabled: frozenset[str], found: list[tuple[int, int, int, str]]) -> None:
        add = found.append
        if SECRET in enabled:
            if "-----BEGIN" in text:
                for m in _PEM.finditer(text):
                    add((m.start(), m.end(), _RANK_PEM, SECRET))
            if _TOKEN_GATE.search(text) is not None:
                for m in _TOKEN.finditer(text):
                    add((m.start(), m.end(), _RANK_TOKEN, SECRET))
        if ":" in text or "=" in text:
            lowered = _lower(text)
            stems = [stem for stem in self._stems_for(enabled) if stem in lowered]
            if stems:
                self._keyed(text, enabled, add)
            # SECRET's key stems include the prose ones: no second pass over the text for them
            if SECRET in enabled and not _PROSE_STEMS.isdisjoint(stems):
                self._prose_secrets(text, lowered, add)
        elif SECRET in enabled and _may_be_prose_secret(text):
            self._prose_secrets(text, _lower(text), add)
        url_ats: set[int] | None = None
        if SECRET in enabled and "@" in text and ("://" in text or ":\\/\\/" in text):
            url_ats = self._url_credentials(text, add)
        if EMAIL in enabled and "@" in text:
            self._emails(text, add, url_ats)
        if IBAN in enabled:
            done = 0
            for h in _IBAN_HEAD.finditer(text):
                if h.start() - 2 < done:
                    continue
                im = _IBAN.match(text, h.start() - 2)
                f = None if im is None else _iban_span(text, im)
                if f is not None:
                    add((f[0], f[1], _RANK_IBAN, IBAN))
                    done = f[1]
        if not enabled.isdisjoint(_DIGIT_FAMILY):
            for m in _CLUSTER.finditer(text):
                self._cluster(text, m.start(), m.end(), enabled, add)
        if (US_SSN in enabled or CREDIT_CARD in enabled) and _may_have_weak_joints(text):
            self._weak_grouped(text, enabled, add)

    @staticmethod
    def _personal(text: str, lowered: str, enabled: frozenset[str],
                  add: Callable[[tuple[int, int, int, str]], None]) -> None:
        if PERSON in enabled:
            find_persons(text, lowered, add, _RANK_PERSONAL)
        if ADDRESS in enabled:
            find_addresses(text, add, _RANK_PERSONAL)
        if DATE_OF_BIRTH in enabled:
            find_birth_dates(text, lowered, add, _RANK_PERSONAL)

    @staticmethod
    def _prose_secrets(text: str, lowered: str, add: Callable[[tuple[int, int, int, str]], None]) -> None:
        """The value after a password-like word in prose ("password hunter2", "passwd is x1y2z3")."""
        for m in _PROSE_SECRET.finditer(lowered):
            if m.start() > 0 and lowered[m.start() - 1] in _PROSE_NOT_AFTER:
                continue  # part of a longer word or a path (`mypassword`, `/etc/passwd`)
            start, end = m.span("v")
            value = text[start:end].rstrip(_PROSE_TRAILER)
            if _credential_like(value):
                add((start, start + len(value), _RANK_KEYED, SECRET))

    @staticmethod
    def _weak_grouped(text: str, enabled: frozenset[str], add: Callable[[tuple[int, int, int, str]], None]) -> None:
        """SSNs and cards whose groups are joined by line breaks, tabs, runs of spaces, commas or '+'."""
        pos = 0
        while (m := _WEAK_GROUPED.search(text, pos)) is not None:
            det = _weak_grouped_detector(text, m, enabled)
            if det is None:  # a later group may start a real one (the lookbehind skips the rest of this one)
                pos = m.start() + 1
                continue
            add((m.start(), m.end(), _RANK_DIGITS, det))
            pos = m.end()

    def _keyed(self, text: str, enabled: frozenset[str], add: Callable[[tuple[int, int, int, str]], None]) -> None:
        n = len(text)
        rev = text[::-1].lower()
        pattern = _KEYED_REV
        if len(rev) != n:
            rev, pattern = text[::-1], _KEYED_REV_I
        for m in pattern.finditer(rev):
            key = text[n - m.end("rk"):n - m.start("rk")]
            detector = builtin_key_detector(key)
            if detector is None:
                continue
            weak = detector.endswith(WEAK)
            if weak:
                detector = detector[:-1]
            if detector not in enabled:
                continue
            v = _KEYED_VALUE.match(text, n - m.start())
            if v is None:
                continue
            if v.group("deep") is not None:
                continue
            for group in ("kq", "ks", "ke", "ku"):
                value = v.group(group)
                if value is None:
                    continue
                start, end = v.span(group)
                if group == "ku" and detector in _PHRASES:
                    tail = (_ADDRESS_TAIL if detector == ADDRESS else _PHRASE_TAIL).match(text, end)
                    if tail is not None:
                        end = start + len(text[start:tail.end()].rstrip())
                        value = text[start:end]
                if weak and detector == US_BANK_ACCOUNT:  # no label, operator output or `n/a` has this shape
                    if weak_value_matches(detector, value):
                        add((start, end, _RANK_KEYED, detector))
                    break
                if value.strip().lower() in _NOT_A_VALUE or looks_masked(value) or _LABEL_AT.match(text, start):
                    break  # nothing there, or what an earlier pass left (`[SECRET]` is cut at its ']')
                if weak and not weak_value_matches(detector, value):
                    break
                add((start, end, _RANK_KEYED, detector))
                break

    @staticmethod
    def _url_credentials(text: str, add: Callable[[tuple[int, int, int, str]], None]) -> set[int] | None:
        """The password of every `scheme://user:password@host`; the '@'s that end a userinfo.

        The user name and host stay visible (operators need them); only the password is a
        finding. The returned positions keep `_emails` from reading `password@host.tld` as an
        e-mail address, which would hide the host and outrank the password's own finding.
        """
        ats: set[int] | None = None
        for sep in _URL_SEP.finditer(text):
            j = sep.start()
            letter = False
            while j > 0 and text[j - 1] in _URL_SCHEME:
                j -= 1
                letter = letter or text[j] in _ASCII_LETTERS
            if not letter:  # no scheme before `://` (RFC 3986: a letter, then letters/digits/+-.)
                continue
            start = sep.end()
            stop = _URL_AUTHORITY_END.search(text, start)
            end = len(text) if stop is None else stop.start()
            at = text.rfind("@", start, end)
            if at == -1:
                continue
            colon = text.find(":", start, at)
            if colon == -1 or colon + 1 == at:
                continue  # `user@host` or `user:@host`: no password
            if ats is None:
                ats = set()
            ats.add(at)
            if looks_masked(text[colon + 1:at]):
                continue  # what an earlier pass left
            add((colon + 1, at, _RANK_KEYED, SECRET))
        return ats

    @staticmethod
    def _emails(text: str, add: Callable[[tuple[int, int, int, str]], None],
                skip: set[int] | None = None) -> None:
        at = text.find("@")
        while at != -1:
            if skip is not None and at in skip:
                at = text.find("@", at + 1)
                continue
            j = at
            while j > 0 and at - j < 65 and text[j - 1] in _EMAIL_LOCAL:
                j -= 1
            if j < at and (j == 0 or text[j - 1] not in _EMAIL_LOCAL):
                m = _EMAIL_DOMAIN.match(text, at + 1)
                if m is not None:
                    add((j, m.end(), _RANK_EMAIL, EMAIL))
            at = text.find("@", at + 1)

    def _cluster(self, text: str, s: int, e: int, enabled: frozenset[str],
                 add: Callable[[tuple[int, int, int, str]], None]) -> None:
        cluster = text[s:e]
        if cluster.isdigit():
            if s > 0 and (text[s - 1] == "+" or (text[s - 1] == "." and s > 1 and text[s - 2].isdigit())):
                return
            if (s > 0 and text[s - 1] in _ASCII_LETTERS) or (e < len(text) and text[e] in _ASCII_LETTERS):
                return  # glued to letters: an identifier
            det = classify_digit_run(text, s, e, enabled) if len(cluster) <= 19 else None
            if det is not None and not _in_uuid(text, s, e):
                add((s, e, _RANK_DIGITS, det))
            return
        groups = tuple(len(g) for g in _DIGIT_GROUP.findall(cluster))
        wants = self._shape_cache.get(groups)
        if wants is None:
            wants = _shape_wants(groups)
            if len(self._shape_cache) < 4096:
                self._shape_cache[groups] = wants
        ssn, card, nanp, long_run = wants
        rs = s - 1 if s > 0 and text[s - 1] in "+(" else s
        if ssn and US_SSN in enabled:
            for m in _SSN_FMT.finditer(text, s, e):
                if ssn_valid(_digits(m.group())):
                    add((m.start(), m.end(), _RANK_DIGITS, US_SSN))
        if card and CREDIT_CARD in enabled:
            for m in _CARD_GROUPED.finditer(text, s, e):
                if card_valid(_digits(m.group())):
                    add((m.start(), m.end(), _RANK_DIGITS, CREDIT_CARD))
        if (ssn or card) and not _KEYWORD_JOINTS.isdisjoint(cluster):
            _keyword_grouped(text, s, e, enabled, add)
        if PHONE in enabled:
            if nanp or text[rs] == "(":
                for m in _PHONE_NANP.finditer(text, rs, e):
                    add((m.start(), m.end(), _RANK_DIGITS, PHONE))
            if text[rs] == "+":
                for m in _PHONE_INTL.finditer(text, rs, e):
                    if 8 <= len(_digits(m.group())) <= 15:
                        add((m.start(), m.end(), _RANK_DIGITS, PHONE))
        if long_run:
            for m in _DIGITS.finditer(text, s, e):
                det = classify_digit_run(text, m.start(), m.end(), enabled)
                if det is not None and not _in_uuid(text, m.start(), m.end()):
                    add((m.start(), m.end(), _RANK_DIGITS, det))


def _keyword_grouped(text: str, s: int, e: int, enabled: frozenset[str],
                     add: Callable[[tuple[int, int, int, str]], None]) -> None:
    """SSNs and cards in text[s:e] whose groups are joined by one keyword separator (':', ';',
    '=', '#' or '|'), judged by the rules of the CSV comma (see _weak_grouped_detector)."""
    pos = s
    while (m := _KEYWORD_GROUPED.search(text, pos, e)) is not None:
        det = _weak_grouped_detector(text, m, enabled)
        if det is None:  # a later group may start a real one
            pos = m.start() + 1
            continue
        add((m.start(), m.end(), _RANK_DIGITS, det))
        pos = m.end()


def _resolve(found: list[tuple[int, int, int, str]]) -> list[Finding]:
    """Sorted, non-overlapping findings. Earlier start wins, then the longer span, then rank;
    a later finding that sticks out past the winner extends it, so no tail is left bare."""
    found.sort(key=lambda f: (f[0], f[0] - f[1], f[2]))
    out: list[Finding] = []
    for start, end, _rank, det in found:
        if out and start < out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end, out[-1][2])
            continue
        out.append((start, end, det))
    return out
