"""Canonical JSON bytes per RFC 8785 (JSON Canonicalization Scheme).

The reference is the `rfc8785` package; it is pure Python and costs ~40 µs a
record, which would dominate a ledger writing tens of thousands of records a
second. So the common case goes through orjson with sorted keys, which already
matches RFC 8785 for strings (§3.2.2.2: only `"`, `\\` and control characters
escaped, short forms for \\b \\t \\n \\f \\r, lowercase \\u00xx otherwise) and
for safe integers. What orjson does differently we route around:

- floats (§3.2.2.3, ECMAScript Number serialisation): each float is formatted
  by `rfc8785` and spliced in as a pre-serialised `orjson.Fragment`;
- key order (§3.2.3 sorts by UTF-16 code units, orjson by code points): the two
  agree for keys below U+D800, so any other key sends the whole value to
  `rfc8785`;
- integers outside ±(2^53-1) and any other type: `rfc8785` decides (it rejects
  what I-JSON cannot represent).

tests/unit/test_canonical.py checks byte equality with `rfc8785` on generated
values. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Any

import orjson
import rfc8785

_SAFE = (1 << 53) - 1
_OPTS = orjson.OPT_SORT_KEYS


class _Slow(Exception):
    """The fast path cannot promise RFC 8785 bytes for this value."""


def _float(f: float) -> bytes:
    """ECMAScript Number::toString (RFC 8785 §3.2.2.3). Python's repr has the same
    shortest round-trip digits and the same plain notation for 1e-4 <= |f| < 1e16;
    integral values drop ".0"; everything else (and NaN/Infinity errors) is `rfc8785`'s."""
    a = abs(f)
    if f.is_integer() and a < 1e16:
        return b"%d" % f
    if 1e-4 <= a < 1e16:
        return repr(f).encode()
    return rfc8785.dumps(f)


def _prepare(value: Any) -> Any:
    """A copy orjson serialises canonically, or _Slow."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if -_SAFE <= value <= _SAFE:
            return value
        raise _Slow
    if t is float:
        return orjson.Fragment(_float(value))
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or (not k.isascii() and any(ord(c) >= 0xD800 for c in k)):
                raise _Slow
            out[k] = _prepare(v)
        return out
    if t is list or t is tuple:
        return [_prepare(v) for v in value]
    raise _Slow


def dumps(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of a JSON value."""
    try:
        return orjson.dumps(_prepare(value), option=_OPTS)
    except _Slow:
        return rfc8785.dumps(value)


def hmac_hex(key: bytes, value: Any) -> str:
    """Hex HMAC-SHA256 of the canonical bytes: proves a raw value later without storing it."""
    return _hmac.new(key, dumps(value), hashlib.sha256).hexdigest()


def derive_key(key: bytes, purpose: str) -> bytes:
    """A separate key per purpose from one secret (HMAC-SHA256 as a PRF over the purpose's name)."""
    return _hmac.new(key, b"ledgergate/" + purpose.encode(), hashlib.sha256).digest()
