"""The SSE parser the gateway reads upstream streams with: every line ending, any chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledgergate.wire.sse import SSEParser, encode

STREAM = (b": comment\n"
          b"event: message\nid: 1\ndata: {\"a\":1}\n\n"
          b"event: endpoint\ndata: /messages?session_id=x\n\n"
          b"data: line one\ndata: line two\nretry: 500\n\n"
          b": keep-alive\n")  # a lone CR at the very end could still be half of a CRLF; live streams go on


def _events(chunks: list[bytes]) -> list[tuple[str, str, str | None]]:
    parser = SSEParser()
    return [(e.event, e.data, e.id) for chunk in chunks for e in parser.feed(chunk)]


EXPECTED = [("message", '{"a":1}', "1"), ("endpoint", "/messages?session_id=x", "1"),
            ("message", "line one\nline two", "1")]


def test_whole_stream() -> None:
    assert _events([STREAM]) == EXPECTED


def test_crlf_and_cr_line_endings() -> None:
    assert _events([STREAM.replace(b"\n", b"\r\n")]) == EXPECTED
    assert _events([STREAM.replace(b"\n", b"\r")]) == EXPECTED


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_gives_the_same_events(cuts: list[int], ending: bytes) -> None:
    stream = STREAM.replace(b"\n", ending)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(stream[last:p])
        last = p
    chunks.append(stream[last:])
    assert _events(chunks) == EXPECTED


def test_encode_round_trips() -> None:
    assert _events([encode(b'{"x":2}', "7-3")]) == [("message", '{"x":2}', "7-3")]


@given(st.integers(min_value=0, max_value=40))
def test_a_character_split_across_chunks_is_decoded_whole(cut: int) -> None:
    stream = 'data: {"name":"Zoë Ångström €"}\n\n'.encode()
    assert _events([stream[:cut], stream[cut:]]) == [("message", '{"name":"Zoë Ångström €"}', None)]
