"""The console's own protections, in one place: signed cookies, CSRF, and the response headers.

- Cookies are `base64url(JSON) . base64url(HMAC-SHA256)` under a key derived from
  the ledger's HMAC key (every replica of one deployment shares it), with an
  expiry inside the signed part; HttpOnly, SameSite=Lax, Path=/ui, and Secure
  whenever the console is reached over https (the request's scheme or an https
  `public_url`). Lax, not Strict: the IdP's redirect back to /ui/callback is a
  cross-site navigation that must carry the login-state cookie.
- CSRF: every state-changing request (POST) must carry the session's
  synchronizer token (form field `csrf` or header `X-CSRF-Token`) and an
  `Origin` (or, failing that, `Referer`) of this console's own origin. A form
  posted from another site has neither.
  The origin is checked before the body is read; the body is read only as a
  small urlencoded form (`FORM_LIMIT`).
- Every response under /ui: a Content-Security-Policy with no inline script
  and no inline style (`script-src 'self'`, `style-src 'self'`), no framing,
  no referrer beyond the origin, no caching, no MIME sniffing. The static
  files carry the same but may be cached (revalidated: `no-cache`).
- A cookie is kept by a browser only while its name and value stay within
  4096 bytes (RFC 6265 §6.1's minimum, Chromium's limit); a larger one is
  dropped without a word, so the console never sets one (`COOKIE_LIMIT`).

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

SESSION_COOKIE = "lg_console"
LOGIN_COOKIE = "lg_console_login"
#: how long a sign-in attempt (its sealed login cookie) may take, from /ui/login to /ui/callback
LOGIN_TTL = 600
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: the static script and style sheet: the same, but a browser may keep them and revalidate
STATIC_HEADERS = {**HEADERS, "Cache-Control": "no-cache"}

#: a console form is a few short fields; a POST body past this is refused (413) before more is read
FORM_LIMIT = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
#: name and value of a cookie the console sets, in bytes, with room below the 4096 browsers keep
COOKIE_LIMIT = 4000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, purpose: str, payload: dict[str, Any], expires: float) -> str:
    """A tamper-evident cookie value of `payload` for one purpose, good until `expires` (epoch s)."""
    body = _b64(json.dumps({"p": purpose, "exp": expires, "d": payload}, separators=(",", ":")).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return body + "." + _b64(mac)


def unseal(key: bytes, purpose: str, value: str | None, now: float) -> dict[str, Any] | None:
    """The payload if `value` was sealed here for `purpose` and has not expired; else None."""
    if not value or value.count(".") != 1 or len(value) > 8192:
        return None
    body, _, mac = value.partition(".")
    try:
        good = hmac.compare_digest(_unb64(mac), hmac.new(key, body.encode(), hashlib.sha256).digest())
        doc = json.loads(_unb64(body)) if good else None
    except (ValueError, TypeError):
        return None
    if not isinstance(doc, dict) or doc.get("p") != purpose or not isinstance(doc.get("exp"), (int, float)):
        return None
    if doc["exp"] <= now or not isinstance(doc.get("d"), dict):
        return None
    return doc["d"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) — RFC 7636 §4.1, §4.2."""
    verifier = secrets.token_urlsafe(48)
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())


def same_origin(origin: str, expected: set[str]) -> bool:
    parts = urlsplit(origin)
    return bool(parts.scheme and parts.netloc) and f"{parts.scheme}://{parts.netloc}".lower() in expected


def origin_problem(origin: str | None, referer: str | None, expected_origins: set[str]) -> str | None:
    """Why a state-changing request is refused for where it came from (headers only), or None."""
    if origin is not None and origin != "null":
        if not same_origin(origin, expected_origins):
            return "the request came from another site (Origin)"
    elif referer:
        if not same_origin(referer, expected_origins):
            return "the request came from another site (Referer)"
    else:
        return "the request names no Origin or Referer"
    return None


def token_problem(session_token: str | None, sent_token: str | None) -> str | None:
    """Why a state-changing request is refused for the CSRF token it carries, or None."""
    if not session_token or not sent_token or not hmac.compare_digest(session_token, sent_token):
        return "the form's CSRF token is missing or not this session's"
    return None


def csrf_problem(session_token: str | None, sent_token: str | None, origin: str | None, referer: str | None,
                 expected_origins: set[str]) -> str | None:
    """Why a state-changing request is refused, or None when it carries this session's token from our origin."""
    return origin_problem(origin, referer, expected_origins) or token_problem(session_token, sent_token)


def cookie_fits(name: str, value: str) -> bool:
    """Whether a browser keeps a cookie of this name and value (see `COOKIE_LIMIT`)."""
    return len(name.encode()) + len(value.encode()) <= COOKIE_LIMIT


def cookie_attributes(secure: bool, max_age: int, path: str = "/ui") -> dict[str, Any]:
    return {"max_age": max_age, "path": path, "httponly": True, "secure": secure, "samesite": "lax"}


__all__ = ["COOKIE_LIMIT", "CSP", "CSRF_FIELD", "CSRF_HEADER", "FORM_LIMIT", "FORM_TYPE", "HEADERS", "LOGIN_COOKIE",
           "SESSION_COOKIE", "STATIC_HEADERS", "cookie_attributes", "cookie_fits", "csrf_problem", "new_token",
           "origin_problem", "pkce_pair", "same_origin", "seal", "token_problem", "unseal"]
