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
- anything else (integers outside ±(2^53-1), nesting deeper than orjson's
  254 levels, object keys starting "$lg.") goes to `_encode`, an iterative
  RFC 8785 encoder of our own (no recursion limit to hit).

What I-JSON (RFC 7493) cannot carry is recorded in a defined form, never
refused and never rounded, because a request the gateway forwards must have a
record, and the HMAC of its raw arguments must prove exactly those arguments:

- an integer outside ±(2^53-1) becomes `{"$lg.int": "<its decimal digits>"}`;
- a NaN or infinite float becomes `{"$lg.float": "NaN"|"Infinity"|"-Infinity"}`;
- a container nested deeper than `MAX_DEPTH` levels (readers of a record,
  orjson and Python's json among them, refuse around 1,000) becomes
  `{"$lg.deep": "sha256:<hex of this encoding of the container>"}`, so the
  value is still bound, only not spelled out;
- an object key that itself starts with "$lg." gets a second "$lg." prefix,
  so no input can pass for one of the markers above (the encoding stays
  one-to-one, which the HMACs rely on).

A large value can be encoded ahead, off the ledger's writer thread (`encoded`), and placed in a record
as its `Encoded` bytes: the record's encoding splices them in unchanged, so the writer's turn for a
record holding 4 MB of arguments is a copy, not a walk that every other record waits behind.

tests/unit/test_canonical.py checks byte equality with `rfc8785` on generated
values, and the markers. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import math
from typing import Any

import orjson
import rfc8785

_SAFE = (1 << 53) - 1
_OPTS = orjson.OPT_SORT_KEYS
MAX_DEPTH = 600  # containers below this many levels are recorded as a digest (see the module docstring)
_TAG = "$lg."
TAG_INT, TAG_FLOAT, TAG_DEEP = _TAG + "int", _TAG + "float", _TAG + "deep"
_CYCLE_DEPTH = 100_000  # deeper than any parsed JSON: a Python object cycle, which is no JSON value


class Encoded(bytes):
    """The canonical bytes of a value (`encoded`), to stand for it inside a larger value."""


def encoded(value: Any, depth: int) -> Encoded:
    """`value`'s canonical bytes as they are at `depth` inside a record (the record is depth 0, its fields'
    values depth 1): the depth decides where a deep container becomes a `$lg.deep` marker."""
    try:
        out = orjson.dumps(_prepare(value), option=_OPTS)
    except (_Slow, orjson.JSONEncodeError, RecursionError):
        return Encoded(_encode(value, MAX_DEPTH - depth))
    if b'"$lg.' in out:
        return Encoded(_encode(value, MAX_DEPTH - depth))
    return Encoded(out)


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
    if a != a or a == math.inf:
        raise _Slow  # NaN and infinities get a marker
    return rfc8785.dumps(f)


def _prepare(value: Any) -> Any:
    """A copy orjson serialises canonically, or _Slow. (Nesting beyond orjson's limit surfaces as
    JSONEncodeError or RecursionError, keys starting "$lg." as that text in the output: `dumps`
    sends both to the slow path, so the hot path pays no check for them.)"""
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
        return _prepare_dict(value)
    if t is list or t is tuple:
        return [v if type(v) is str else _prepare(v) for v in value]
    if t is Encoded:
        return orjson.Fragment(value)
    raise _Slow


def _prepare_dict(value: dict[Any, Any]) -> dict[str, Any]:
    """`_prepare` of an object, the common member values (strings, small integers, booleans, null)
    handled inline: a ledger record is mostly those, and a call per member was half its cost."""
    out = {}
    for k, v in value.items():
        if type(k) is not str or (not k.isascii() and any(ord(c) >= 0xD800 for c in k)):
            raise _Slow
        t = type(v)
        if t is str or t is bool or v is None:
            out[k] = v
        elif t is int and -_SAFE <= v <= _SAFE:
            out[k] = v
        elif t is dict:
            out[k] = _prepare_dict(v)
        else:
            out[k] = _prepare(v)
    return out


class _Tok(bytes):
    """Output bytes already encoded (punctuation, keys), on the encoder's stack beside values."""


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")  # byte order = RFC 8785 §3.2.3's UTF-16 code unit order


def _marker(tag: str, text: str) -> bytes:
    return b'{"' + tag.encode() + b'":' + orjson.dumps(text) + b"}"


def _encode(value: Any, limit: int = MAX_DEPTH) -> bytes:
    """RFC 8785 bytes of `value`, with the markers of the module docstring; iterative."""
    out: list[bytes] = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t is _Tok or t is Encoded:
            out.append(v)
        elif v is None:
            out.append(b"null")
        elif t is bool:
            out.append(b"true" if v else b"false")
        elif t is str:
            out.append(orjson.dumps(v))
        elif isinstance(v, int):
            out.append(b"%d" % v if -_SAFE <= v <= _SAFE else _marker(TAG_INT, str(int(v))))
        elif isinstance(v, float):
            out.append(_float(v) if math.isfinite(v) else
                       _marker(TAG_FLOAT, "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")))
        elif isinstance(v, dict | list | tuple):
            if depth > _CYCLE_DEPTH:
                raise ValueError("value nests without end (an object cycle is not JSON)")
            if depth >= limit:
                out.append(_marker(TAG_DEEP, "sha256:" + hashlib.sha256(_encode(v, _CYCLE_DEPTH + 1)).hexdigest()))
            elif isinstance(v, dict):
                items = []
                for k, x in v.items():
                    if type(k) is not str:
                        raise ValueError(f"object key of type {type(k).__name__} is not JSON")
                    items.append((_TAG + k if k.startswith(_TAG) else k, x))
                items.sort(key=lambda kv: _utf16(kv[0]))
                push((_Tok(b"}"), 0))
                for i in range(len(items) - 1, -1, -1):
                    k, x = items[i]
                    push((x, depth + 1))
                    push((_Tok((b"," if i else b"") + orjson.dumps(k) + b":"), 0))
                push((_Tok(b"{"), 0))
            else:
                push((_Tok(b"]"), 0))
                for i in range(len(v) - 1, -1, -1):
                    push((v[i], depth + 1))
                    if i:
                        push((_Tok(b","), 0))
                push((_Tok(b"["), 0))
        else:
            raise ValueError(f"a {t.__name__} is not a JSON value")
    return b"".join(out)


def dumps(value: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of a JSON value (what I-JSON cannot carry in the module's markers)."""
    try:
        out = orjson.dumps(_prepare(value), option=_OPTS)
    except (_Slow, orjson.JSONEncodeError, RecursionError):
        return _encode(value)
    if b'"$lg.' in out:  # a key (or a string) that needs the escaping only _encode does
        return _encode(value)
    return out


def hmac_hex(key: bytes, value: Any) -> str:
    """Hex HMAC-SHA256 of the canonical bytes: proves a raw value later without storing it."""
    return _hmac.new(key, dumps(value), hashlib.sha256).hexdigest()


def derive_key(key: bytes, purpose: str) -> bytes:
    """A separate key per purpose from one secret (HMAC-SHA256 as a PRF over the purpose's name)."""
    return _hmac.new(key, b"ledgergate/" + purpose.encode(), hashlib.sha256).digest()
