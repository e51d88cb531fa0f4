"""Signed checkpoints: C2SP tlog-checkpoint bodies inside C2SP signed-notes (Ed25519).

Both formats are the ones Go's golang.org/x/mod/sumdb/note and the transparency
ecosystem (witnesses, tlog tools) read, so an auditor can check our
checkpoints with no code of ours:

- tlog-checkpoint (c2sp.org/tlog-checkpoint): origin line, tree size in
  decimal, base64 root hash, then optional extension lines, each ending in "\\n".
- signed-note (c2sp.org/signed-note): the text, a blank line, then lines
  "— <key name> <base64(key ID ‖ signature)>\\n". For Ed25519 the key ID is the
  first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key), the signature is
  over the text including its final newline.
- key strings as Go's note package writes them: verifier
  "<name>+<8 hex key ID>+<base64(0x01 ‖ public key)>", signer
  "PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 ‖ seed)>".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
_DASH = "\u2014 "  # signed-note §"Signatures": em dash, space
MAX_SIGNATURES = 100  # Go's note.Open cap


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed or does not verify."""


def _check_name(name: str) -> str:
    # signed-note §"Key names": non-empty, no Unicode spaces, no "+".
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, public: bytes) -> bytes:
    """signed-note §"Signature types" Ed25519: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    name: str
    id: bytes
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse "<name>+<hex id>+<base64(0x01 ‖ key)>" and check the id matches the key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must be <name>+<key id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_name(name)
        try:
            kid = bytes.fromhex(hex_id)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise NoteError(f"verifier key is not well-formed: {exc}") from None
        if len(kid) != 4 or len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 (type 0x01) key")
        if key_id(name, raw[1:]) != kid:
            raise NoteError("verifier key id does not match its name and key")
        return cls(name, kid, raw[1:])

    def __str__(self) -> str:
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
            return True
        except InvalidSignature:
            return False


@dataclass(frozen=True)
class Signer:
    name: str
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> Signer:
        key = Ed25519PrivateKey.generate()
        from cryptography.hazmat.primitives.serialization import (
            NoEncryption,
            PrivateFormat,
        )

        return cls(_check_name(name), key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @classmethod
    def parse(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise NoteError("signing key must be PRIVATE+KEY+<name>+<key id>+<base64 key>")
        _, _, name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise NoteError("signing key is not well-formed base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signing key is not an Ed25519 (type 0x01) key")
        signer = cls(_check_name(name), raw[1:])
        if signer.verifier.id.hex() != hex_id.lower():
            raise NoteError("signing key id does not match its key")
        return signer

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def verifier(self) -> Verifier:
        pub = _raw_public(self._key().public_key())
        return Verifier(self.name, key_id(self.name, pub), pub)

    def encode(self) -> str:
        """Go note.NewSigner's format. Secret: never log it."""
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+" + base64.b64encode(
            bytes([ALG_ED25519]) + self.seed).decode()

    def sign(self, text: str) -> str:
        """A signed note of `text` with one signature line (signed-note §"Format")."""
        _check_text(text)
        sig = self._key().sign(text.encode())
        return text + "\n" + _DASH + self.name + " " + base64.b64encode(self.verifier.id + sig).decode() + "\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end in a newline and contain no blank line")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


@dataclass(frozen=True)
class Note:
    text: str
    signatures: list[tuple[str, bytes, bytes]]  # (key name, key id, signature)


def parse_note(note: str) -> Note:
    """Split a signed note into text and signature lines, rejecting anything malformed."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("note contains control characters")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("note has no signature block")
    text, block = note[:cut + 1], note[cut + 2:]
    sigs: list[tuple[str, bytes, bytes]] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        name, _, b64 = line[len(_DASH):].partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise NoteError("signature is not base64") from None
        if not name or len(raw) < 5 or " " in b64:
            raise NoteError("malformed signature line")
        sigs.append((name, raw[:4], raw[4:]))
    if not sigs or len(sigs) > MAX_SIGNATURES:
        raise NoteError("note must carry between 1 and 100 signatures")
    return Note(text, sigs)


def open_note(note: str, verifier: Verifier) -> str:
    """The text of `note` if `verifier` signed it; NoteError naming why not."""
    parsed = parse_note(note)
    for name, kid, sig in parsed.signatures:
        if name == verifier.name and kid == verifier.id:
            if verifier.verify(parsed.text.encode(), sig):
                return parsed.text
            raise NoteError(f"signature by {verifier.name}+{verifier.id.hex()} does not verify")
    names = ", ".join(f"{n}+{k.hex()}" for n, k, _ in parsed.signatures)
    raise NoteError(f"note is not signed by {verifier.name}+{verifier.id.hex()} (signed by {names})")


@dataclass(frozen=True)
class Checkpoint:
    """c2sp.org/tlog-checkpoint body."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("checkpoint must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not lines[0]:
            raise NoteError("checkpoint needs origin, size and root hash lines")
        origin, size_s, root_s, *ext = lines
        if not (size_s.isascii() and size_s.isdigit()) or (size_s != "0" and size_s.startswith("0")):
            raise NoteError(f"checkpoint size {size_s!r} is not a decimal number")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error:
            raise NoteError("checkpoint root hash is not base64") from None
        if len(root) != 32 or any(not e for e in ext):
            raise NoteError("checkpoint root must be 32 bytes; extension lines must be non-empty")
        return cls(origin, int(size_s), root, tuple(ext))


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    return Checkpoint.parse(open_note(note, verifier))


def split_notes(text: str) -> list[str]:
    """Signed notes written one after another (a witness file) back into single notes."""
    notes: list[str] = []
    current: list[str] = []
    in_sigs = False
    for line in text.splitlines(keepends=True):
        if in_sigs and not line.startswith(_DASH):
            notes.append("".join(current))
            current, in_sigs = [], False
        if not in_sigs and line == "\n" and current:
            in_sigs = True
        current.append(line)
    if current:
        notes.append("".join(current))
    return [n for n in notes if n.strip()]


def verifier_path(signing_key: Path) -> Path:
    return signing_key.with_name(signing_key.name + ".pub")


def load_or_create_signer(path: Path, name: str) -> Signer:
    """Read the signing key, creating it (0600) and `<path>.pub` on first start."""
    if path.exists():
        try:
            signer = Signer.parse(path.read_text())
        except (NoteError, UnicodeDecodeError) as exc:
            reason = str(exc) if isinstance(exc, NoteError) else "it is not text"
            raise NoteError(f"the signing key {path} (audit.signing_key) cannot be used: {reason}") from None
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        signer = Signer.generate(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(signer.encode() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    pub = verifier_path(path)
    if not pub.exists():
        pub.write_text(str(signer.verifier) + "\n")
    return signer


def load_verifier(path: Path) -> Verifier:
    return Verifier.parse(path.read_text())
