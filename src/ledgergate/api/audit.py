"""GET /api/v1/audit/checkpoint, /proof/inclusion, /proof/consistency.

What an outside monitor needs to hold the ledger to its word: the latest
signed checkpoint (C2SP note text, as witnesses hold it), an RFC 9162
inclusion proof for one record, and a consistency proof between two sizes.
Hashes are base64, as in the checkpoint body. Authentication is added by the
gateway around these routes.

What is checked before a proof is sent: proofs are read from the stored
interior hashes (O(log n) reads), which are rows and could have been changed,
so every proof is checked against what it claims first (audit/stored.py,
"evidence checked"). An inclusion proof must lead from the leaf hash
recomputed from the record's bytes to a root that is tied, by a consistency
proof read in the same round trip, to the latest signed checkpoint, or for a
size beyond it to the writer's current root, itself tied to that checkpoint;
a consistency proof must lead from the stored root at `from` to the stored
root at `to`, tied the same way. That costs about log2(n) more hashes and one
Ed25519 verification per new checkpoint. A proof that fails is not sent: 503
with the cause found (the stored hash or record at fault, "run `ledgergate
audit verify`") and an error logged. 503, not 500: the gateway is sound but
its store's content is not, an operator must repair it, and a witness should
retry later rather than take the answer as final.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ledgergate.audit import merkle, stored
from ledgergate.errors import LedgerUnavailable
from ledgergate.numbers import MAX_DIGITS, parse_uint
from ledgergate.store.ledger_store import LedgerStore

if TYPE_CHECKING:
    from ledgergate.audit.ledger import Ledger

log = logging.getLogger("ledgergate.api.audit")


def writer_head(ledger: Ledger) -> stored.Anchor:
    """The running writer's (size, root), read as one pair: the size is read on both sides of the root,
    and the log only grows, so equal sizes mean the root is the one at that size."""
    while True:
        size = ledger.size
        root = ledger.root()
        if ledger.size == size:
            return stored.Anchor(size, root, signed=False)


def unverifiable(exc: stored.Unverifiable, where: str) -> JSONResponse:
    """503 for evidence that did not pass its check, with the cause, logged; never cached."""
    log.error("%s refused: %s", where, exc)
    return JSONResponse({"error": str(exc)}, status_code=503, headers={"Cache-Control": "no-store"})


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
    signed = stored.SignedAnchors(ledger.signer.verifier)

    def anchors(store: LedgerStore, head: stored.Anchor) -> list[stored.Anchor]:
        latest = signed.latest(store, ledger.log_id)
        return [head] if latest is None else [latest, head]

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
            head = writer_head(ledger)
            proof, record = await ledger.read_store(
                lambda s: stored.checked_inclusion(s, ledger.log_id, index, size, anchors(s, head)))
        except _BadQuery as exc:
            return _bad(str(exc))
        except stored.Unverifiable as exc:
            return unverifiable(exc, f"inclusion proof of record {index} at size {size}")
        except (ValueError, stored.NotCovered):
            return _bad(_NO_PROOF)
        except LedgerUnavailable as exc:
            return _bad(exc.message, 503)
        return JSONResponse({
            "origin": ledger.origin, "index": index, "size": size,
            "leaf_hash": _b64(merkle.leaf_hash(record)),
            "record": record.decode(),
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
            head = writer_head(ledger)
            proof = await ledger.read_store(
                lambda s: stored.checked_consistency(s, ledger.log_id, old, new, anchors(s, head)))
        except _BadQuery as exc:
            return _bad(str(exc))
        except stored.Unverifiable as exc:
            return unverifiable(exc, f"consistency proof {old} -> {new}")
        except (ValueError, stored.NotCovered):
            return _bad(_NO_PROOF)
        except LedgerUnavailable as exc:
            return _bad(exc.message, 503)
        return JSONResponse({"origin": ledger.origin, "from": old, "to": new, "proof": [_b64(p) for p in proof]})

    return [
        Route("/api/v1/audit/checkpoint", checkpoint, methods=["GET"]),
        Route("/api/v1/audit/proof/inclusion", inclusion, methods=["GET"]),
        Route("/api/v1/audit/proof/consistency", consistency, methods=["GET"]),
    ]
