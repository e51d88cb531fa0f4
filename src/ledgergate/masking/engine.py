"""`Masker`: the masking stage the gateway calls for every result and notification.

Why fail closed: a masker that passes data through on error (hoop.dev's default)
turns every bug into a leak. Any internal failure here becomes `MaskingError`,
which the gateway maps to a 500 and never forwards the unmasked value.

Why a built-in `ledger` profile: the audit record must never hold more than any
caller saw, so it uses every detector (built-in and custom) with `redact`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledgergate.errors import INTERNAL_ERROR, GatewayError
from ledgergate.masking.canonical import Canonical, canonicalize, decode_escapes, may_have_escapes
from ledgergate.masking.detectors import (
    WEAK,
    CustomDetector,
    TextScanner,
    builtin_key_detector,
    looks_masked,
    normalize_key,
    weak_value_matches,
)
from ledgergate.masking.names import BLOB_UNSCANNED, BLOB_WITHHELD, BUILTIN_DETECTORS, LEDGER_PROFILE
from ledgergate.masking.operators import OPERATORS, Operator, make_pseudonym, redact
from ledgergate.masking.settings import MaskingSettings, check
from ledgergate.masking.walker import UnsupportedValue, walk

__all__ = ["BLOB_UNSCANNED", "BLOB_WITHHELD", "LEDGER_PROFILE", "Masker", "MaskingError"]

_KEY_CACHE_MAX = 4096
_MIN_TEXT = 6  # no built-in detector matches fewer characters
_MISS = object()
_JSON_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
# Short strings found clean (statuses, dates, currency codes repeat in every row) are
# remembered per profile; nothing with a finding is ever cached.
_CLEAN_CACHE_LEN = 48
_CLEAN_CACHE_MAX = 8192
#: not a configurable profile: its name holds a character no config key may, so it cannot clash with one
_APPROVERS_PROFILE = " approvers"


# (original start, original end, detector, the canonical text the detector matched)
_Span = tuple[int, int, str, str]


def _original_spans(value: str, canon: Canonical | None, findings: list[tuple[int, int, str]]) -> list[_Span]:
    """Findings in a canonical form as spans of `value` itself, with the text each matched.

    The operator sees the canonical text (`partial` shows plain last digits, pseudonyms join
    disguised and plain values); the replacement covers every original character behind it.
    """
    if canon is None:
        return [(s, e, det, value[s:e]) for s, e, det in findings]
    out: list[_Span] = []
    pos = 0
    for cstart, cend, det in findings:
        start, end = canon.original_span(cstart, cend)
        start = max(start, pos)
        if end <= start:
            continue  # inside the original character (or escape) the previous finding already covers
        out.append((start, end, det, canon.text[cstart:cend]))
        pos = end
    return out


def _merge(first: list[_Span], second: list[_Span]) -> list[_Span]:
    """Two sorted span lists as one without overlaps, as the scanner resolves its own findings:
    the earlier start wins, then the longer span; a span sticking out past it extends it."""
    out: list[_Span] = []
    for start, end, det, matched in sorted(first + second, key=lambda f: (f[0], f[0] - f[1])):
        if out and start < out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end, out[-1][2], out[-1][3])
            continue
        out.append((start, end, det, matched))
    return out


def _bare_json_number(text: str, start: int, end: int) -> bool:
    """True if text[start:end] is a digit run standing where JSON puts a value (`: 123,`).

    Such a span replaced by `****5678` or `[US_SSN]` would break JSON that lives in a
    string (MCP `content[].text` is often JSON.stringify'd), so it gets quotes. Prose
    ("Account A-2001: 2951500533") is left unquoted: only text that opens like JSON counts.
    """
    if not text[start:end].isdigit() and _JSON_NUMBER.fullmatch(text, start, end) is None:
        return False
    opening = text.lstrip()[:1]
    if opening not in ("{", "["):
        return False
    i = start - 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    if i < 0 or text[i] not in ":[,":
        return False
    j = end
    while j < len(text) and text[j] in " \t\r\n":
        j += 1
    return j == len(text) or text[j] in ",]}"


class MaskingError(GatewayError):
    """Masking could not be completed; the value must not be forwarded (fail closed)."""

    http_status = 500
    rpc_code = INTERNAL_ERROR


@dataclass(frozen=True)
class _Profile:
    name: str
    enabled: frozenset[str]
    operator: Operator
    has_custom_patterns: bool
    withhold_blobs: bool = False


class Masker:
    """Masks JSON values by profile. Its profiles are fixed at construction (the approvers' one is built on
    first use, the same for every caller); safe to share across tasks and worker threads."""

    def __init__(self, profiles: dict[str, _Profile], customs: tuple[CustomDetector, ...]) -> None:
        self._profiles = profiles
        self._scanner = TextScanner(customs)
        self._custom_keys: dict[str, str] = {k: c.name for c in customs for k in c.keys}
        # per profile: key -> detector the key names, for keys that hold nothing sensitive themselves
        self._key_cache: dict[str, dict[str, str | None]] = {name: {} for name in profiles}
        self._clean_cache: dict[str, dict[str, None]] = {name: {} for name in profiles}
        self._approver_profile: tuple[bytes, _Profile] | None = None  # (its key, the profile): `mask_for_approvers`

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_settings(cls, settings: MaskingSettings) -> Masker:
        """Compile every profile; ValueError names the profile or detector that is wrong."""
        check(settings)  # the same rules the config load ran (a model may be built without validation)
        customs = [CustomDetector(det.name, re.compile(det.pattern) if det.pattern else None,
                                  frozenset(normalize_key(k) for k in det.keys) - {""})
                   for det in settings.detectors]
        known = {*BUILTIN_DETECTORS, *(c.name for c in customs)}
        any_pattern = any(c.pattern is not None for c in customs)
        key = settings.pseudonym_key
        profiles: dict[str, _Profile] = {}
        for name, prof in settings.profiles.items():
            if prof.operator == "pseudonym":
                if key is None:  # check() refuses this; kept so no path can build an unkeyed pseudonym
                    raise ValueError(f"masking profile {name!r}: operator 'pseudonym' needs masking.pseudonym_key")
                operator = make_pseudonym(key.encode())
            else:
                operator = OPERATORS[prof.operator]
            enabled = frozenset(prof.detectors)
            profiles[name] = _Profile(name, enabled, operator,
                                      any(c.pattern is not None and c.name in enabled for c in customs),
                                      prof.binary == "withhold")
        profiles[LEDGER_PROFILE] = _Profile(LEDGER_PROFILE, frozenset(known), redact, any_pattern)
        return cls(profiles, tuple(customs))

    # ------------------------------------------------------------------ API

    @property
    def profiles(self) -> set[str]:
        """Profile names `mask` accepts, including the built-in `ledger`."""
        return set(self._profiles)

    def mask(self, value: Any, profile: str | None) -> tuple[Any, dict[str, int]]:
        """A masked deep copy of a JSON value and {detector: findings}; None means the ledger profile.

        Raises MaskingError (never anything else) when the value cannot be masked
        completely: unknown profile, non-JSON types, or an internal failure.
        """
        prof = self._profiles.get(LEDGER_PROFILE if profile is None else profile)
        if prof is None:
            raise MaskingError(f"unknown masking profile {profile!r}")
        return self._walk(value, prof)

    def _walk(self, value: Any, prof: _Profile) -> tuple[Any, dict[str, int]]:
        counts: dict[str, int] = {}
        try:
            masked = walk(value, _Run(self, prof, counts))
        except UnsupportedValue as exc:
            raise MaskingError(f"cannot mask a value of this shape: {exc}") from None
        except MaskingError:
            raise
        except BaseException as exc:  # noqa: BLE001 - fail closed on anything, but let Ctrl-C through
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            # The message names the error type only: the cause may quote the data.
            raise MaskingError(f"masking failed ({type(exc).__name__})") from None
        return masked, counts

    def mask_for_ledger(self, value: Any) -> tuple[Any, dict[str, int]]:
        """Every detector, redact: what the audit record stores."""
        return self.mask(value, LEDGER_PROFILE)

    def mask_for_approvers(self, value: Any, key: bytes) -> tuple[Any, dict[str, int]]:
        """Every detector, as keyed pseudonyms (`IBAN_3f9a1c2e5b7d9e01`): what an approver is shown.

        Redacted, two transfers that differ only in the destination IBAN showed the approver the
        same preview (and the same `preview_digest`), so approving "the" transfer could release
        either. A pseudonym tells different values apart and names the same value alike in every
        approval, without a digit of it: it is an HMAC under a key only gateways hold. An empty key
        would make pseudonyms of short numbers guessable, so it is refused.
        """
        if len(key) < 16:
            raise MaskingError("the approvers' preview needs a key of at least 16 bytes")
        ledger = self._profiles[LEDGER_PROFILE]
        cached = self._approver_profile
        if cached is None or cached[0] != key:
            profile = _Profile(_APPROVERS_PROFILE, ledger.enabled, make_pseudonym(key), ledger.has_custom_patterns)
            self._key_cache.setdefault(_APPROVERS_PROFILE, {})
            self._clean_cache.setdefault(_APPROVERS_PROFILE, {})
            cached = self._approver_profile = (key, profile)
        return self._walk(value, cached[1])

    # ------------------------------------------------------------------ internals used by _Run

    def _key_detector(self, key: str) -> str | None:
        if not key.isascii():
            canon = canonicalize(key)
            if canon is not None:
                key = canon.text
        norm = normalize_key(key)
        custom = self._custom_keys.get(norm)
        return custom if custom is not None else builtin_key_detector(key)


class _Run:
    """One call of `Masker.mask`: the profile and the counts (implements walker.LeafMasker)."""

    __slots__ = ("_cache", "_clean", "_counts", "_enabled", "_masker", "_min_text", "_op", "_profile", "_scan")

    def __init__(self, masker: Masker, profile: _Profile, counts: dict[str, int]) -> None:
        self._masker = masker
        self._profile = profile
        self._enabled = profile.enabled
        self._op = profile.operator
        self._counts = counts
        self._scan = masker._scanner.find
        self._cache = masker._key_cache[profile.name]
        self._clean = masker._clean_cache[profile.name]
        self._min_text = 1 if profile.has_custom_patterns else _MIN_TEXT

    def _count(self, detector: str) -> None:
        self._counts[detector] = self._counts.get(detector, 0) + 1

    def text(self, value: str) -> str:
        if len(value) < self._min_text or not self._enabled:
            return value
        short = len(value) <= _CLEAN_CACHE_LEN
        if short and value in self._clean:
            return value
        spans = self._spans(value)
        if not spans:
            if short:
                if len(self._clean) >= _CLEAN_CACHE_MAX:
                    self._clean.clear()
                self._clean[value] = None
            return value
        parts: list[str] = []
        pos = 0
        op = self._op
        for start, end, detector, matched in spans:
            replacement = op(detector, matched)
            if start > pos and value[start - 1] == "-" and _bare_json_number(value, start - 1, end):
                start -= 1  # a negative JSON number: the minus goes inside the quotes too
                replacement = f'"{replacement}"'
            elif _bare_json_number(value, start, end):
                replacement = f'"{replacement}"'  # JSON-as-text stays parseable
            parts.append(value[pos:start])
            parts.append(replacement)
            self._count(detector)
            pos = end
        parts.append(value[pos:])
        return "".join(parts)

    def _spans(self, value: str) -> list[_Span]:
        """Findings in the text as written and, if it holds escapes, in its decoded reading too.

        Why both and not the decoded text alone: decoding can also *end* a value early (a
        `%2F` in a URL password becomes the '/' that ends the authority), so the decoded
        reading may only add findings, never replace those of the text as written.
        """
        canon = None if value.isascii() else canonicalize(value)
        spans = _original_spans(value, canon, self._scan(value if canon is None else canon.text, self._enabled))
        if may_have_escapes(value):
            decoded = decode_escapes(value)
            if decoded is not None:
                extra = _original_spans(value, decoded, self._scan(decoded.text, self._enabled))
                if extra:
                    spans = _merge(spans, extra)
        return spans

    def forced(self, detector: str, value: str) -> str:
        if not value.strip() or looks_masked(value):
            return value
        if detector.endswith(WEAK):  # a generic key (`name`): the value's shape decides
            detector = detector[:-1]
            if not weak_value_matches(detector, value):
                return self.text(value)
        self._count(detector)
        if not value.isascii():  # the operator sees the canonical form: `partial` and pseudonyms as for ASCII
            canon = canonicalize(value)
            if canon is not None:
                return self._op(detector, canon.text)
        return self._op(detector, value)

    def number(self, value: int) -> int | str:
        if -100_000 < value < 100_000:
            return value
        text = str(value)
        masked = self.text(text)
        return value if masked is text else masked

    def key(self, key: object) -> tuple[object, str | None]:
        if isinstance(key, str):
            hit = self._cache.get(key, _MISS)
            if hit is not _MISS:
                return key, hit  # type: ignore[return-value]
            text = key
        elif key is None or isinstance(key, (int, float)):
            text = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
            if isinstance(key, float) and key.is_integer():
                text = str(int(key))  # 4111111111111111.0 is the card number, as a value is (walker._integers)
        else:
            raise UnsupportedValue(f"key of type {type(key).__name__}")
        det = self._masker._key_detector(text)
        if det is not None and (det[:-1] if det.endswith(WEAK) else det) not in self._enabled:
            det = None
        masked = self.text(text)
        if masked is not text:
            return masked, det  # a key that holds data itself (a map keyed by account number)
        if isinstance(key, str):
            if len(self._cache) >= _KEY_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = det
        return key, det

    def blob(self, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return self._lenient_blob(value)
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._binary(value, None)
        masked = self.text(decoded)
        if masked is decoded:
            return value
        return base64.b64encode(masked.encode("utf-8")).decode("ascii")

    def _lenient_blob(self, value: str) -> str:
        """A blob that is not strict standard base64: decoded the way clients decode it.

        MIME line-wrapped (`base64.encodebytes`, CR/LF), URL-safe and unpadded base64 all reach
        a client as the same bytes, so they are scanned as such. Whatever cannot be decoded in
        those forms may still be decoded some other way (or shown as text): it is scanned as text
        and counted as unscanned, or withheld where the profile withholds binary payloads.
        """
        raw = _lenient_b64decode(value)
        if raw is not None:
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                masked = self.text(decoded)
                if masked is not decoded:
                    return base64.b64encode(masked.encode("utf-8")).decode("ascii")
                return self.text(value)  # clean as bytes; and if it is text after all, clean as that too
        return self._binary(value, self.text)

    def _binary(self, value: str, scan: Callable[[str], str] | None) -> str:
        """A payload whose bytes cannot be inspected: withheld, or passed (scanned as text if `scan`) and counted."""
        if self._profile.withhold_blobs:
            self._count(BLOB_WITHHELD)
            return ""  # valid (empty) base64: the client gets no bytes it could not be shown
        self._count(BLOB_UNSCANNED)
        return value if scan is None else scan(value)


_B64_WHITESPACE = str.maketrans("", "", " \t\n\r\f\v")
_B64_URLSAFE = str.maketrans("-_", "+/")


def _lenient_b64decode(value: str) -> bytes | None:
    """The bytes a lenient client reads from `value`: ASCII whitespace ignored, the URL-safe
    alphabet accepted (even mixed with the standard one), padding missing or short; None if
    it is base64 in none of these forms (other characters, `=` inside, a dangling character)."""
    if not value.isascii():
        return None
    text = value.translate(_B64_WHITESPACE).translate(_B64_URLSAFE).rstrip("=")
    if len(text) % 4 == 1:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
