"""What a finding is replaced with: redact, partial or keyed pseudonym.

Every operator output is safe to splice into any text, including text that is
itself JSON: it contains no quote, backslash or control character (partial keeps
only the original's space, '-', '.', '_', '/', '(', ')' and '+' and the e-mail's
domain; any other separator a detector accepts, such as '~', '|' or ':', becomes '*').
Outputs are also recognised by the scanner, so masking twice changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from ledgergate.masking.names import (
    ABA_ROUTING,
    ADDRESS,
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

__all__ = ["OPERATORS", "PSEUDONYM_HEX", "Operator", "canonical", "make_pseudonym", "partial", "redact"]

# (detector, matched text) -> replacement text
Operator = Callable[[str, str], str]

# 16 hex digits = 64 bits: no birthday collision (wrongly joined customers) below ~4e9 values.
PSEUDONYM_HEX = 16
_MIN_PARTIAL = 8  # fewer significant characters than this and showing 4 of them shows too much
_DIGIT_DETECTORS = frozenset({US_SSN, CREDIT_CARD, US_BANK_ACCOUNT, ABA_ROUTING, PHONE})
_SAFE_SEPARATORS = frozenset(" -.()/+_")
# Never partially shown: the last four characters of a name, street or birth date identify too much.
_NEVER_PARTIAL = frozenset({SECRET, PERSON, ADDRESS, DATE_OF_BIRTH})
_PHRASE_DETECTORS = frozenset({PERSON, ADDRESS, DATE_OF_BIRTH})


def redact(detector: str, text: str) -> str:
    """`[US_SSN]`: the detector name only."""
    return f"[{detector}]"


def _keep_last4(text: str) -> str | None:
    """Stars for every letter/digit but the last four; separators kept; None if too short."""
    significant = sum(1 for ch in text if ch.isalnum())
    if significant < _MIN_PARTIAL:
        return None
    out: list[str] = []
    keep = 4
    for ch in reversed(text):
        if ch.isalnum():
            if keep > 0:
                out.append(ch if ch.isascii() else "*")  # non-ASCII kept as '*': outputs stay ASCII
                keep -= 1
            else:
                out.append("*")
        elif ch in _SAFE_SEPARATORS:
            out.append(ch)
        else:
            out.append("*")
    return "".join(reversed(out))


def partial(detector: str, text: str) -> str:
    """Keep what a support agent needs (`***-**-6789`, `************1111`), never more.

    Secrets, names, addresses and dates of birth are never partially shown; an e-mail keeps its domain only; values too
    short to hide 4 of their characters fall back to redact.
    """
    if detector in _NEVER_PARTIAL:
        return redact(detector, text)
    if detector == US_SSN:
        digits = [ch for ch in text if "0" <= ch <= "9"]
        if len(digits) == 9:
            return "***-**-" + "".join(digits[-4:])
        return redact(detector, text)
    if detector == EMAIL:
        at = text.rfind("@")
        domain = text[at + 1:]
        if at > 0 and domain and all(ch.isascii() and (ch.isalnum() or ch in ".-") for ch in domain):
            return "***@" + domain
        return redact(detector, text)
    kept = _keep_last4(text)
    return redact(detector, text) if kept is None else kept


def canonical(detector: str, text: str) -> str:
    """The form pseudonyms are computed on, so `123-45-6789` and `123456789` join.

    Digits only for numeric detectors (a leading NANP `1` dropped from phones),
    IBANs upper-case without spaces, e-mails lower-case, anything else stripped.
    """
    if detector in _DIGIT_DETECTORS:
        digits = "".join(ch for ch in text if "0" <= ch <= "9")
        if detector == PHONE and len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        return digits or text.strip()
    if detector == IBAN:
        return "".join(ch for ch in text if ch.isalnum()).upper()
    if detector in _PHRASE_DETECTORS:
        return " ".join(text.split()).casefold()
    if detector == EMAIL:
        return text.strip().lower()
    return text.strip()


def make_pseudonym(key: bytes) -> Operator:
    """Keyed HMAC-SHA256 tokens (`US_SSN_3f9a1c2e5b7d9e01`): stable per key, so joins still work.

    The detector name is part of the MAC input, so equal digits in two detectors
    (an account and a routing number) do not link.
    """
    def pseudonym(detector: str, text: str) -> str:
        mac = hmac.new(key, f"{detector}\x00{canonical(detector, text)}".encode(), hashlib.sha256)
        return f"{detector}_{mac.hexdigest()[:PSEUDONYM_HEX]}"
    return pseudonym


OPERATORS: dict[str, Operator] = {"redact": redact, "partial": partial}
