"""GET /api/v1/audit/checkpoint, /proof/inclusion, /proof/consistency.

What an outside monitor needs to hold the ledger to its word: the latest
signed checkpoint (C2SP note text, as witnesses hold it), an RFC 9162
inclusion proof for one record, and a consistency proof between two sizes.
Hashes are base64, as in the checkpoint body. Authentication is added by the
gateway around these routes.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ledgergate.errors import LedgerUnavailable
from ledgergate.numbers import MAX_DIGITS, parse_uint

if TYPE_CHECKING:
    from ledgergate.audit.ledger import Ledger


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


class _BadQuery(Exception):
    """A query the caller got wrong; the message is ours, short, and never echoes the input."""


def _int(request: Request, name: str, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise _BadQuery(f"query parameter '{name}' is required")
        return default
    value = parse_uint(raw)
    if value is None:
        raise _BadQuery(f"query parameter '{name}' must be a non-negative integer "
                        f"(ASCII digits, at most {MAX_DIGITS})")
    return value


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


#: a proof the ledger cannot give for sizes already checked here (the log shrank under us?)
_NO_PROOF = "no proof for these tree sizes"


def audit_routes(ledger: Ledger) -> list[Route]:
    async def checkpoint(request: Request) -> Response:
        try:
            row = await ledger.latest_checkpoint()
            note = row.note if row is not None else await ledger.checkpoint()
        except LedgerUnavailable as exc:
            return _bad(exc.message, 503)
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8")

    async def inclusion(request: Request) -> Response:
        try:
            index = _int(request, "index")
            size = _int(request, "size", ledger.size)
            if size > ledger.size:
                raise _BadQuery(f"size {size} is beyond the ledger's size {ledger.size}")
            if not 0 <= index < size:
                raise _BadQuery(f"index {index} is not in a tree of size {size}")
            proof = await ledger.inclusion_proof(index, size)
            leaf = await ledger.leaf(index)
        except _BadQuery as exc:
            return _bad(str(exc))
        except ValueError:
            return _bad(_NO_PROOF)
        except LedgerUnavailable as exc:
            return _bad(exc.message, 503)
        return JSONResponse({
            "origin": ledger.origin, "index": index, "size": size,
            "leaf_hash": _b64(leaf.leaf_hash) if leaf else None,
            "record": leaf.record.decode() if leaf else None,
            "proof": [_b64(p) for p in proof],
        })

    async def consistency(request: Request) -> Response:
        try:
            old = _int(request, "from")
            new = _int(request, "to", ledger.size)
            if new > ledger.size:
                raise _BadQuery(f"'to' {new} is beyond the ledger's size {ledger.size}")
            if old > new:
                raise _BadQuery("'from' must not exceed 'to'")
            proof = await ledger.consistency_proof(old, new)
        except _BadQuery as exc:
            return _bad(str(exc))
        except ValueError:
            return _bad(_NO_PROOF)
        except LedgerUnavailable as exc:
            return _bad(exc.message, 503)
        return JSONResponse({"origin": ledger.origin, "from": old, "to": new, "proof": [_b64(p) for p in proof]})

    return [
        Route("/api/v1/audit/checkpoint", checkpoint, methods=["GET"]),
        Route("/api/v1/audit/proof/inclusion", inclusion, methods=["GET"]),
        Route("/api/v1/audit/proof/consistency", consistency, methods=["GET"]),
    ]
