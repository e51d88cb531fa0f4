"""One ledger record as a standalone, offline proof in the C2SP `tlog-proof` format.

c2sp.org/tlog-proof@v1 is a short text an auditor can check with nothing of
ours: the first line names the format, an optional `extra <base64>` line
carries application data, `index <n>` names the leaf, then one base64 SHA-256
hash a line (the RFC 6962 inclusion path from the leaf's sibling up to the
root's child), a blank line, and the log's signed checkpoint verbatim (with
any witness cosignature lines it carries).

The format is detached: a verifier needs the record to recompute its leaf
hash. We put the record's exact canonical JSON bytes in `extra`, so one file
proves one record on its own; the spec says extra data is not authenticated,
and it need not be: a changed record hashes to another leaf and the inclusion
check fails. What the proof says is only what is checked here:

1. the checkpoint note is signed by the given log key (signed-note, Ed25519);
2. its origin is a ledgergate log (`ledgergate/<log id>`) and the record says
   that log and `seq` = the proof's index (a record moved to another place);
3. SHA-256(0x00 ‖ record) with the path leads to the checkpoint's root hash at
   its tree size (RFC 9162 §2.1.3.2).

Pure: no I/O, no clocks.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

from ledgergate.audit import merkle
from ledgergate.audit.checkpoint import Checkpoint, NoteError, Verifier, open_note, parse_note

HEADER = "c2sp.org/tlog-proof@v1"
ORIGIN_PREFIX = "ledgergate/"
MEDIA_TYPE = "text/plain; charset=utf-8"
#: no tree this side of 2^64 leaves needs a longer path
MAX_PATH = 64
MAX_PROOF_BYTES = 1 << 20


class ProofError(ValueError):
    """A proof that is malformed or does not verify; the message says exactly which check failed."""


@dataclass(frozen=True)
class TlogProof:
    index: int
    path: tuple[bytes, ...]
    note: str  # the checkpoint as a signed note, verbatim
    extra: bytes | None = None


@dataclass(frozen=True)
class VerifiedProof:
    """What a proof that verified established."""

    log_id: str
    index: int
    tree_size: int
    root: bytes
    record: bytes
    event: str | None
    time: str | None
    key_name: str
    #: signature lines by other keys (witness cosignatures), by name: present, not checked here
    other_signers: tuple[str, ...] = field(default_factory=tuple)

    def record_json(self) -> dict[str, Any]:
        doc = orjson.loads(self.record)
        return doc if isinstance(doc, dict) else {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode(proof: TlogProof) -> str:
    """The proof text; the checkpoint note is checked to be one before it is written."""
    parse_note(proof.note)
    if proof.index < 0:
        raise ProofError("index must not be negative")
    lines = [HEADER]
    if proof.extra is not None:
        lines.append("extra " + _b64(proof.extra))
    lines.append(f"index {proof.index}")
    lines.extend(_b64(h) for h in proof.path)
    return "\n".join(lines) + "\n\n" + proof.note


def parse(text: str) -> TlogProof:
    """The parts of a proof text, or ProofError naming the line that is wrong."""
    if len(text) > MAX_PROOF_BYTES:
        raise ProofError(f"a proof is at most {MAX_PROOF_BYTES} bytes")
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ProofError("no blank line between the inclusion proof and the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ProofError(f"the first line must be {HEADER!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        try:
            extra = base64.b64decode(lines[pos][len("extra "):], validate=True)
        except binascii.Error:
            raise ProofError("the extra line is not base64") from None
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise ProofError(f"line {pos + 1} must be 'index <n>'")
    digits = lines[pos][len("index "):]
    if not digits.isascii() or not digits.isdigit() or (digits != "0" and digits.startswith("0")) or len(digits) > 20:
        raise ProofError("the index must be a decimal number without leading zeroes")
    index = int(digits)
    path: list[bytes] = []
    for n, line in enumerate(lines[pos + 1:], start=pos + 2):
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise ProofError(f"line {n}: not a base64 hash") from None
        if len(h) != merkle.HASH_SIZE:
            raise ProofError(f"line {n}: a hash must be {merkle.HASH_SIZE} bytes, not {len(h)}")
        path.append(h)
    if len(path) > MAX_PATH:
        raise ProofError(f"the inclusion path has {len(path)} hashes; at most {MAX_PATH}")
    try:
        parse_note(note)
    except NoteError as exc:
        raise ProofError(f"the checkpoint is not a signed note: {exc}") from None
    return TlogProof(index, tuple(path), note, extra)


def add_cosignatures(note: str, others: list[str]) -> str:
    """`note` with the signature lines of other copies of the same checkpoint text (witness
    cosignatures) appended, each once; copies of other texts are ignored."""
    base = parse_note(note)
    lines = note[len(base.text) + 1:].splitlines(keepends=True)
    seen = set(lines)
    for other in others:
        try:
            parsed = parse_note(other)
        except NoteError:
            continue
        if parsed.text != base.text:
            continue
        for line in other[len(parsed.text) + 1:].splitlines(keepends=True):
            if line not in seen:
                seen.add(line)
                lines.append(line)
    return base.text + "\n" + "".join(lines)


def verify(text: str, verifier: Verifier, record: bytes | None = None) -> VerifiedProof:
    """Check a proof end to end; ProofError says which check failed. `record`, if given, must be the
    record the proof is about (and may stand in for a proof without `extra`)."""
    proof = parse(text)
    if record is not None and proof.extra is not None and record != proof.extra:
        raise ProofError("the given record is not the record this proof carries")
    data = record if record is not None else proof.extra
    if data is None:
        raise ProofError("the proof carries no record (no extra line) and none was given")
    try:
        body = open_note(proof.note, verifier)
    except NoteError as exc:
        raise ProofError(f"checkpoint signature: {exc}") from None
    try:
        cp = Checkpoint.parse(body)
    except NoteError as exc:
        raise ProofError(f"checkpoint body: {exc}") from None
    if not cp.origin.startswith(ORIGIN_PREFIX) or len(cp.origin) == len(ORIGIN_PREFIX):
        raise ProofError(f"checkpoint origin {cp.origin[:80]!r} is not a ledgergate log")
    log_id = cp.origin[len(ORIGIN_PREFIX):]
    if proof.index >= cp.size:
        raise ProofError(f"index {proof.index} is not in the checkpointed tree of size {cp.size}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProofError("the record is not JSON") from None
    if not isinstance(doc, dict):
        raise ProofError("the record is not a JSON object")
    if doc.get("log") != log_id or doc.get("seq") != proof.index:
        raise ProofError(f"the record says log {str(doc.get('log'))[:80]!r} seq {str(doc.get('seq'))[:20]}, "
                         f"not log {log_id!r} seq {proof.index} (moved or swapped)")
    leaf = merkle.leaf_hash(data)
    try:
        root = merkle.root_from_inclusion_proof(proof.index, cp.size, leaf, proof.path)
    except ValueError as exc:
        raise ProofError(f"inclusion path: {exc} for index {proof.index} in a tree of size {cp.size}") from None
    if root != cp.root:
        raise ProofError(f"the record and inclusion path lead to root {_b64(root)}, not the signed root "
                         f"{_b64(cp.root)} at size {cp.size} (record or path altered)")
    others = tuple(sorted({name for name, kid, _ in parse_note(proof.note).signatures
                           if not (name == verifier.name and kid == verifier.id)}))
    event, time = doc.get("event"), doc.get("time")
    return VerifiedProof(log_id, proof.index, cp.size, cp.root, data,
                         event if isinstance(event, str) else None, time if isinstance(time, str) else None,
                         verifier.name, others)


__all__ = ["HEADER", "MEDIA_TYPE", "ProofError", "TlogProof", "VerifiedProof", "add_cosignatures", "encode",
           "parse", "verify"]
