"""One form for every resource URI, so policy decides on what the upstream will act on.

Policy globs match strings, while an upstream parses the URI before it looks the
resource up: `demo://h/docs/./secret.md`, `…/docs/x/../secret.md`,
`…/docs/%2e%2e/secret.md` and `DEMO://H/docs/secret.md` all name
`demo://h/docs/secret.md` to a WHATWG or RFC 3986 parser (the MCP SDKs use one).
So the gateway rewrites the URI into one normal form before policy runs, and
forwards that same form; what could be read two ways is refused instead:

normalised (RFC 3986 §6.2.2, §6.2.3): scheme and host lowercased; percent-encoded
unreserved characters decoded, and in a path also the characters a path segment
may hold literally (sub-delims, `:`, `@`), so a server that decodes its path acts
on the string policy saw; the remaining percent-encodings uppercased; non-ASCII
characters percent-encoded as UTF-8 (RFC 3987 §3.1); dot segments removed
(§5.2.4); an http(s) default port dropped; an empty http(s) path made `/`.

refused (`UriRefused`, with the reason): whitespace, control and invisible
format characters anywhere (parsers strip or drop some of them); backslashes
(WHATWG reads them as `/` for special schemes); characters a URI may not hold
literally (`"<>^`{|}`; a resource template keeps its `{…}`); malformed
percent-encodings; encoded `/`, `\\`, controls or a double-encoded `.`/`/`/`\\`/
`%` in a path (they change the path's segments once decoded); empty path segments
(file servers collapse them, URL parsers do not); dot segments in a path with no
authority and no leading `/` (parsers disagree whether to resolve them); a URI
without a scheme; non-ASCII in the scheme or authority (IDNA is for the
client to apply). Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import unquote
from typing import Any

from ledgergate.policy.rules import COMPLETION_METHOD, TARGET_KIND

MAX_URI_LENGTH = 16384

_URI = re.compile(r"^(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?\Z", re.DOTALL)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_PCT = re.compile(r"%(.?.?)")
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: what a path segment may hold literally besides unreserved (RFC 3986 pchar)
_PCHAR_EXTRA = frozenset("!$&'()*+,;=:@")
#: never literal in a URI (RFC 3986 §2): a parser percent-encodes them or fails
_NEVER_LITERAL = frozenset('"<>\\^`{|}')
_TEMPLATE_LITERAL = frozenset('"<>\\^`|')
#: encoded octets a path must not carry: `/`, `\`, controls (they change segments or names once decoded)
_PATH_FORBIDDEN_OCTETS = frozenset({0x2F, 0x5C, 0x7F, *range(0x20)})
_DOUBLE_ENCODED = re.compile(r"%25(?:2[eEfF]|5[cC]|25)")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


class UriRefused(ValueError):
    """A URI that could be read two ways; `reason` says which way, for the caller and the record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_characters(uri: str, template: bool) -> None:
    never = _TEMPLATE_LITERAL if template else _NEVER_LITERAL
    for ch in uri:
        code = ord(ch)
        if code < 0x80:
            if code <= 0x20 or code == 0x7F:
                raise UriRefused("the URI contains whitespace or a control character"
                                 if code else "the URI contains a NUL character")
            if ch in never:
                raise UriRefused("the URI contains a backslash" if ch == "\\"
                                 else f"the URI contains {ch!r}, which a URI may not hold unencoded")
            continue
        category = unicodedata.category(ch)
        if category[0] in "CZ":  # controls, format (invisible), surrogates, private use, separators
            raise UriRefused(f"the URI contains an invisible, control or space character (U+{code:04X})")


