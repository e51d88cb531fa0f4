"""REST for approvals: list, show, approve, deny.

    GET  /api/v1/approvals?status=pending&limit=50[&cursor=NEXT]
    GET  /api/v1/approvals/{id}
    POST /api/v1/approvals/{id}/approve   {"reason": "...", "preview_digest": "..."}
    POST /api/v1/approvals/{id}/deny      {"reason": "..."}

Every route authenticates with the function it is given (the gateway's own
bearer-token rules) before anything else. An approval is visible to its
approvers, to auditors, and to its requester; deciding follows the model's
rules (403 for the requester and for anyone who is not an approver, 404
unknown, 409 no longer pending or already decided by you, 400 a bad body, 503
nothing recorded). `preview_digest`, if sent, must match the arguments the
approval holds, so an approver decides about exactly what they were shown.
Error bodies are `{"error": ...}` in our words, bounded.

A listing answers `{"approvals": [...], "next": TOKEN | null}`, newest first, only what the caller may
see; `next` continues it (pass it as `cursor`). A page may hold fewer than `limit` with `next` set:
each request reads a bounded number of stored approvals, whoever asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledgergate.approvals import model
from ledgergate.approvals.service import ApprovalService
from ledgergate.errors import AuthError, GatewayError
from ledgergate.numbers import parse_uint
from ledgergate.principal import Principal

Authenticate = Callable[[Request], Awaitable[Principal]]
MAX_BODY = 16 * 1024
_MAX_ERROR = 500


def _error(message: str, code: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message[:_MAX_ERROR], **extra}, status_code=code)


def _from(exc: GatewayError) -> JSONResponse:
    extra = {"status": exc.data["status"]} if isinstance(exc, model.NotPending) and exc.data else {}
    return _error(exc.message, exc.http_status if exc.http_status >= 400 else 500, **extra)


Forbidden = Callable[[Request, Principal, str, str], Awaitable[None]]


def approval_routes(service: ApprovalService, authenticate: Authenticate, *,
                    auditor_groups: Iterable[str] = ("auditors",),
                    unauthorized: Callable[[Request, AuthError], Response] | None = None,
                    forbidden: Forbidden | None = None) -> list[Route]:
    """Starlette routes; `unauthorized` builds the 401 (e.g. with the gateway's WWW-Authenticate);
    `forbidden(request, principal, approval id, why)` records a 403, which an investigator looks for."""
    auditors = frozenset(auditor_groups)

    async def refused(request: Request, principal: Principal, approval_id: str, message: str) -> Response:
        if forbidden is not None:
            await forbidden(request, principal, approval_id, message)
        return _error(message, 403)

    async def who(request: Request) -> Principal | Response:
        try:
            return await authenticate(request)
        except AuthError as exc:
            if unauthorized is not None:
                return unauthorized(request, exc)
            return _error(f"Unauthorized: {exc.message}", 401)
        except GatewayError as exc:  # a foreign Host, or a refusal the ledger could not record
            return _from(exc)

    async def list_approvals(request: Request) -> Response:
        principal = await who(request)
        if isinstance(principal, Response):
            return principal
        status = request.query_params.get("status")
        limit = parse_uint(request.query_params.get("limit", "100"), 4)
        if limit is None or not 1 <= limit <= 1000:
            return _error("limit must be an integer from 1 to 1000", 400)
        if status is not None and status not in model.STATUSES:
            return _error(f"status must be one of {', '.join(model.STATUSES)}", 400)
        cursor = request.query_params.get("cursor")
        try:
            after = None if cursor is None else model.Cursor.parse(cursor)
            found, more = await service.page(status, limit, lambda a: model.may_see(a, principal, auditors), after)
        except GatewayError as exc:
            return _from(exc)
        return JSONResponse({"approvals": [a.public() for a in found],
                             "next": None if more is None else more.token()})

    async def show(request: Request) -> Response:
        principal = await who(request)
        if isinstance(principal, Response):
            return principal
        try:
            approval = await service.get(request.path_params["id"])
        except GatewayError as exc:
            return _from(exc)
        if not model.may_see(approval, principal, auditors):
            return await refused(request, principal, approval.id, f"you may not see approval {approval.id}: you are "
                                 "neither its requester, one of its approvers nor an auditor")
        return JSONResponse(approval.public())

    def decider(verdict: str) -> Callable[[Request], Awaitable[Response]]:
        async def decide(request: Request) -> Response:
            principal = await who(request)
            if isinstance(principal, Response):
                return principal
            body = await _body(request)
            if isinstance(body, Response):
                return body
            shown = body.get("preview_digest")
            if shown is not None and not isinstance(shown, str):
                return _error("preview_digest must be a string", 400)
            try:
                approval = await service.decide(request.path_params["id"], principal, verdict, body.get("reason"),
                                                shown_digest=shown)
            except model.NotAllowed as exc:
                return await refused(request, principal, request.path_params["id"][:60], exc.message)
            except GatewayError as exc:
                return _from(exc)
            return JSONResponse(approval.public())
        return decide

    return [
        Route("/api/v1/approvals", list_approvals, methods=["GET"]),
        Route("/api/v1/approvals/{id}", show, methods=["GET"]),
        Route("/api/v1/approvals/{id}/approve", decider("approve"), methods=["POST"]),
        Route("/api/v1/approvals/{id}/deny", decider("deny"), methods=["POST"]),
    ]


async def _body(request: Request) -> dict[str, Any] | Response:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return _error(f"the body must be JSON of at most {MAX_BODY} bytes", 400)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return _error(f"the body must be JSON of at most {MAX_BODY} bytes", 400)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error('the body must be a JSON object such as {"reason": "..."}', 400)
    if not isinstance(body, dict):
        return _error('the body must be a JSON object such as {"reason": "..."}', 400)
    return body


__all__ = ["Authenticate", "MAX_BODY", "approval_routes"]
