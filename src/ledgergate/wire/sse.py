"""Server-Sent Events: an incremental parser for upstream streams and an encoder for clients.

Implements the parts of the WHATWG EventSource stream format MCP uses: `event`,
`data` (joined with newlines), `id`, `retry`; comment lines ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledgergate.numbers import parse_uint


@dataclass(slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Feed bytes, get complete events. Handles CRLF, LF and CR line endings."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    @property
    def pending(self) -> int:
        """Bytes held for an event not yet complete."""
        return len(self._buffer) + sum(len(d) for d in self._data)

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer + chunk
        hold = b""
        if buffer.endswith(b"\r"):  # maybe the first half of a CRLF split across chunks
            buffer, hold = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer + hold
            return []
        self._buffer = buffer[end + 1:] + hold
        # One decode per chunk, one pass over its lines: this runs for every upstream answer.
        events: list[Event] = []
        data = self._data
        for line in buffer[:end].decode("utf-8", errors="replace").split("\n"):
            if not line:
                if data or self._event:
                    events.append(Event(data="\n".join(data), event=self._event or "message", id=self._id,
                                        retry=self._retry))
                    data = self._data = []
                    self._event, self._retry = "", None
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self._id = value
            elif name == "retry" and (retry := parse_uint(value)) is not None:  # ASCII digits only (WHATWG)
                self._retry = retry
        return events


def encode(data: bytes, event_id: str | None = None, event: str = "message") -> bytes:
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


PING = b": ping\n\n"
