"""The JSON-aware walk: a masked deep copy of any JSON value.

Why a walker and not "mask the serialized text": key names carry meaning that
text alone loses (`{"ssn": 123456789}` is an SSN whatever it looks like, and a
number), and a masked structure must keep its shape exactly so clients and
`structuredContent` schemas still work. Why iterative: JSON from an upstream can
nest deeper than Python's recursion limit, and a stack overflow must not become
an unmasked pass-through.

The walker knows nothing of detectors; it asks a `LeafMasker` what to do with
each key and leaf, and only decides *where* things are.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from ledgergate.masking.names import US_BANK_ACCOUNT

#: tentative rules that reach the fields of a record under their key as strings only: in
#: `{"account": {"number": "6296819003", "balance": 250000, "opened": 1700000000}}` the number is a string
#: the value's shape decides on, while JSON numbers there are the account's properties (a balance, a
#: time: 6-17 digits too) and are scanned as any number is. Directly under the key (`{"to_account":
#: 6296819001}`, a list of them) a number is the account's.
_NOT_INTO_RECORDS = frozenset({US_BANK_ACCOUNT + "?"})
_STRINGS_ONLY = "~"  # suffix of an inherited rule that applies to strings only (see _NOT_INTO_RECORDS)


def _into(det: str | None, child: Any) -> str | None:
    """The rule a container under a key inherits."""
    if det is not None and det in _NOT_INTO_RECORDS and isinstance(child, dict):
        return det + _STRINGS_ONLY
    return det

__all__ = ["MAX_DEPTH", "LeafMasker", "UnsupportedValue", "walk"]

MAX_DEPTH = 100_000  # deeper than any real JSON; a Python object cycle hits it instead of looping
_BINARY_TYPES = frozenset({"image", "audio"})


class UnsupportedValue(Exception):
    """A value that is not JSON (bytes, sets, objects, a cycle): the caller must fail closed."""


class LeafMasker(Protocol):
    """One masking run: knows the profile and accumulates the counts."""

    def key(self, key: object) -> tuple[object, str | None]:
        """(key to emit, detector the key name forces on its value or None).

        A detector name ending in '?' is tentative (a generic key such as `name`): `forced`
        decides by the value, and a nested key's own detector replaces it.
        """

    def text(self, value: str) -> str:
        """A string scanned for sensitive spans."""

    def forced(self, detector: str, value: str) -> str:
        """A whole value masked because its key says what it is."""

    def number(self, value: int) -> int | str:
        """An integer outside sensitive keys (a card number sent as a JSON number), or the integer
        an integral float equals: the value itself if clean, else its masked text."""

    def blob(self, value: str) -> str:
        """A base64 payload (`resources/read` blob, image/audio data)."""


def _integers(value: float) -> tuple[int, ...]:
    """The integers an integral float is read as; none for fractions, infinities and NaN.

    `4111111111111111.0` and `4.111111111111111e15` are the card number to every client (and the
    ledger's canonical JSON writes them as `4111111111111111`). Beyond 10**16 a float is not the
    integer it was written as, and JavaScript and RFC 8785 write its shortest digits padded with
    zeros (4.111111111111117e18 is 4111111111111116800 but is written 4111111111111117000): both.
    """
    if not value.is_integer():  # also False for inf and nan
        return ()
    exact = int(value)
    if 1e16 <= abs(value) < 1e21:
        shown = int(Decimal(repr(value)))
        if shown != exact:
            return exact, shown
    return (exact,)


def _leaf(value: Any, forced: str | None, run: LeafMasker) -> Any:
    if forced is not None and forced.endswith(_STRINGS_ONLY):
        forced = forced[:-1] if isinstance(value, str) else None
    if isinstance(value, str):
        return run.text(value) if forced is None else run.forced(forced, value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if forced is None:
            return run.number(value)
        text = str(value)
    elif isinstance(value, float):
        # an integral float is checked as the integer(s) it equals, as an int would be (a masked
        # number becomes a string); a clean one stays the float it was (`-0.0` too), as do fractions
        numbers = _integers(value)
        for number in numbers:
            if forced is None:
                masked = run.number(number)
                if isinstance(masked, str):
                    return masked
            else:
                text = str(number)
                out = run.forced(forced, text)
                if out is not text:
                    return out
        if forced is None or numbers:
            return value
        text = repr(value)
    else:
        raise UnsupportedValue(type(value).__name__)
    out = run.forced(forced, text)
    return value if out is text else out  # a number the key's rule left alone stays a number


def walk(value: Any, run: LeafMasker) -> Any:
    """A masked deep copy of `value`; the input is never mutated.

    Dict keys keep their order; a key that itself holds sensitive data is masked
    too, and if two masked keys collide the later ones get ` #2`, ` #3`, ...
    A sensitive key name forces masking of every scalar beneath it (strings and
    numbers; booleans and null carry nothing and stay). Tuples become lists.
    """
    if not isinstance(value, (dict, list, tuple)):
        return _leaf(value, None, run)
    root: list[Any] = [None]
    # (source container, destination container, slot in destination, forced detector, depth)
    stack: list[tuple[Any, Any, Any, str | None, int]] = [(value, root, 0, None, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        src, dst, slot, forced, depth = pop()
        if depth > MAX_DEPTH:
            raise UnsupportedValue("nesting too deep")
        if isinstance(src, dict):
            out: dict[Any, Any] = {}
            dst[slot] = out
            kind = src.get("type") if "data" in src else None
            # `type` may be anything an upstream sends (a JSON Schema's ["string", "null"]): only a
            # string can name a binary content type, and a list must not make masking fail
            binary_data = type(kind) is str and kind in _BINARY_TYPES
            for k, v in src.items():
                nk, kdet = run.key(k)
                if nk in out:
                    i = 2
                    while f"{nk} #{i}" in out:
                        i += 1
                    nk = f"{nk} #{i}"
                # a tentative rule inherited from a generic key ("PERSON?" from `name`) yields to the
                # key's own rule: {"name": {"ssn": ...}} masks the SSN as an SSN
                det = kdet if forced is None or (kdet is not None and forced.endswith(("?", "?" + _STRINGS_ONLY))) \
                    else forced
                if isinstance(v, (dict, list, tuple)):
                    out[nk] = None
                    push((v, out, nk, _into(det, v), depth + 1))
                elif det is None and isinstance(v, str) and (k == "blob" or (k == "data" and binary_data)):
                    out[nk] = run.blob(v)
                else:
                    out[nk] = _leaf(v, det, run)
        elif isinstance(src, (list, tuple)):
            items: list[Any] = [None] * len(src)
            dst[slot] = items
            for i, v in enumerate(src):
                if isinstance(v, (dict, list, tuple)):
                    push((v, items, i, _into(forced, v), depth + 1))
                else:
                    items[i] = _leaf(v, forced, run)
        else:  # pragma: no cover - only containers are pushed
            raise UnsupportedValue(type(src).__name__)
    return root[0]
