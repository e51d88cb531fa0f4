"""The console's sealed cookies and CSRF rule, without a browser: tampering, expiry, purpose, origins."""

from __future__ import annotations

import base64
import hashlib

from ledgergate.ui import security

KEY = b"k" * 32


def test_sealed_value_round_trips_until_it_expires() -> None:
    value = security.seal(KEY, "session", {"sub": "bob"}, expires=1000.0)
    assert security.unseal(KEY, "session", value, now=999.0) == {"sub": "bob"}
    assert security.unseal(KEY, "session", value, now=1000.0) is None
    assert security.unseal(KEY, "login", value, now=999.0) is None  # another purpose
    assert security.unseal(b"x" * 32, "session", value, now=999.0) is None  # another key


def test_any_change_to_a_sealed_value_is_refused() -> None:
    value = security.seal(KEY, "session", {"sub": "bob", "groups": ["analysts"]}, expires=1000.0)
    body, _, mac = value.partition(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(b"analysts", b"approver")
    forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac
    assert security.unseal(KEY, "session", forged, now=1.0) is None
    for bad in ("", "abc", value + "x", "." + mac, body + ".", value.replace(".", ".."), "a" * 9000):
        assert security.unseal(KEY, "session", bad, now=1.0) is None


def test_csrf_needs_our_origin_and_this_sessions_token() -> None:
    ours = {"http://127.0.0.1:8080"}
    ok = security.csrf_problem("t1", "t1", "http://127.0.0.1:8080", None, ours)
    assert ok is None
    assert "another site" in str(security.csrf_problem("t1", "t1", "http://evil.example", None, ours))
    assert "another site" in str(security.csrf_problem("t1", "t1", "http://127.0.0.1:8081", None, ours))
    assert "another site" in str(security.csrf_problem("t1", "t1", None, "http://evil.example/x", ours))
    assert security.csrf_problem("t1", "t1", None, "http://127.0.0.1:8080/ui/approvals", ours) is None
    assert "no Origin" in str(security.csrf_problem("t1", "t1", None, None, ours))
    assert "CSRF token" in str(security.csrf_problem("t1", "t2", "http://127.0.0.1:8080", None, ours))
    assert "CSRF token" in str(security.csrf_problem("t1", None, "http://127.0.0.1:8080", None, ours))
    assert "no Origin" in str(security.csrf_problem("t1", "t1", "null", None, ours))


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = security.pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_csp_has_no_inline_anything() -> None:
    directives = dict(d.strip().split(" ", 1) for d in security.CSP.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'" and "unsafe" not in security.CSP


def test_origin_is_judged_on_headers_alone_and_the_token_apart() -> None:
    ours = {"http://127.0.0.1:8080"}
    assert security.origin_problem("http://127.0.0.1:8080", None, ours) is None
    assert security.origin_problem("https://evil.example", None, ours) == "the request came from another site (Origin)"
    assert security.origin_problem(None, None, ours) == "the request names no Origin or Referer"
    assert security.token_problem("t", "t") is None and security.token_problem("t", None) is not None
    assert security.csrf_problem("t", "u", "http://127.0.0.1:8080", None, ours) == security.token_problem("t", "u")


def test_a_cookie_past_what_browsers_keep_does_not_fit() -> None:
    assert security.cookie_fits(security.SESSION_COOKIE, "v" * (security.COOKIE_LIMIT - len(security.SESSION_COOKIE)))
    assert not security.cookie_fits(security.SESSION_COOKIE, "v" * 4096)
    assert security.COOKIE_LIMIT <= 4096
