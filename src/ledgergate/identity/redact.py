"""Redacting URLs before they become error, log or readiness text.

`/readyz` answers without authentication (Kubernetes probes it), and log lines
travel further than the config does, yet the endpoints the identity package
talks to may carry credentials: `https://user:pass@idp/jwks?key=…`, a
discovered `jwks_uri` with a signed query, a store URL with a password. Every
URL the identity package puts into text goes through here first: userinfo is
dropped, a query or fragment becomes `?…` / `#…`, and scheme, host, port and
path are kept so an operator can still tell which endpoint failed.
"""

from __future__ import annotations

import contextvars
import logging
import re
from urllib.parse import parse_qsl, urlsplit

#: the longest redacted URL put into text (paths can be long; the start says which endpoint)
_MAX_URL = 200
#: a URL inside free text: scheme "://" up to whitespace, a quote or an angle bracket
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]*")
#: secrets shorter than this are not scrubbed from free text (they would erase ordinary words)
_MIN_SECRET = 4


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def redact_url(url: str) -> str:
    """`url` without userinfo, with any query or fragment replaced by `?…` / `#…`.

    `http://user:pw@127.0.0.1:8/keys?k=s#f` → `http://127.0.0.1:8/keys?…#…`. Something
    that does not parse as a URL is not echoed at all.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparseable URL)"
    if not parts.scheme or "://" not in url:
        # Not an absolute URL: keep no more than a path could say, never a query or fragment.
        path = url.split("?", 1)[0].split("#", 1)[0]
        out = path.rpartition("@")[2]
        if len(path) < len(url):
            out += "?…" if "?" in url else "#…"
        return _printable(out[:_MAX_URL])
    host = parts.netloc.rpartition("@")[2]
    out = f"{url.partition('://')[0]}://{host}{parts.path}"  # the scheme as written
    if len(out) > _MAX_URL:
        out = out[:_MAX_URL] + "…"
    if parts.query or url.split("#", 1)[0].endswith("?"):
        out += "?…"
    if parts.fragment or url.endswith("#"):
        out += "#…"
    return _printable(out)


def _secrets_of(url: str) -> list[str]:
    """The parts of `url` that must not appear in text on their own: userinfo, password, query, fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url] if len(url) >= _MIN_SECRET else []
    found: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.append(userinfo)
        password = userinfo.partition(":")[2]
        if password:
            found.append(password)
    found.extend(x for x in (parts.query, parts.fragment) if x)
    found.extend(value for _, value in parse_qsl(parts.query, keep_blank_values=False))
    return [s for s in found if len(s) >= _MIN_SECRET]


def redact_text(text: str, *urls: str | None) -> str:
    """`text` with every URL in it redacted and the secret parts of `urls` (the endpoints that were
    being talked to) scrubbed wherever they still appear, e.g. quoted on their own by an exception."""
    out = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    secrets = sorted({s for u in urls if u for s in _secrets_of(u)}, key=len, reverse=True)
    for secret in secrets:
        out = out.replace(secret, "…")
    return _printable(out)


#: Set around a request whose URL path is itself a credential (a Slack webhook's `/services/T…/B…/…`):
#: httpx's line for it then names the scheme and host only.
PATH_IS_SECRET: contextvars.ContextVar[bool] = contextvars.ContextVar("ledgergate_path_is_secret", default=False)


def _host_only(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(an unparseable URL)"
    return _printable(f"{parts.scheme}://{host}/…")


class HttpxRequestLines(logging.Filter):
    """httpx logs every request it sends at INFO, as "HTTP Request: POST <url> ...", with the URL's userinfo
    and query as configured. Every httpx client in the gateway talks to a configured endpoint that may carry
    credentials: an IdP's discovery and JWKS, a witness, an approval webhook, the console's token endpoint. So
    each such line's URL is redacted (`redact_url`; the host alone where `PATH_IS_SECRET` is set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            secret_path = PATH_IS_SECRET.get()
            record.args = tuple((_host_only if secret_path else redact_url)(str(arg)) if "://" in str(arg)
                                else arg for arg in record.args)
        return True


def redact_httpx_request_lines() -> None:
    """Install `HttpxRequestLines` on httpx's logger (once). Done when this module is imported: every module
    whose httpx client talks to a configured endpoint imports it."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, HttpxRequestLines) for f in logger.filters):
        logger.addFilter(HttpxRequestLines())


redact_httpx_request_lines()
