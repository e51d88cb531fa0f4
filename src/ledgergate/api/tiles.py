"""GET /api/v1/audit/tiles/<log>/checkpoint, /tile/<L>/<N>[.p/<W>], /tile/entries/<N>[.p/<W>]:
every log in the store served read-only as C2SP tlog-tiles, so transparency-log tooling and
outside witnesses can follow it with no code of ours (audit/tiles.py has the format).

Who may read what (README "Audit API"): the checkpoint and the hash tiles carry
nothing but sizes and hashes — what every witness already receives — so they
need no token, and a witness outside the company can follow the log; the entry
bundles are the records themselves (who called what, masked arguments), so
they need the same auditor token as the rest of the audit API (`entries_guard`).

What is checked (audit/tiles.py `read_tile`): every tile, hash tile or entry
bundle, leads to the log's latest signed checkpoint (or, for the running
gateway's own log beyond it, to the writer's root tied to that checkpoint)
before it is sent; a tile that does not is refused with 503, the stored hash or
record at fault named and logged, and `Cache-Control: no-store`, so no cache
keeps the refusal for the immutable path. Another log's tiles are served up to
its latest signed checkpoint only: beyond it there is nothing to check them against.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ledgergate.api.audit import unverifiable, writer_head
from ledgergate.audit import stored, tiles
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.ledger_store import LedgerStore

if TYPE_CHECKING:
    from ledgergate.audit.ledger import Ledger

Endpoint = Callable[[Request], Awaitable[Response]]

IMMUTABLE = "public, max-age=31536000, immutable"  # §"Merkle Tree": "its caching headers SHOULD be long-lived"
IMMUTABLE_PRIVATE = "private, max-age=31536000, immutable"  # entry bundles: for the auditor's own cache only


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value admits gzip (RFC 9110 §12.5.3): named as `gzip` or `x-gzip`, in any
    case, or covered by `*`, and not with q=0."""
    named: float | None = None
    star: float | None = None
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # an unreadable weight admits nothing
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            star = q
    if named is not None:
        return named > 0
    return star is not None and star > 0
MUTABLE = "no-cache"  # §"Checkpoints": "SHOULD prevent caching beyond a few seconds"
PREFIX = "/api/v1/audit/tiles"


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def tile_routes(ledger: Ledger, entries_guard: Callable[[Endpoint], Endpoint]) -> list[Route]:
    signed = stored.SignedAnchors(ledger.signer.verifier)

    async def known(log_id: str) -> bool:
        logs = await ledger.read_store(lambda s: s.logs())
        return any(lid == log_id for lid, _ in logs)

    async def checkpoint(request: Request) -> Response:
        log_id = request.path_params["log"]
        try:
            if not await known(log_id):
                return _error("no such log", 404)
            row = await ledger.read_store(lambda s: s.latest_checkpoint(log_id))
            if row is None and log_id == ledger.log_id:
                note = await ledger.checkpoint()
            elif row is None:
                return _error("the log has no checkpoint yet", 404)
            else:
                note = row.note
        except LedgerUnavailable as exc:
            return _error(exc.message, 503)
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": MUTABLE})

    async def read(request: Request, tile: tiles.Tile) -> Response:
        log_id = request.path_params["log"]

        head = writer_head(ledger) if log_id == ledger.log_id else None

        def fetch(store: LedgerStore) -> bytes | None:
            if log_id not in {lid for lid, _ in store.logs()}:
                return None
            anchors = [a for a in (signed.latest(store, log_id), head) if a is not None]
            return tiles.read_tile(store, log_id, tile, anchors)

        try:
            data = await ledger.read_store(fetch)
        except tiles.TileNotFound as exc:
            return _error(str(exc), 404)
        except stored.Unverifiable as exc:
            return unverifiable(exc, f"log {log_id} {tile.path()}")
        except tiles.EntryTooLarge as exc:
            return _error(f"{exc}; read the record through /api/v1/audit/proof/inclusion", 500)
        except LookupError as exc:
            return _error(f"{exc}; run `ledgergate audit verify`", 500)
        except LedgerUnavailable as exc:
            return _error(exc.message, 503)
        if data is None:
            return _error("no such log", 404)
        if tile.level is not None:
            return Response(data, media_type="application/octet-stream", headers={"Cache-Control": IMMUTABLE})
        # Entry bundles are the records, read with an auditor's token: a shared cache must not keep them
        # (RFC 9111 §3.5 lets `public` override the protection an Authorization header gives)
        headers = {"Cache-Control": IMMUTABLE_PRIVATE, "Vary": "Accept-Encoding, Authorization"}
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            data = gzip.compress(data, 6)  # §"Log entries": bundles SHOULD be compressed at the HTTP layer
            headers["Content-Encoding"] = "gzip"
        return Response(data, media_type="application/octet-stream", headers=headers)

    async def hash_tile(request: Request, tile: tiles.Tile) -> Response:
        return await read(request, tile)

    async def entries(request: Request) -> Response:
        return await read(request, tiles.parse_tile_path("tile/" + request.path_params["path"]))

    guarded_entries = entries_guard(entries)

    async def tile(request: Request) -> Response:
        try:
            parsed = tiles.parse_tile_path("tile/" + request.path_params["path"])
        except tiles.TileNotFound as exc:
            return _error(str(exc), 404)
        if parsed.level is None:
            return await guarded_entries(request)
        return await hash_tile(request, parsed)

    return [
        Route(PREFIX + "/{log}/checkpoint", checkpoint, methods=["GET"]),
        Route(PREFIX + "/{log}/tile/{path:path}", tile, methods=["GET"]),
    ]