def _normalise_encoding(part: str, component: str, decode_extra: frozenset[str]) -> str:
    """Percent-encodings validated and put in normal form; non-ASCII encoded as UTF-8."""
    out: list[str] = []
    i, n = 0, len(part)
    while i < n:
        ch = part[i]
        if ch == "%":
            hexpair = part[i + 1:i + 3]
            if len(hexpair) != 2 or not _HEX.issuperset(hexpair):
                raise UriRefused(f"the URI's {component} has a malformed percent-encoding")
            octet = int(hexpair, 16)
            char = chr(octet)
            if char in _UNRESERVED or char in decode_extra:
                out.append(char)
            else:
                out.append("%" + hexpair.upper())
            i += 3
            continue
        if ord(ch) >= 0x80:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, as written there."""
    output: list[str] = []
    inp = path
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./"):
            inp = inp[2:]
        elif inp.startswith("/./"):
            inp = inp[2:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = inp[3:]
            if output:
                output.pop()
        elif inp == "/..":
            inp = "/"
            if output:
                output.pop()
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            cut = inp.find("/", start)
            if cut < 0:
                cut = len(inp)
            output.append(inp[:cut])
            inp = inp[cut:]
    return "".join(output)


def _check_path_octets(path: str) -> None:
    if _DOUBLE_ENCODED.search(path):
        raise UriRefused("the URI's path double-encodes '.', '/', '\\' or '%'")
    for match in _PCT.finditer(path):
        if int(match.group(1), 16) in _PATH_FORBIDDEN_OCTETS:
            raise UriRefused("the URI's path encodes '/', '\\' or a control character, which would change its "
                             "segments once decoded")


def _check_edges(parts: list[str], what: str) -> None:
    """A path segment or query value that begins or ends with white space once decoded (`%20C-1001`,
    `C-1001%C2%A0`): rules match `C-1001` exactly, and a server that trims what it reads (many do:
    `.strip()`) serves C-1001 for it, so a deny on `bank://customers/C-1001` was read past with
    `bank://customers/C-1001%20`. Refused, as a tool name with edge white space is."""
    for part in parts:
        if "%" not in part:
            continue
        text = unquote(part, errors="replace")
        if text != text.strip():
            raise UriRefused(f"a {what} of the URI begins or ends with white space (encoded), which servers "
                             "commonly trim: send it without")


def _authority(authority: str, scheme: str) -> str:
    if not authority.isascii():
        raise UriRefused("the URI's host must be ASCII (send an internationalised name in its punycode form)")
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise UriRefused("the URI's host has an unclosed '['")
        host, rest = hostport[:close + 1], hostport[close + 1:]
        if rest and not rest.startswith(":"):
            raise UriRefused("the URI's authority has text after its IP literal")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
    if port is not None:
        if port and not port.isdigit():
            raise UriRefused("the URI's port is not a number")
        port = str(int(port)) if port else ""
        if not port or _DEFAULT_PORTS.get(scheme) == port:
            port = None
    host = _normalise_encoding(host, "host", frozenset()).lower()
    if "%" in host and not host.startswith("["):
        raise UriRefused("the URI's host contains a percent-encoded character")
    userinfo = _normalise_encoding(userinfo, "userinfo", frozenset()) if at else ""
    return f"{userinfo}{at}{host}{'' if port is None else ':' + port}"


def normalize_uri(uri: str, *, template: bool = False) -> str:
    """The normal form of an absolute URI (or, with `template`, of an RFC 6570 URI template's
    literal parts: its `{…}` expressions are kept). Raises UriRefused."""
    if len(uri) > MAX_URI_LENGTH:
        raise UriRefused(f"the URI is longer than {MAX_URI_LENGTH} characters")
    _check_characters(uri, template)
    parts = _URI.match(uri)
    assert parts is not None  # every string matches RFC 3986 Appendix B
    scheme, authority, path, query, fragment = parts.groups()
    if scheme is None or not _SCHEME.match(scheme):
        raise UriRefused("the URI has no scheme (a resource URI must be absolute, e.g. 'file:///path')")
    scheme = scheme.lower()
    path = _normalise_encoding(path, "path", _PCHAR_EXTRA)
    _check_path_octets(path)
    _check_edges(path.split("/"), "path segment")
    if query is not None:
        _check_edges(re.split(r"[&=;]", query), "query value")
    if authority is not None or path.startswith("/"):
        path = remove_dot_segments(path)
    elif any(segment in (".", "..") for segment in path.split("/")):
        raise UriRefused("the URI's path has '.' or '..' segments but no authority or leading '/', which "
                         "parsers resolve differently")
    if "//" in path:
        raise UriRefused("the URI's path has an empty segment ('//')")
    out = [scheme, ":"]
    if authority is not None:
        out += ["//", _authority(authority, scheme)]
        if not path and scheme in _DEFAULT_PORTS:
            path = "/"
    out.append(path)
    if query is not None:
        out += ["?", _normalise_encoding(query, "query", frozenset())]
    if fragment is not None:
        out += ["#", _normalise_encoding(fragment, "fragment", frozenset())]
    return "".join(out)


def normalize_params(method: str, params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The request's params with every resource URI in normal form, or None when nothing changes.

    Covers `resources/read|subscribe|unsubscribe` (`uri`), `completion/complete` with a
    `ref/resource` (`ref.uri`, a template) and `subscriptions/listen`
    (`notifications.resourceSubscriptions`). Raises UriRefused; a URI that is not a string
    is left to the upstream to refuse (policy sees no target for it).
    """
    if not params:
        return None
    if TARGET_KIND.get(method) == "resource":
        uri = params.get("uri")
        if isinstance(uri, str):
            normal = normalize_uri(uri)
            if normal != uri:
                return {**params, "uri": normal}
        return None
    if method == COMPLETION_METHOD:
        ref = params.get("ref")
        if isinstance(ref, Mapping) and ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            normal = normalize_uri(ref["uri"], template=True)
            if normal != ref["uri"]:
                return {**params, "ref": {**ref, "uri": normal}}
        return None
    if method == "subscriptions/listen":
        wanted = params.get("notifications")
        uris = wanted.get("resourceSubscriptions") if isinstance(wanted, Mapping) else None
        if isinstance(uris, list) and any(isinstance(u, str) for u in uris):
            normal_uris = [normalize_uri(u) if isinstance(u, str) else u for u in uris]
            if normal_uris != uris:
                assert isinstance(wanted, Mapping)
                return {**params, "notifications": {**wanted, "resourceSubscriptions": normal_uris}}
        return None
    return None
