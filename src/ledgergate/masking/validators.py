"""Pure checksum and structure checks for the masking detectors.

Patterns alone over-match (any 9 digits "look like" an SSN); these functions are
what turns a candidate into a finding. Each takes the candidate's significant
characters (digits, or letters and digits for IBANs) already stripped of
separators, so the callers decide what counts as a separator once.

No I/O, no state; every function is total (returns False on junk, never raises).
"""

from __future__ import annotations

__all__ = [
    "IBAN_LENGTHS",
    "aba_valid",
    "card_brand",
    "card_valid",
    "iban_valid",
    "luhn_valid",
    "ssn_valid",
]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers (ISO/IEC 7812)."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# (first IIN digits as an inclusive numeric range on a prefix of `width` digits, brand, lengths)
_IIN_RANGES: tuple[tuple[int, int, int, str, frozenset[int]], ...] = (
    (1, 4, 4, "visa", frozenset({13, 16, 19})),
    (2, 34, 34, "amex", frozenset({15})),
    (2, 37, 37, "amex", frozenset({15})),
    (2, 51, 55, "mastercard", frozenset({16})),
    (4, 2221, 2720, "mastercard", frozenset({16})),
    (4, 6011, 6011, "discover", frozenset({16, 17, 18, 19})),
    (3, 644, 649, "discover", frozenset({16, 17, 18, 19})),
    (2, 65, 65, "discover", frozenset({16, 17, 18, 19})),
    (4, 3528, 3589, "jcb", frozenset({16, 17, 18, 19})),
    (3, 300, 305, "diners", frozenset({14, 15, 16, 17, 18, 19})),
    (2, 36, 36, "diners", frozenset({14, 15, 16, 17, 18, 19})),
    (2, 38, 39, "diners", frozenset({16, 17, 18, 19})),
    (2, 62, 62, "unionpay", frozenset({16, 17, 18, 19})),
    (2, 50, 50, "maestro", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (2, 56, 58, "maestro", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (4, 6759, 6759, "maestro", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (4, 6761, 6763, "maestro", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (4, 2200, 2204, "mir", frozenset({16, 17, 18, 19})),
    (2, 60, 60, "rupay", frozenset({16})),
    (2, 81, 82, "rupay", frozenset({16})),
)


def card_brand(digits: str) -> str | None:
    """The card network whose IIN range and length admit `digits`, or None.

    Checking the issuer range as well as Luhn cuts the random-number false
    positives roughly in half again (Luhn alone passes 1 in 10 of any digits).
    """
    n = len(digits)
    if n < 12 or n > 19 or not digits.isascii() or not digits.isdigit():
        return None
    for width, lo, hi, brand, lengths in _IIN_RANGES:
        if n in lengths and lo <= int(digits[:width]) <= hi:
            return brand
    return None


def card_valid(digits: str) -> bool:
    """A payment card number: a known IIN range with a matching length, and Luhn."""
    return card_brand(digits) is not None and luhn_valid(digits)


def ssn_valid(digits: str) -> bool:
    """The SSA's structural rules for a Social Security number.

    Never issued: area 000, 666 or 900-999; group 00; serial 0000. Roughly 89% of
    random 9-digit numbers still pass, which is why the detector also asks for
    formatting or context (see detectors.py) before it calls a bare number an SSN.
    """
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    area = int(digits[:3])
    return area != 0 and area != 666 and area < 900 and digits[3:5] != "00" and digits[5:] != "0000"


_ABA_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7, 1)


def aba_valid(digits: str) -> bool:
    """An ABA routing transit number: the 3-7-1 weighted checksum and a Federal Reserve prefix.

    Valid first two digits: 00-12 (Federal Reserve banks), 21-32 (thrifts),
    61-72 (electronic), 80 (traveller's cheques). The prefix rule removes ~62% of
    the 1-in-10 random numbers that pass the checksum alone.
    """
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    prefix = int(digits[:2])
    if not (prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72 or prefix == 80):
        return False
    return sum(w * (ord(c) - 48) for w, c in zip(_ABA_WEIGHTS, digits)) % 10 == 0


# ISO 13616 registry: IBAN length per country (SWIFT IBAN registry, 2024 release).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_valid(compact: str) -> bool:
    """An IBAN without spaces: registered country, that country's length, and ISO 7064 mod 97-10."""
    if not compact.isascii() or not compact.isalnum():
        return False
    compact = compact.upper()
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) != expected or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for ch in rearranged:
        # int(ch, 36) maps 0-9 to 0-9 and A-Z to 10-35, as ISO 13616 requires.
        v = int(ch, 36)
        remainder = (remainder * (100 if v > 9 else 10) + v) % 97
    return remainder == 1
