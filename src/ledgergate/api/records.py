"""GET /api/v1/audit/records/{log}/{index}/proof: one record's offline proof (C2SP tlog-proof).

The answer is the proof text (`text/plain`, served as `<log>-<index>.tlog-proof`),
against the log's latest signed checkpoint, with the record in its `extra`
line; it was verified with the log key before it is sent. 404 an unknown log
or record; 409 a record not yet covered by a signed checkpoint, or one whose
bytes no longer match what was signed (a ProofError, named); 503 the store
cannot be read. Authentication (auditor groups) is added by the gateway.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ledgergate.api.ledger_reader import LedgerReader
from ledgergate.audit import proof
from ledgergate.numbers import parse_uint
from ledgergate.store.ledger_store import StoreError

_LOG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def valid_log_id(value: str) -> bool:
    return 0 < len(value) <= 253 and set(value) <= _LOG_CHARS


def proof_filename(log_id: str, index: int) -> str:
    return f"{log_id}-{index}.tlog-proof"


class NotFound(Exception):
    pass


def make_proof(reader: LedgerReader, log_id: str, index: int) -> str:
    """Blocking: the verified proof text, NotFound, ProofError or StoreError."""
    store = reader.open_store()
    try:
        if log_id not in dict(store.logs()):
            raise NotFound(f"no log {log_id!r} in the store")
        if index >= store.size(log_id):
            raise NotFound(f"log {log_id} has no record {index}")
        return reader.prover(store, log_id).prove(index)
    finally:
        store.close()


def record_routes(reader: LedgerReader) -> list[Route]:
    async def record_proof(request: Request) -> Response:
        log_id = request.path_params["log"]
        index = parse_uint(request.path_params["index"])
        if not valid_log_id(log_id):
            return JSONResponse({"error": "a log id is letters, digits, '.', '_' and '-'"}, status_code=400)
        if index is None:
            return JSONResponse({"error": "the index must be a non-negative integer (ASCII digits)"}, status_code=400)
        try:
            text = await asyncio.to_thread(make_proof, reader, log_id, index)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except proof.ProofError as exc:
            return JSONResponse({"error": str(exc)[:500]}, status_code=409)
        except StoreError:
            return JSONResponse({"error": "the ledger store cannot be read now"}, status_code=503)
        return PlainTextResponse(text, media_type=proof.MEDIA_TYPE, headers={
            "Content-Disposition": f'attachment; filename="{proof_filename(log_id, index)}"',
            "Cache-Control": "no-store"})

    return [Route("/api/v1/audit/records/{log}/{index}/proof", record_proof, methods=["GET"])]


__all__ = ["NotFound", "make_proof", "proof_filename", "record_routes", "valid_log_id"]
