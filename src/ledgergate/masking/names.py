"""Detector and profile names: the vocabulary config and engine share.

A leaf module (no imports from the package), so `settings` can validate names
without importing the engine, and the engine can import `settings` without a
cycle.
"""

from __future__ import annotations

__all__ = [
    "ABA_ROUTING", "ADDRESS", "BLOB_UNSCANNED", "BLOB_WITHHELD", "BUILTIN_DETECTORS", "CREDIT_CARD",
    "DATE_OF_BIRTH", "EMAIL", "IBAN", "LEDGER_PROFILE", "PERSON", "PHONE", "SECRET", "US_BANK_ACCOUNT",
    "US_SSN",
]

US_SSN = "US_SSN"
CREDIT_CARD = "CREDIT_CARD"
US_BANK_ACCOUNT = "US_BANK_ACCOUNT"
ABA_ROUTING = "ABA_ROUTING"
IBAN = "IBAN"
EMAIL = "EMAIL"
PHONE = "PHONE"
SECRET = "SECRET"
PERSON = "PERSON"
ADDRESS = "ADDRESS"
DATE_OF_BIRTH = "DATE_OF_BIRTH"

BUILTIN_DETECTORS: tuple[str, ...] = (
    US_SSN, CREDIT_CARD, US_BANK_ACCOUNT, ABA_ROUTING, IBAN, EMAIL, PHONE, SECRET,
    PERSON, ADDRESS, DATE_OF_BIRTH,
)

# The built-in profile the audit record uses: every detector, redact.
LEDGER_PROFILE = "ledger"
# Count key for base64 payloads that are not UTF-8 text (images, PDFs), or not base64 in
# any form clients decode: passed on (the latter scanned as text), because we cannot inspect
# their bytes, and counted so the audit record says so.
BLOB_UNSCANNED = "BLOB_UNSCANNED"
# Count key for such payloads withheld because the profile says `withhold_blobs`.
BLOB_WITHHELD = "BLOB_WITHHELD"
