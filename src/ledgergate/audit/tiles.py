"""The ledger as a C2SP tlog-tiles log (c2sp.org/tlog-tiles): tile paths, hash tiles, entry bundles.

A tile at level L, index N, width W holds the W hashes MTH(D[(N·256+i)·256^L :
(N·256+i+1)·256^L]) for i < W, concatenated (§"Merkle Tree"): level 0 holds
leaf hashes, level L ≥ 1 the stored interior hashes at tree level 8·L (a
stored level, see merkle.STRIDE). A full tile is 256 wide and has no `.p/`
suffix; a partial one is 1..255 wide. An entry bundle holds the records of
the level-0 tile with the same N and W, each as a big-endian uint16 length
and the exact bytes that were hashed (§"Log entries").

Parsing is strict (one spelling per tile, as §"Merkle Tree" fixes it), so a
URL names one immutable resource. Reading goes through the store, bounded by
the largest anchor (the log's latest signed checkpoint, or for the running
gateway's own log its writer's root): a tile is served once every hash in it
is durable and vouched for.

What is checked before a tile leaves (`read_tile`): a hash tile's hashes, or
the leaf hashes recomputed from an entry bundle's records, are folded with the
stored left edge into the root of the prefix they end, and that root is tied
by a consistency proof to the anchor (stored.check_hash_run): about log2(n)
more hashes read in the same round trip and a fold of at most 256, so a
witness following the log pays under a millisecond more per tile, and no
tile is served that does not lead to the signed root. A tile that fails
raises stored.Unverifiable, naming the stored hash or record at fault.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledgergate.audit import merkle, stored
from ledgergate.store.ledger_store import LedgerStore

HEIGHT = 8
WIDTH = 1 << HEIGHT  # 256 hashes, 8,192 bytes
MAX_ENTRY = 0xFFFF  # an entry's length is a uint16

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"x[0-9]{3}")
_LAST = re.compile(r"[0-9]{3}")


class TileNotFound(Exception):
    """No such tile (malformed path, or its hashes are not all in the log yet); the text says which."""


class EntryTooLarge(Exception):
    """A record longer than an entry bundle can carry (65,535 bytes)."""


@dataclass(frozen=True)
class Tile:
    level: int | None  # None: the entry bundle ("entries")
    index: int
    width: int

    def path(self) -> str:
        return tile_path(self.level, self.index, self.width)

    @property
    def tree_level(self) -> int:
        return HEIGHT * (self.level or 0)

    def needs(self) -> int:
        """The log size from which every hash (or entry) in this tile exists."""
        return (self.index * WIDTH + self.width) << self.tree_level


def encode_index(n: int) -> str:
    """N as zero-padded 3-digit path elements, all but the last prefixed with "x" (1234067 → x001/x234/067)."""
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int | None, index: int, width: int) -> str:
    lv = "entries" if level is None else str(level)
    suffix = "" if width == WIDTH else f".p/{width}"
    return f"tile/{lv}/{encode_index(index)}{suffix}"


def parse_tile_path(path: str) -> Tile:
    """`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`, spelled exactly as the spec fixes it."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileNotFound("not a tile path")
    if parts[1] == "entries":
        level = None
    elif _LEVEL.fullmatch(parts[1]) and int(parts[1]) <= 63:
        level = int(parts[1])
    else:
        raise TileNotFound("tile level must be 0..63 or 'entries'")
    rest = parts[2:]
    width = WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _WIDTH.fullmatch(rest[-1]) or int(rest[-1]) >= WIDTH:
            raise TileNotFound("partial tile width must be 1..255")
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2][:-2]]
    if not rest or not _LAST.fullmatch(rest[-1]) or not all(_GROUP.fullmatch(g) for g in rest[:-1]):
        raise TileNotFound("tile index must be 3-digit path elements, all but the last starting with 'x'")
    index = 0
    for g in rest:
        index = index * 1000 + int(g.lstrip("x"))
    tile = Tile(level, index, width)
    if tile.path() != path:  # e.g. x000/001: leading zero groups
        raise TileNotFound("tile index is not in its canonical form")
    return tile


def tiles_for(size: int) -> list[Tile]:
    """Every hash tile a log of `size` records is represented by, level by level (§"Partial Tiles")."""
    out: list[Tile] = []
    level = 0
    while size >> (HEIGHT * level):
        n = size >> (HEIGHT * level)
        out.extend(Tile(level, i, WIDTH) for i in range(n // WIDTH))
        if n % WIDTH:
            out.append(Tile(level, n // WIDTH, n % WIDTH))
        level += 1
    return out


def entry_bundle(records: list[bytes]) -> bytes:
    out = bytearray()
    for i, rec in enumerate(records):
        if len(rec) > MAX_ENTRY:
            raise EntryTooLarge(f"entry {i} of the bundle is {len(rec)} bytes; a tlog-tiles entry holds at most "
                                f"{MAX_ENTRY}")
        out += len(rec).to_bytes(2, "big")
        out += rec
    return bytes(out)


def read_tile(store: LedgerStore, log_id: str, tile: Tile, anchors: Sequence[stored.Anchor]) -> bytes:
    """A hash tile's bytes, or an entry bundle's, checked against `anchors` (see the module text).

    TileNotFound beyond the largest anchor; stored.Unverifiable when the tile does not lead to it;
    LookupError when rows it needs are gone."""
    size = max((a.size for a in anchors), default=0)
    if tile.needs() > size:
        if not anchors:
            raise TileNotFound(f"{tile.path()} is beyond the log: it has no signed checkpoint yet")
        whose = "records" if any(not a.signed for a in anchors) else "records covered by a signed checkpoint"
        raise TileNotFound(f"{tile.path()} is beyond the log's {size} {whose}")
    start = tile.index * WIDTH
    end = start + tile.width
    if tile.level is None:
        rows = store.rows(log_id, start, end)
        if [r.seq for r in rows] != list(range(start, end)):
            gone = next(s for s in range(start, end) if s not in {r.seq for r in rows})
            raise stored.Unverifiable(f"log {log_id}: record {gone} is missing from the store (deleted); "
                                      "run `ledgergate audit verify`")
        stored.check_hash_run(store, log_id, 0, start, [merkle.leaf_hash(r.record) for r in rows], anchors,
                              f"{tile.path()} (recomputed from its records)")
        return entry_bundle([r.record for r in rows])
    got = store.node_range(log_id, tile.tree_level, start, end)
    if [i for i, _ in got] != list(range(start, end)):
        have = {i for i, _ in got}
        gone = next(i for i in range(start, end) if i not in have)
        what = (f"record {gone} is missing from the store (deleted)" if tile.level == 0 else
                f"the store's stored hash at level {tile.tree_level} index {gone} is missing (deleted)")
        raise stored.Unverifiable(f"log {log_id}: {what}; run `ledgergate audit verify`")
    stored.check_hash_run(store, log_id, tile.tree_level, start, [h for _, h in got], anchors, tile.path())
    return b"".join(h for _, h in got)
