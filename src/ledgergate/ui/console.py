"""The web console's routes: login, approvals inbox, sessions and replay, ledger, admin.

Server-rendered (Jinja2, autoescaped), with one static script for the live
parts (countdowns, polling the inbox, keyboard). Who is signed in lives in a
sealed cookie (`ui.security`); roles come from the IdP groups named in
`console.roles`. Everything the console does on someone's behalf is in the
ledger before it takes effect or is shown: `console.login`, `console.logout`,
approval decisions (the approvals service records them), `session.replayed`,
`session.exported`, `record.proof_exported`, `ledger.verified`. If the
ledger cannot record, the page says so and nothing is shown or done.

Values shown are the ledger's and the approvals store's masked views only, with every character a
reader would not see written out (`ui/visible.py`).

Every /ui response carries the console's security headers (`ui.security.HEADERS`), a 404 or 405 too.
A POST is judged on its headers first (Host, session, Origin, role, an `X-CSRF-Token`), and only then
is its body read: a urlencoded form of at most `security.FORM_LIMIT` bytes, never spooled to disk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgergate.api.ledger_reader import LedgerReader, RecordProblem, load_sessions
from ledgergate.api.records import NotFound, make_proof, proof_filename, valid_log_id
from ledgergate.approvals import model
from ledgergate.approvals.service import ApprovalService
from ledgergate.audit import proof as tlog_proof
from ledgergate.audit.bundle import Filter, dump_bundle, export_bundle, normalize_time
from ledgergate.audit.checkpoint import Checkpoint, NoteError, open_checkpoint
from ledgergate.audit.prover import LogProver
from ledgergate.audit.sessions import (
    Session,
    SessionFilter,
    decider_label,
    is_cli_decision,
    replay,
    select,
)
from ledgergate.audit.verify import WitnessNote, verify_store
from ledgergate.audit.witness import witness_label
from ledgergate.config import ConsoleSettings, Settings
from ledgergate.errors import AuthError, GatewayError
from ledgergate.numbers import parse_uint
from ledgergate.principal import Principal
from ledgergate.store.ledger_store import StoreError
from ledgergate.store.signouts_store import SignOutStore
from ledgergate.ui import security
from ledgergate.ui.oidc import LoginError, OidcClient
from ledgergate.ui.visible import pretty_json, shown

HERE = Path(__file__).parent
PRESET_REASONS = (
    "Verified with the requester",
    "Matches an open change ticket",
    "Expected business activity",
    "Not expected: the requester must explain",
    "Amount or target looks wrong",
)
ROLES = ("approver", "auditor", "admin")
#: the inbox shows at most this many waiting approvals, reading at most INBOX_SCAN stored ones to find them
INBOX_ITEMS = 200
INBOX_SCAN = 20000
#: sessions per page of the sessions list (newest first; `next` pages on)
SESSIONS_PAGE = 100
#: fields in a console form at most (each has a handful)
FORM_FIELDS = 64

log = logging.getLogger("ledgergate.ui.console")


class Identity(Protocol):
    async def authenticate(self, credential: str | None) -> Principal: ...

    def check_disabled(self, principal: Principal) -> None: ...


class LedgerPort(Protocol):
    log_id: str

    @property
    def size(self) -> int: ...

    async def append(self, event: str, fields: Any) -> int: ...

    async def root_at(self, size: int) -> bytes: ...

    def subkey(self, purpose: str) -> bytes: ...


@dataclass
class ConsoleContext:
    settings: Callable[[], Settings]
    identity: Callable[[], Identity]
    approvals: ApprovalService
    ledger: LedgerPort
    reader: LedgerReader
    host_ok: Callable[[str | None], bool]
    fingerprints: Any = None  # FingerprintStore
    config_path: Path | None = None
    signouts: SignOutStore | None = None  # sessions ended by signing out (every replica reads it)


@dataclass(frozen=True)
class User:
    issuer: str
    subject: str
    kind: str
    groups: frozenset[str]
    name: str
    csrf: str
    expires: float

    def principal(self) -> Principal:
        return Principal(self.issuer, self.subject, "service" if self.kind == "service" else "human", self.groups,
                         {"preferred_username": self.name})

    def summary(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "subject": self.subject, "kind": self.kind, "groups": sorted(self.groups)}


def _finalize(value: Any) -> Any:
    """What a template prints: every string with its hidden characters written out (`shown`), whether
    plain, Markup a filter made of escaped parts, or the text Jinja would print for a list or a dict.
    The templates' own markup is not an expression and is left alone."""
    if isinstance(value, Markup):
        return Markup(shown(str(value)))  # `[U+XXXX]` is plain ASCII: nothing to escape
    if isinstance(value, str):
        return shown(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return shown(str(value))


class Console:
    def __init__(self, ctx: ConsoleContext, settings: ConsoleSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        issuer = settings.issuer or next((i.issuer for i in ctx.settings().identity.oidc), None)
        if issuer is None:
            raise ValueError("console: no issuer (set console.issuer or configure identity.oidc)")
        self.issuer = issuer.rstrip("/")
        self.oidc = OidcClient(settings, self.issuer)
        self.key = ctx.ledger.subkey("console-cookies")
        # every value a page shows passes `shown` (ui/visible.py): a bidi override or zero-width character in
        # what a requester sent is made visible, not obeyed; the templates' own markup is left alone
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True, finalize=_finalize)
        self.env.filters["pretty"] = pretty_json

    # ── plumbing ─────────────────────────────────────────────────────────────
    def base_url(self, request: Request) -> str:
        public = self.ctx.settings().public_url
        return (public or f"{request.url.scheme}://{request.headers.get('host')}").rstrip("/")

    def secure(self, request: Request) -> bool:
        return self.base_url(request).startswith("https://") or request.url.scheme == "https"

    def origins(self, request: Request) -> set[str]:
        out = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
        public = self.ctx.settings().public_url
        if public:
            parts = urlsplit(public)
            out.add(f"{parts.scheme}://{parts.netloc}".lower())
        return out

    def roles(self, user: User) -> set[str]:
        r = self.settings.roles
        held = set()
        for role, groups in (("approver", r.approver), ("auditor", r.auditor), ("admin", r.admin)):
            if not user.groups.isdisjoint(groups):
                held.add(role)
        return held

    def role_groups(self, role: str) -> list[str]:
        return list(getattr(self.settings.roles, role))

    def user(self, request: Request) -> User | None:
        doc = security.unseal(self.key, "session", request.cookies.get(security.SESSION_COOKIE), time.time())
        if doc is None:
            return None
        try:
            return User(doc["iss"], doc["sub"], doc["kind"], frozenset(doc["groups"]), doc["name"], doc["csrf"],
                        float(doc["exp"]))
        except (KeyError, TypeError, ValueError):
            return None

    def html(self, request: Request, template: str, user: User | None, status: int = 200, **context: Any) -> Response:
        flash = security.unseal(self.key, "flash", request.cookies.get("lg_console_flash"), time.time())
        body = self.env.get_template(template).render(
            user=user, roles=self.roles(user) if user else set(), csrf=user.csrf if user else "",
            flash=flash, path=request.url.path, **context)
        resp = HTMLResponse(body, status_code=status, headers=security.HEADERS)
        if flash is not None:
            resp.delete_cookie("lg_console_flash", path="/ui")
        return resp

    def error(self, request: Request, user: User | None, status: int, title: str, message: str) -> Response:
        return self.html(request, "error.html", user, status, title=title, message=message)

    def redirect(self, url: str, request: Request, flash: dict[str, Any] | None = None) -> Response:
        resp = RedirectResponse(url, status_code=303, headers=security.HEADERS)
        if flash is not None:
            resp.set_cookie("lg_console_flash", security.seal(self.key, "flash", flash, time.time() + 60),
                            **security.cookie_attributes(self.secure(request), 60))
        return resp

    async def record(self, event: str, fields: dict[str, Any]) -> None:
        await self.ctx.ledger.append(event, {"via": "console", **fields})

    def guard(self, role: str | tuple[str, ...] | None, handler: Callable[[Request, User], Awaitable[Response]],
              *, post: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Host check, signed-in user, role, and (for POST) the origin and CSRF token; then `handler`.

        A POST is judged on everything its headers say before a byte of its body is read (a signed-in
        user without the role, or a form from another site, cannot make the gateway take in a body), and
        the body is then read as a small urlencoded form only (`form`), which `handler` finds in
        `request.state.form`. A POST refused unread closes its connection, so its body is not taken in
        either."""
        wanted = (role,) if isinstance(role, str) else role

        async def endpoint(request: Request) -> Response:
            resp = await judged(request)
            if post and not getattr(request.state, "body_read", False):
                resp.headers["Connection"] = "close"
            return resp

        async def judged(request: Request) -> Response:
            if not self.ctx.host_ok(request.headers.get("host")):
                return PlainTextResponse("Forbidden: Host header not allowed", status_code=403,
                                         headers=security.HEADERS)
            user = self.user(request)
            if user is not None and (refused := await self._offboarded(request, user)) is not None:
                return refused
            if user is not None:
                try:
                    ended = await self._signed_out(user)
                except Exception as exc:  # noqa: BLE001 - the store could not say: fail closed
                    log.error("console: sign-outs could not be read: %s", type(exc).__name__)
                    return self.error(request, None, 503, "Not available",
                                      "The console cannot check its sign-ins right now; nothing was shown or done.")
                if ended:
                    resp = self.error(request, None, 401, "Signed out", "This console session was signed out; "
                                      "sign in again.")
                    resp.delete_cookie(security.SESSION_COOKIE, path="/ui")
                    return resp
            if user is None:
                if post:
                    return self.error(request, None, 401, "Signed out", "Your console session ended; sign in again.")
                return RedirectResponse("/ui/login?" + urlencode({"next": str(request.url.path)}), status_code=303,
                                        headers=security.HEADERS)
            header_token = request.headers.get(security.CSRF_HEADER)
            if post:
                problem = security.origin_problem(request.headers.get("origin"), request.headers.get("referer"),
                                                  self.origins(request))
                if problem is None and header_token is not None:
                    problem = security.token_problem(user.csrf, header_token)
                if problem is not None:
                    return self.error(request, user, 403, "Refused", f"Refused: {problem}. Nothing was changed.")
            if wanted is not None and not self.roles(user).intersection(wanted):
                groups = sorted({g for r in wanted for g in self.role_groups(r)})
                return self.error(request, user, 403, "Not allowed",
                                  f"This page needs the {' or '.join(wanted)} role (groups: {', '.join(groups)}).")
            if post:
                form = await self.form(request, user)
                if isinstance(form, Response):
                    return form
                if header_token is None:
                    value = form.get(security.CSRF_FIELD)
                    problem = security.token_problem(user.csrf, value if isinstance(value, str) else None)
                    if problem is not None:
                        return self.error(request, user, 403, "Refused", f"Refused: {problem}. Nothing was changed.")
                request.state.form = form
            try:
                return await handler(request, user)
            except GatewayError as exc:  # the ledger or a store could not record or answer: nothing done
                return self.error(request, user, exc.http_status if exc.http_status >= 400 else 503,
                                  "Not done", exc.message)

        return endpoint

    async def form(self, request: Request, user: User) -> FormData | Response:
        """The posted form: `application/x-www-form-urlencoded` (what every console form sends) of at most
        `security.FORM_LIMIT` bytes, read as it arrives and refused (413) as soon as it is longer, whether
        its length was declared or it comes chunked. Any other type is refused (415) unread: a multipart
        body would be parsed into temporary files. An empty body of no type is an empty form."""
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        declared = request.headers.get("content-length")
        length = None if declared is None else parse_uint(declared.strip())
        if declared is not None and length is None:
            return self.error(request, user, 400, "Bad request", "The request's Content-Length is not a number.")
        chunked = "transfer-encoding" in request.headers
        if media != security.FORM_TYPE and (length or chunked):
            return self.error(request, user, 415, "Not a console form",
                              "The console takes forms as application/x-www-form-urlencoded only. Nothing was changed.")
        too_large = f"A console form is at most {security.FORM_LIMIT // 1024} KiB. Nothing was changed."
        if length is not None and length > security.FORM_LIMIT:
            return self.error(request, user, 413, "Too large", too_large)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > security.FORM_LIMIT:
                    return self.error(request, user, 413, "Too large", too_large)
        except ClientDisconnect:
            return self.error(request, user, 400, "Bad request", "The form did not arrive whole.")
        request.state.body_read = True
        try:
            fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=FORM_FIELDS,
                               encoding="utf-8", errors="replace")
        except ValueError:
            return self.error(request, user, 400, "Bad request", f"A console form has at most {FORM_FIELDS} fields.")
        return FormData(cast("list[tuple[str, str | UploadFile]]", fields))

    async def _offboarded(self, request: Request, user: User) -> Response | None:
        """A page refusing `user` if the current config disables them (`identity.disabled_subjects`), else None.
        The session cookie was sealed at sign-in; off-boarding must reach a console session on its next
        request, as it reaches the next bearer token, not when the cookie expires."""
        try:
            self.ctx.identity().check_disabled(user.principal())
            return None
        except AuthError as exc:
            reason = exc.message
        try:
            await self.record("console.refused", {"principal": user.summary(), "reason": reason,
                                                  "remote": request.client.host if request.client else None})
        except GatewayError as failed:
            log.error("a disabled identity's console request could not be recorded: %s", failed.message)
        resp = self.error(request, None, 401, "Signed out", f"Refused: {reason}. Your console session has ended.")
        resp.delete_cookie(security.SESSION_COOKIE, path="/ui")
        return resp

    # ── login ────────────────────────────────────────────────────────────────
    @staticmethod
    def _next(value: str | None) -> str:
        if value and value.startswith("/ui/") and "//" not in value and "\\" not in value and len(value) < 300:
            return value
        return "/ui/"

    async def login(self, request: Request) -> Response:
        if not self.ctx.host_ok(request.headers.get("host")):
            return PlainTextResponse("Forbidden: Host header not allowed", status_code=403, headers=security.HEADERS)
        nxt = self._next(request.query_params.get("next"))
        if self.user(request) is not None:
            return RedirectResponse(nxt, status_code=303, headers=security.HEADERS)
        state, nonce = security.new_token(), security.new_token()
        verifier, challenge = security.pkce_pair()
        try:
            url = await self.oidc.authorize_url(self.base_url(request) + "/ui/callback", state, nonce, challenge)
        except LoginError as exc:
            return self.error(request, None, 502, "Sign-in unavailable", str(exc))
        resp = RedirectResponse(url, status_code=303, headers=security.HEADERS)
        resp.set_cookie(security.LOGIN_COOKIE, security.seal(
            self.key, "login", {"state": state, "nonce": nonce, "verifier": verifier, "next": nxt},
            time.time() + security.LOGIN_TTL), **security.cookie_attributes(self.secure(request), security.LOGIN_TTL))
        return resp

    async def callback(self, request: Request) -> Response:
        if not self.ctx.host_ok(request.headers.get("host")):
            return PlainTextResponse("Forbidden: Host header not allowed", status_code=403, headers=security.HEADERS)
        pending = security.unseal(self.key, "login", request.cookies.get(security.LOGIN_COOKIE), time.time())
        remote = request.client.host if request.client else None
        q = request.query_params
        if pending is None or not q.get("state") or q.get("state") != pending.get("state"):
            return self.error(request, None, 400, "Sign-in failed",
                              "This sign-in was not started here or took too long; start again.")
        used = await self._used_up(str(pending["state"]))
        if used is not None:
            return self.error(request, None, *used)
        if q.get("error"):
            return self.error(request, None, 401, "Sign-in failed",
                              f"The identity provider said: {q.get('error', '')[:100]}")
        try:
            tokens = await self.oidc.exchange(q.get("code", ""), self.base_url(request) + "/ui/callback",
                                              pending["verifier"])
            principal = await self.ctx.identity().authenticate(tokens["access_token"])
        except LoginError as exc:
            return self.error(request, None, 502, "Sign-in failed", str(exc))
        except AuthError as exc:
            await self._refused(exc.message, remote)
            return self.error(request, None, 401, "Sign-in failed", f"The token was refused: {exc.message}")
        if principal.issuer.rstrip("/") != self.issuer:
            await self._refused("token from another issuer", remote)
            return self.error(request, None, 401, "Sign-in failed", "The token is not from the console's issuer.")
        nonce = principal.claims.get("nonce") if principal.claims else None
        if nonce is not None and nonce != pending.get("nonce"):
            await self._refused("nonce mismatch", remote)
            return self.error(request, None, 401, "Sign-in failed", "The token was issued for another sign-in.")
        now = time.time()
        expires = now + self.settings.session_ttl
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        name = model.display_name(principal)
        # the cookie keeps only the groups the console looks at: a person in hundreds of IdP groups would
        # otherwise get a cookie past what a browser keeps, which it drops without a word
        kept = sorted(principal.groups & self.console_groups())
        cookie = security.seal(self.key, "session", {
            "iss": principal.issuer, "sub": principal.subject, "kind": principal.kind,
            "groups": kept, "name": name, "csrf": security.new_token(), "exp": expires}, expires)
        if not security.cookie_fits(security.SESSION_COOKIE, cookie):
            await self._refused(f"the console session would not fit in a browser cookie ({len(cookie)} bytes, "
                                f"{len(kept)} of the identity's groups kept)", remote)
            refused = self.error(request, None, 400, "Sign-in refused",
                                 f"Your sign-in is too large for a browser to keep: even holding only the {len(kept)} "
                                 f"groups the console uses, its cookie would be {len(cookie)} bytes, and browsers "
                                 f"drop cookies past 4096 bytes without a word. You are not signed in. Ask an "
                                 f"administrator to name fewer groups in console.roles and the approvers of rules.")
            refused.delete_cookie(security.LOGIN_COOKIE, path="/ui")
            return refused
        try:
            await self.record("console.login", {"principal": principal.summary(), "remote": remote,
                                                "session_expires": model.rfc3339(expires)})
        except GatewayError as exc:  # fail closed: a sign-in the ledger cannot record does not happen
            return self.error(request, None, 503, "Sign-in not recorded",
                              f"The sign-in could not be recorded ({exc.message}); you are not signed in.")
        resp = RedirectResponse(self._next(pending.get("next")), status_code=303, headers=security.HEADERS)
        resp.set_cookie(security.SESSION_COOKIE, cookie,
                        **security.cookie_attributes(self.secure(request), max(1, int(expires - now))))
        resp.delete_cookie(security.LOGIN_COOKIE, path="/ui")
        return resp

    def console_groups(self) -> set[str]:
        """Every IdP group something the console decides looks at: its roles, the audit readers (who see
        every approval) and the approver groups of the policy in force. A session keeps these of its
        person's groups only; a group named first after the sign-in counts from the next sign-in."""
        s = self.ctx.settings()
        r = self.settings.roles
        groups = {*r.approver, *r.auditor, *r.admin, *s.audit.reader_groups}
        for rule in s.policies:
            if rule.approvers is not None:
                groups.update(rule.approvers.groups)
        return groups

    async def _refused(self, reason: str, remote: str | None) -> None:
        try:
            await self.record("console.login_refused", {"reason": reason[:300], "remote": remote})
        except GatewayError:
            pass  # refused either way

    async def _used_up(self, state: str) -> tuple[int, str, str] | None:
        """A sign-in attempt (its sealed login cookie and `state`) is good for one callback, on any replica.
        Before, a copy of the cookie could be replayed for ten minutes: each replay with any `code` sent the
        identity provider a token request, and with an IdP that takes a code twice it signed in again."""
        store = self.ctx.signouts
        if store is None:
            return None
        attempt = hashlib.sha256(b"ledgergate/console-login/" + state.encode()).hexdigest()
        now = time.time()
        try:
            first = await asyncio.to_thread(store.consume, attempt, now + security.LOGIN_TTL, now)
        except Exception as exc:  # noqa: BLE001 - fail closed: a use that cannot be stored is not allowed
            log.error("console: a sign-in attempt could not be stored: %s", type(exc).__name__)
            return 503, "Sign-in unavailable", "The sign-in could not be recorded as used; start again."
        if not first:
            return 400, "Sign-in failed", "This sign-in was already used; start again."
        return None

    @staticmethod
    def _session_id(user: User) -> str:
        """The session's id in the sign-out store: a digest of its random token, never the token."""
        return hashlib.sha256(b"ledgergate/console-session/" + user.csrf.encode()).hexdigest()

    async def _signed_out(self, user: User) -> bool:
        store = self.ctx.signouts
        return store is not None and await asyncio.to_thread(store.signed_out, self._session_id(user))

    async def logout(self, request: Request, user: User) -> Response:
        store = self.ctx.signouts
        if store is not None:  # the cookie stops working everywhere, not only in this browser
            try:
                await asyncio.to_thread(store.sign_out, self._session_id(user), user.expires, time.time())
            except Exception as exc:  # noqa: BLE001
                log.error("console: a sign-out could not be stored: %s", type(exc).__name__)
                return self.error(request, user, 503, "Not signed out",
                                  "The sign-out could not be stored; this session still works. Try again.")
        await self.record("console.logout", {"principal": user.summary()})
        resp = RedirectResponse("/ui/signed-out", status_code=303, headers=security.HEADERS)
        resp.delete_cookie(security.SESSION_COOKIE, path="/ui")
        return resp

    async def signed_out(self, request: Request) -> Response:
        return self.html(request, "signed_out.html", None)

    async def home(self, request: Request, user: User) -> Response:
        roles = self.roles(user)
        for role, page in (("approver", "approvals"), ("auditor", "sessions"), ("admin", "admin")):
            if role in roles:
                return RedirectResponse(f"/ui/{page}", status_code=303, headers=security.HEADERS)
        return self.error(request, user, 403, "No console role",
                          "You are signed in, but none of your groups holds a console role "
                          f"(approver: {', '.join(self.role_groups('approver'))}; auditor: "
                          f"{', '.join(self.role_groups('auditor'))}; admin: {', '.join(self.role_groups('admin'))}).")

    # ── approvals ────────────────────────────────────────────────────────────
    def _auditor_groups(self) -> set[str]:
        return set(self.settings.roles.auditor) | set(self.ctx.settings().audit.reader_groups)

    async def _inbox(self, user: User) -> tuple[list[dict[str, Any]], bool]:
        """What waits that this user may see, the calls they may decide first (each part newest first),
        at most INBOX_ITEMS, and whether more waits. The store is read page by page past everyone
        else's approvals (at most INBOX_SCAN of them), so none of this user's hides behind them, and an
        auditor who also approves finds their own decisions above the ones they may only watch."""
        principal = user.principal()
        auditors = self._auditor_groups()
        now = time.time()
        found, unread = await self.ctx.approvals.page(
            "pending", INBOX_SCAN, lambda a: a.expires > now and model.may_see(a, principal, auditors),
            scan=INBOX_SCAN)
        ranked = sorted(((self._blocked(a, principal), a) for a in found), key=lambda pair: pair[0] is not None)
        items = []
        for blocked, a in ranked[:INBOX_ITEMS]:
            p = a.public()
            decided = [{**d, "approver": decider_label(str(d["approver"]),
                                                        is_cli_decision(d.get("operator"), d.get("approver_key")))}
                       for d in p["decisions"]]
            items.append({**p, "decisions": decided, "blocked": blocked, "created_ts": a.created,
                          "expires_ts": a.expires, "requester_name": p["requester"].get("subject"),
                          "target": a.binding.target})
        return items, unread is not None or len(ranked) > INBOX_ITEMS

    @staticmethod
    def _blocked(a: model.Approval, principal: Principal) -> str | None:
        """Why this user may not decide `a`, in words for the page; None if they may."""
        if model.is_requester(a, principal):
            return "You requested this call, so you cannot decide it: another approver must."
        if not model.is_approver(a.approvers, principal):
            return f"You are not an approver of this rule ({model.describe_approvers(a.approvers)})."
        if any(v.approver == principal.key for v in a.decisions):
            return "You already decided this approval; one person counts once."
        return None

    async def approvals_page(self, request: Request, user: User) -> Response:
        selected = request.path_params.get("id")
        items, more = await self._inbox(user)
        gone = None
        if selected and not any(i["id"] == selected for i in items):
            gone = selected
            if model.looks_like_id(selected):
                try:
                    gone_approval = await self.ctx.approvals.get(selected)
                    if model.may_see(gone_approval, user.principal(), self._auditor_groups()):
                        gone = f"{selected} is {gone_approval.status}"
                except GatewayError:
                    pass
        return self.html(request, "approvals.html", user, items=items, more=more, selected=selected, gone=gone,
                         presets=PRESET_REASONS, now=time.time())

    async def approvals_fragment(self, request: Request, user: User) -> Response:
        items, more = await self._inbox(user)
        body = self.env.get_template("_inbox.html").render(items=items, more=more, presets=PRESET_REASONS,
                                                           csrf=user.csrf,
                                                           selected=request.query_params.get("selected"))
        return HTMLResponse(body, headers=security.HEADERS)

    async def decide(self, request: Request, user: User) -> Response:
        form: FormData = request.state.form  # read by `guard`, bounded
        approval_id = request.path_params["id"]

        def field(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        verdict = field("verdict")
        preset, free = field("preset"), field("reason")
        reason = f"{preset}: {free}" if preset and free else (preset or free)
        back = f"/ui/approvals/{approval_id}" if model.looks_like_id(approval_id) else "/ui/approvals"
        if verdict not in model.VERDICTS:
            return self.redirect(back, request, {"error": "Choose approve or deny."})
        try:
            approval = await self.ctx.approvals.decide(approval_id, user.principal(), verdict, reason,
                                                       shown_digest=field("preview_digest") or None)
        except GatewayError as exc:
            return self.redirect(back, request, {"error": exc.message})
        done = "approved" if verdict == "approve" else "denied"
        return self.redirect("/ui/approvals", request,
                             {"ok": f"You {done} {approval.id} ({approval.binding.target or approval.binding.method}); "
                                    f"it is now {approval.status}."})

    # ── sessions ─────────────────────────────────────────────────────────────
    async def _sessions(self) -> dict[str, Session]:
        def load() -> dict[str, Session]:
            store = self.ctx.reader.open_store()
            try:
                return load_sessions(store)
            finally:
                store.close()

        try:
            return await asyncio.to_thread(load)
        except RecordProblem as exc:
            raise GatewayError(f"{exc}; run `ledgergate audit verify`") from None
        except StoreError:
            raise GatewayError("the ledger store cannot be read now") from None

    async def sessions_page(self, request: Request, user: User) -> Response:
        q = request.query_params

        def opt(name: str) -> str | None:
            value = q.get(name, "").strip()
            return value or None

        problem = None
        try:
            since, until = normalize_time(opt("since")), normalize_time(opt("until"))
        except ValueError:
            since = until = None
            problem = "Times must be ISO 8601, e.g. 2026-01-31T09:00:00Z."
        decision = opt("decision")
        if decision not in (None, "allow", "deny", "approve"):
            decision, problem = None, "Decision must be allow, deny or approve."
        flt = SessionFilter(opt("principal"), opt("server"), opt("tool"), decision, since, until)
        # newest first, then by id, so a cursor names one place in the list whatever arrives meanwhile
        found = sorted(select(await self._sessions(), flt), key=lambda s: (s.start, s.id), reverse=True)
        total = len(found)
        after = None
        if opt("cursor") is not None:
            after = _session_cursor(opt("cursor") or "")
            if after is None:
                problem = "That page link was not made by this console; showing the newest sessions."
        rest = found if after is None else [s for s in found if (s.start, s.id) < after]
        page = rest[:SESSIONS_PAGE]
        filters = {k: q.get(k, "") for k in ("principal", "server", "tool", "decision", "since", "until")}
        kept = {k: v for k, v in filters.items() if v}
        nxt = None
        if len(rest) > SESSIONS_PAGE:
            nxt = urlencode({**kept, "cursor": _session_token(page[-1])})
        first = total - len(rest) + 1
        return self.html(request, "sessions.html", user, sessions=[s.summary() for s in page], q=filters,
                         problem=problem, total=total, first=first, last=first + len(page) - 1,
                         next_query=nxt, newest_query=urlencode(kept) if after is not None else None)

    async def replay_page(self, request: Request, user: User) -> Response:
        sid = request.path_params["id"]
        session = (await self._sessions()).get(sid)
        if session is None:
            return self.error(request, user, 404, "No such session", "No record in the ledger names this session.")
        await self.record("session.replayed", {"viewer": user.summary(), "replayed_session": sid,
                                               "records": len(session.entries)})
        doc = replay(session)
        marks = await asyncio.to_thread(self._inclusion, [(e.log_id, e.index) for e in session.entries])
        for st in doc["timeline"]:
            st["included"], st["included_why"] = marks[(st["log"], st["index"])]
        return self.html(request, "replay.html", user, s=doc, checked_at=model.rfc3339(time.time()))

    def _inclusion(self, places: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[bool, str]]:
        """Each record: is it in its log's latest signed checkpoint? Checked by making and verifying its proof."""
        out: dict[tuple[str, int], tuple[bool, str]] = {}
        store = self.ctx.reader.open_store()
        try:
            notes = self.ctx.reader.witness_notes()
            provers: dict[str, LogProver] = {}
            for log_id, index in places:
                prover = provers.get(log_id)
                if prover is None:
                    prover = provers[log_id] = self.ctx.reader.prover(store, log_id, notes)
                try:
                    prover.prove(index)
                    out[(log_id, index)] = (True, (f"inclusion proof verified against the signed checkpoint of "
                                                   f"size {prover.size}"))
                except tlog_proof.ProofError as exc:
                    out[(log_id, index)] = (False, str(exc)[:300])
        except StoreError:
            for place in places:
                out.setdefault(place, (False, "the store cannot be read"))
        finally:
            store.close()
        return out

    async def export_session(self, request: Request, user: User) -> Response:
        sid = request.path_params["id"]
        if sid not in await self._sessions():
            return self.error(request, user, 404, "No such session", "No record in the ledger names this session.")
        await self.record("session.exported", {"viewer": user.summary(), "exported_session": sid})

        def build() -> bytes:
            store = self.ctx.reader.open_store()
            try:
                return dump_bundle(export_bundle(store, self.ctx.reader.verifier, Filter(session=sid)))
            finally:
                store.close()

        body = await asyncio.to_thread(build)
        return Response(body, media_type="application/json", headers={
            **security.HEADERS, "Content-Disposition": f'attachment; filename="session-{sid[:60]}.evidence.json"'})

    async def record_proof(self, request: Request, user: User) -> Response:
        log_id, index = request.path_params["log"], parse_uint(request.path_params["index"])
        if not valid_log_id(log_id) or index is None:
            return self.error(request, user, 400, "Bad request", "A record is named by its log id and index.")
        try:
            text = await asyncio.to_thread(make_proof, self.ctx.reader, log_id, index)
        except NotFound as exc:
            return self.error(request, user, 404, "No such record", str(exc))
        except tlog_proof.ProofError as exc:
            return self.error(request, user, 409, "No proof", str(exc)[:500])
        except StoreError:
            return self.error(request, user, 503, "Unavailable", "The ledger store cannot be read now.")
        await self.record("record.proof_exported", {"viewer": user.summary(), "proof_log": log_id,
                                                    "proof_index": index})
        return PlainTextResponse(text, media_type=tlog_proof.MEDIA_TYPE, headers={
            **security.HEADERS, "Content-Disposition": f'attachment; filename="{proof_filename(log_id, index)}"'})

    # ── ledger ───────────────────────────────────────────────────────────────
    async def _ledger_view(self) -> dict[str, Any]:
        ledger = self.ctx.ledger
        verifier = self.ctx.reader.verifier

        def read() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
            store = self.ctx.reader.open_store()
            try:
                logs = []
                for log_id, origin in store.logs():
                    row = store.latest_checkpoint(log_id)
                    logs.append({"log": log_id, "origin": origin, "size": store.size(log_id),
                                 "checkpoint": row.note if row else None, "checkpoint_size": row.size if row else None,
                                 "checkpoint_time": row.created if row else None})
            finally:
                store.close()
            witnessed: list[tuple[str, str]] = []
            for spec in self.ctx.reader.witnesses:
                witnessed.extend((spec, n) for n in LedgerReader(self.ctx.reader.storage, self.ctx.reader.base_dir,
                                                                 verifier, (spec,)).witness_notes())
            return logs, witnessed

        logs, witnessed = await asyncio.to_thread(read)
        for entry in logs:
            if entry["checkpoint"]:
                try:
                    open_checkpoint(entry["checkpoint"], verifier)
                    entry["signature"] = "verifies with the log key"
                except NoteError as exc:
                    entry["signature"] = f"DOES NOT VERIFY: {exc}"
        witnesses = []
        for spec in self.ctx.reader.witnesses:
            latest: Checkpoint | None = None
            problem = None
            for s, note in witnessed:
                if s != spec:
                    continue
                try:
                    cp = open_checkpoint(note, verifier)
                except NoteError as exc:
                    problem = f"a note there does not verify: {exc}"
                    continue
                if cp.origin == f"ledgergate/{ledger.log_id}" and (latest is None or cp.size > latest.size):
                    latest = cp
            if spec.startswith(("http://", "https://")):
                state, detail = "unknown", "an HTTP witness cannot be read back from here"
            elif latest is None:
                state, detail = ("disagrees", problem) if problem else ("unknown", "holds no checkpoint of this log")
            elif latest.size > ledger.size:
                state, detail = "disagrees", (f"holds size {latest.size}, larger than the log's {ledger.size} "
                                              "(records deleted?)")
            elif await ledger.root_at(latest.size) != latest.root:
                state, detail = "disagrees", f"its root at size {latest.size} is not the log's (records altered?)"
            else:
                state, detail = "agrees", f"latest witnessed size {latest.size}: same root as the log"
            if problem and state == "agrees":
                state, detail = "disagrees", problem
            witnesses.append({"name": witness_label(spec), "state": state, "detail": detail})
        return {"log_id": ledger.log_id, "size": ledger.size, "logs": logs, "witnesses": witnesses}

    async def ledger_page(self, request: Request, user: User) -> Response:
        return self.html(request, "ledger.html", user, view=await self._ledger_view(), result=None)

    async def verify_now(self, request: Request, user: User) -> Response:
        notes = [WitnessNote(f"{witness_label(spec)} note {i + 1}", n) for spec in self.ctx.reader.witnesses
                 for i, n in enumerate(LedgerReader(self.ctx.reader.storage, self.ctx.reader.base_dir,
                                                    self.ctx.reader.verifier, (spec,)).witness_notes())]

        def run() -> tuple[list[Any], float]:
            started = time.perf_counter()
            store = self.ctx.reader.open_store()
            try:
                return verify_store(store, self.ctx.reader.verifier, notes), time.perf_counter() - started
            finally:
                store.close()

        try:
            reports, elapsed = await asyncio.to_thread(run)
        except StoreError:
            return self.error(request, user, 503, "Unavailable", "The ledger store cannot be read now.")
        result = {"ok": all(r.ok for r in reports), "elapsed": f"{elapsed:.2f}", "logs": [
            {"log": r.log_id, "ok": r.ok, "size": r.size, "covered": r.covered, "checkpoints": r.checkpoints,
             "witnessed": r.witnessed, "problems": r.problems[:5]} for r in reports]}
        await self.record("ledger.verified", {"viewer": user.summary(), "ok": result["ok"],
                                              "records": sum(r.size for r in reports)})
        return self.html(request, "ledger.html", user, view=await self._ledger_view(), result=result)

    # ── admin ────────────────────────────────────────────────────────────────
    async def admin_page(self, request: Request, user: User) -> Response:
        s = self.ctx.settings()
        rules = [r.model_dump(mode="json", exclude_defaults=True) for r in s.policies]
        digest = None
        if self.ctx.config_path is not None:
            try:
                digest = hashlib.sha256(self.ctx.config_path.read_bytes()).hexdigest()
            except OSError:
                digest = None
        drift = []
        if self.ctx.fingerprints is not None:
            try:
                for r in self.ctx.fingerprints.list():
                    drift.append({"server": r.server, "tool": r.tool, "status": r.status, "by": r.accepted_by,
                                  "at": model.rfc3339(r.accepted_at), "changed": ", ".join(r.changed_fields),
                                  "fingerprint": r.accepted_fp[:16]})
            except Exception:  # noqa: BLE001 - a store that cannot be read is shown as such
                drift = []
        return self.html(request, "admin.html", user, policy_yaml=yaml.safe_dump(rules, sort_keys=False, width=100),
                         policy_version=model.policy_version(s.policies), config_sha256=digest,
                         config_path=str(self.ctx.config_path or ""), drift=drift, drift_mode=s.tool_drift.mode)


def _session_token(session: Session) -> str:
    """The cursor after `session` in the sessions list: its (start, id), opaque to the reader."""
    return base64.urlsafe_b64encode(json.dumps([session.start, session.id]).encode()).decode().rstrip("=")


def _session_cursor(token: str) -> tuple[str, str] | None:
    """The (start, id) a cursor token names, or None for anything this console did not make."""
    if not token or len(token) > 2000 or not token.isascii():
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    if not (isinstance(doc, list) and len(doc) == 2 and all(isinstance(v, str) for v in doc)):
        return None
    return doc[0], doc[1]


def console_routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """Every /ui route, or none when the config has no `console` section."""
    settings = ctx.settings().console
    if settings is None:
        return []
    c = Console(ctx, settings)
    g = c.guard
    routes: list[BaseRoute] = [
        Route("/ui", lambda r: RedirectResponse("/ui/", status_code=308, headers=security.HEADERS)),
        Route("/ui/", g(None, c.home)),
        Route("/ui/login", c.login, methods=["GET"]),
        Route("/ui/callback", c.callback, methods=["GET"]),
        Route("/ui/signed-out", c.signed_out, methods=["GET"]),
        Route("/ui/logout", g(None, c.logout, post=True), methods=["POST"]),
        Route("/ui/approvals", g(("approver", "auditor"), c.approvals_page)),
        Route("/ui/approvals/inbox", g(("approver", "auditor"), c.approvals_fragment)),
        Route("/ui/approvals/{id}", g(("approver", "auditor"), c.approvals_page)),
        Route("/ui/approvals/{id}/decide", g("approver", c.decide, post=True), methods=["POST"]),
        Route("/ui/sessions", g("auditor", c.sessions_page)),
        Route("/ui/sessions/{id}", g("auditor", c.replay_page)),
        Route("/ui/sessions/{id}/export", g("auditor", c.export_session)),
        Route("/ui/records/{log}/{index}/proof", g("auditor", c.record_proof)),
        Route("/ui/ledger", g(("auditor", "admin"), c.ledger_page)),
        Route("/ui/ledger/verify", g(("auditor", "admin"), c.verify_now, post=True), methods=["POST"]),
        Route("/ui/admin", g("admin", c.admin_page)),
        Mount("/ui/static", app=_with_headers(StaticFiles(directory=HERE / "static"), security.STATIC_HEADERS),
              name="ui-static"),
    ]
    for route in routes:  # whatever a page forgets, its response still carries the console's headers
        if isinstance(route, Route):
            route.app = _with_headers(route.app, security.HEADERS)
    # last: every other /ui path, with any method, is answered here (404, or 405 for a path served with
    # other methods) with the console's headers, not by the router's bare default
    return [*routes, Route("/ui/{rest:path}", _Unrouted(c, routes))]


def _with_headers(app: ASGIApp, headers: Mapping[str, str]) -> ASGIApp:
    """`app` with `headers` added to each response that does not set them itself; an HTTPException it
    raises (StaticFiles' 404 and 405) is answered here, with them too."""
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                have = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in extra if h[0] not in have)]}
            await send(message)

        try:
            await app(scope, receive, sending)
        except HTTPException as exc:
            if started:
                raise
            await PlainTextResponse(exc.detail, exc.status_code, headers={**(exc.headers or {}), **headers})(
                scope, receive, send)

    return wrapped


class _Unrouted:
    """The answer for a /ui path no console route serves (an ASGI app, so the route takes every method)."""

    def __init__(self, console: Console, routes: list[BaseRoute]) -> None:
        self.console = console
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        resp: Response
        if not self.console.ctx.host_ok(request.headers.get("host")):
            resp = PlainTextResponse("Forbidden: Host header not allowed", status_code=403, headers=security.HEADERS)
        else:
            allowed: set[str] = set()
            for route in self.routes:
                if isinstance(route, Route) and route.methods and route.matches(scope)[0] is Match.PARTIAL:
                    allowed |= route.methods
            if allowed:
                resp = self.console.error(request, None, 405, "Method not allowed",
                                          f"This address answers {', '.join(sorted(allowed))} only.")
                resp.headers["Allow"] = ", ".join(sorted(allowed))
            else:
                resp = self.console.error(request, None, 404, "Not found", "The console has no page here.")
        if scope.get("method") not in ("GET", "HEAD"):
            resp.headers["Connection"] = "close"  # its body, if any, is not read
        await resp(scope, receive, send)


__all__ = ["Console", "ConsoleContext", "console_routes"]
