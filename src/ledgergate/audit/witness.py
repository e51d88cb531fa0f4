"""Witness sinks: copies of every signed checkpoint held outside the database.

Once a witness holds checkpoint (n, root), rewriting or truncating the first n
records in the database contradicts it, and `verify` says so. Two sinks:

- `file://PATH`: notes appended one after another (O_APPEND + fsync). Relative
  paths are relative to the config file's folder. `verify` reads it back.
- `http(s)://URL`: the note POSTed as text/plain; any 2xx is success.

A witness failure is logged, never fatal for appends: the records are still
durable; only the outside copy is late.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import httpx

from ledgergate.audit.checkpoint import Checkpoint, NoteError, parse_note, split_notes
from ledgergate.identity.redact import redact_text, redact_url

log = logging.getLogger("ledgergate.audit.witness")


def _is_checkpoint_note(note: str) -> bool:
    try:
        Checkpoint.parse(parse_note(note).text)
    except NoteError:
        return False
    return True


class FileWitness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"file://{path}"

    def _append(self, note: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, note.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    async def push(self, note: str) -> None:
        await asyncio.to_thread(self._append, note)

    def read_notes(self) -> list[str]:
        """The notes held, for proofs and pages that compare against them: a file not there yet, or that
        cannot be read, holds none (logged); bytes that are not text are replaced and their note does
        not parse. `audit verify` asks `problem()` instead, which is strict."""
        try:
            return split_notes(self.path.read_bytes().decode("utf-8", "replace"))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("witness %s cannot be read: %s", self.name, exc.strerror or exc)
            return []

    def problem(self) -> str | None:
        """Why this witness cannot vouch for anything, or None. A configured witness that is missing,
        unreadable, not text, or holds no signed checkpoint is how a cut tail goes unseen, so
        `audit verify` reports it rather than comparing against nothing."""
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return f"{self.path} does not exist"
        except IsADirectoryError:
            return f"{self.path} is a directory, not a file of notes"
        except OSError as exc:
            return f"{self.path} cannot be read: {exc.strerror or exc}"
        except UnicodeDecodeError as exc:
            return f"{self.path} is not UTF-8 text (byte {exc.start}): not a file of signed notes"
        if not any(_is_checkpoint_note(n) for n in split_notes(text)):
            return f"{self.path} holds no signed checkpoint notes"
        return None

    async def aclose(self) -> None:
        return None


def witness_label(spec: str) -> str:
    """How a configured witness is named in text (logs, `audit verify`, the console): an http(s) witness's
    URL may carry credentials (`https://user:token@witness/…`, a signed query), which are dropped; so are
    they from a spec that is neither (a typo), which is quoted in the config error."""
    return spec if spec.startswith("file://") else redact_url(spec)


class HttpWitness:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.name = witness_label(url)
        self._client = httpx.AsyncClient(timeout=timeout)

    async def push(self, note: str) -> None:
        resp = await self._client.post(self.url, content=note.encode(),
                                       headers={"Content-Type": "text/plain; charset=utf-8"})
        resp.raise_for_status()

    def read_notes(self) -> list[str] | None:
        return None  # an HTTP witness is write-only from here

    async def aclose(self) -> None:
        await self._client.aclose()


Witness = FileWitness | HttpWitness


def file_witness_path(spec: str, base_dir: Path) -> Path | None:
    if not spec.startswith("file://"):
        return None
    path = Path(spec[len("file://"):])
    return path if path.is_absolute() else base_dir / path


def make_witnesses(specs: list[str], base_dir: Path) -> list[Witness]:
    out: list[Witness] = []
    for spec in specs:
        path = file_witness_path(spec, base_dir)
        if path is not None:
            out.append(FileWitness(path))
        elif spec.startswith(("http://", "https://")):
            out.append(HttpWitness(spec))
        else:
            raise ValueError(f"witness {witness_label(spec)!r} must be file://PATH or http(s)://URL")
    return out


async def push_all(witnesses: list[Witness], note: str) -> list[str]:
    """Push to every witness concurrently; return the names that failed (already logged)."""
    results = await asyncio.gather(*(w.push(note) for w in witnesses), return_exceptions=True)
    failed = []
    for w, r in zip(witnesses, results, strict=True):
        if isinstance(r, BaseException):
            # an HTTP error's text quotes the URL it was for, credentials and all
            detail = redact_text(f"{type(r).__name__}: {r}", getattr(w, "url", None))[:200]
            log.warning("witness %s did not take the checkpoint: %s", w.name, detail)
            failed.append(w.name)
    return failed
