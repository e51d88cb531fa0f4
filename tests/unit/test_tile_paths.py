"""C2SP tlog-tiles paths and entry bundles (c2sp.org/tlog-tiles), against the spec's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledgergate.audit import tiles


def test_index_encoding_is_the_specs_example() -> None:
    assert tiles.encode_index(1234067) == "x001/x234/067"
    assert tiles.encode_index(0) == "000" and tiles.encode_index(999) == "999" and tiles.encode_index(1000) == "x001/000"
    assert tiles.tile_path(0, 1234067, 256) == "tile/0/x001/x234/067"
    assert tiles.tile_path(2, 5, 17) == "tile/2/005.p/17"
    assert tiles.tile_path(None, 1234067, 8) == "tile/entries/x001/x234/067.p/8"


@given(st.one_of(st.none(), st.integers(0, 63)), st.integers(0, 10**12), st.integers(1, 256))
def test_paths_round_trip(level: int | None, index: int, width: int) -> None:
    tile = tiles.Tile(level, index, width)
    assert tiles.parse_tile_path(tile.path()) == tile


@pytest.mark.parametrize("path", [
    "tile/0/1", "tile/0/01", "tile/0/x000/001", "tile/00/000", "tile/64/000", "tile/-1/000", "tile/0/000.p/256",
    "tile/0/000.p/0", "tile/0/000.p/010", "tile/0/000.p/", "tile/0/x001", "tile/0/001/x002", "tile/data/000",
    "tile/8/0/000", "tile/0/000/", "tile/0/0001", "tile/0/x1/000", "tiles/0/000", "tile/entries/000.p/300",
    "tile/0/ 000", "tile/0/٠٠٠",
])
def test_every_other_spelling_is_refused(path: str) -> None:
    with pytest.raises(tiles.TileNotFound):
        tiles.parse_tile_path(path)


def test_tiles_for_size_70000_are_the_specs_example() -> None:
    got = tiles.tiles_for(70000)
    level0 = [t for t in got if t.level == 0]
    assert len([t for t in level0 if t.width == 256]) == 273 and [t.width for t in level0 if t.width < 256] == [112]
    assert [(t.level, t.index, t.width) for t in got if t.level] == [(1, 0, 256), (1, 1, 17), (2, 0, 1)]
    assert [(t.level, t.width) for t in tiles.tiles_for(256)] == [(0, 256), (1, 1)]


def test_entry_bundle_is_uint16_length_prefixed() -> None:
    assert tiles.entry_bundle([b"ab", b"", b"x" * 300]) == b"\x00\x02ab\x00\x00\x01\x2c" + b"x" * 300
    assert len(tiles.entry_bundle([b"y" * 65535])) == 65537
    with pytest.raises(tiles.EntryTooLarge, match="65536 bytes"):
        tiles.entry_bundle([b"ok", b"z" * 65536])
