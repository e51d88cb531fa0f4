"""C2SP signed-note and tlog-checkpoint: format, key ids, tampering, Go interop."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledgergate.audit import checkpoint as cp

ROOT = hashlib.sha256(b"root").digest()


def test_key_strings_round_trip_and_key_id(tmp_path: Path) -> None:
    signer = cp.load_or_create_signer(tmp_path / "k" / "ledger.key", "ledgergate")
    assert (tmp_path / "k" / "ledger.key").stat().st_mode & 0o777 == 0o600
    vkey = (tmp_path / "k" / "ledger.key.pub").read_text().strip()
    name, hex_id, b64 = vkey.split("+", 2)
    raw = base64.b64decode(b64)
    assert name == "ledgergate" and raw[0] == 1 and len(raw) == 33
    assert bytes.fromhex(hex_id) == hashlib.sha256(b"ledgergate\n\x01" + raw[1:]).digest()[:4]
    assert str(cp.Verifier.parse(vkey)) == vkey
    again = cp.load_or_create_signer(tmp_path / "k" / "ledger.key", "other-name-ignored")
    assert again.encode() == signer.encode()
    assert cp.Signer.parse(signer.encode()).verifier == signer.verifier


def test_checkpoint_note_layout() -> None:
    signer = cp.Signer.generate("ledgergate")
    body = cp.Checkpoint("ledgergate/replica-a", 42, ROOT).body()
    assert body == f"ledgergate/replica-a\n42\n{base64.b64encode(ROOT).decode()}\n"
    note = signer.sign(body)
    text, sigline = note.split("\n\n")
    assert text + "\n" == body
    assert sigline.startswith("\u2014 ledgergate ") and sigline.endswith("\n")
    sig = base64.b64decode(sigline.split(" ")[2])
    assert sig[:4] == signer.verifier.id
    Ed25519PublicKey.from_public_bytes(signer.verifier.public).verify(sig[4:], body.encode())
    assert cp.open_checkpoint(note, signer.verifier) == cp.Checkpoint("ledgergate/replica-a", 42, ROOT)


def test_tampered_notes_fail() -> None:
    signer = cp.Signer.generate("ledgergate")
    note = signer.sign(cp.Checkpoint("o", 7, ROOT).body())
    with pytest.raises(cp.NoteError):
        cp.open_note(note.replace("\n7\n", "\n8\n"), signer.verifier)
    with pytest.raises(cp.NoteError, match="not signed by"):
        cp.open_note(note, cp.Signer.generate("ledgergate").verifier)
    with pytest.raises(cp.NoteError):
        cp.open_note(note.replace("\u2014", "-"), signer.verifier)
    with pytest.raises(cp.NoteError):
        cp.Checkpoint.parse("o\n07\n" + base64.b64encode(ROOT).decode() + "\n")
    with pytest.raises(cp.NoteError):
        cp.Verifier.parse(str(signer.verifier).replace("ledgergate+", "other+"))


def test_split_notes() -> None:
    signer = cp.Signer.generate("ledgergate")
    notes = [signer.sign(cp.Checkpoint("o", n, ROOT).body()) for n in (1, 2, 3)]
    assert cp.split_notes("".join(notes)) == notes


GO_PROGRAM = textwrap.dedent("""
    package main

    import (
        "fmt"
        "os"
        "strconv"
        "strings"

        "golang.org/x/mod/sumdb/note"
        "golang.org/x/mod/sumdb/tlog"
    )

    func main() {
        vkey, _ := os.ReadFile(os.Args[1])
        msg, _ := os.ReadFile(os.Args[2])
        v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
        if err != nil { fmt.Println("verifier:", err); os.Exit(1) }
        n, err := note.Open(msg, note.VerifierList(v))
        if err != nil { fmt.Println("open:", err); os.Exit(1) }
        lines := strings.Split(n.Text, "\\n")
        size, _ := strconv.ParseInt(lines[1], 10, 64)
        // Recompute the root with tlog from the leaf data 0x00..0x(size-1).
        var stored []tlog.Hash
        for i := int64(0); i < size; i++ {
            hs, err := tlog.StoredHashes(i, []byte{byte(i)}, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
                out := make([]tlog.Hash, len(idx))
                for j, x := range idx { out[j] = stored[x] }
                return out, nil
            }))
            if err != nil { fmt.Println("stored:", err); os.Exit(1) }
            stored = append(stored, hs...)
        }
        root, err := tlog.TreeHash(size, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
            out := make([]tlog.Hash, len(idx))
            for j, x := range idx { out[j] = stored[x] }
            return out, nil
        }))
        if err != nil { fmt.Println("tree:", err); os.Exit(1) }
        if root.String() != lines[2] { fmt.Println("root mismatch", root.String(), lines[2]); os.Exit(1) }
        fmt.Printf("ok %s %d %s\\n", lines[0], size, root.String())
    }
""")


def test_go_sumdb_note_reads_our_checkpoint(tmp_path: Path) -> None:
    go = shutil.which("go")
    gopath = Path("/usr/share/gocode")
    if go is None or not (gopath / "src/golang.org/x/mod/sumdb/note").is_dir():
        pytest.skip("Go toolchain or golang.org/x/mod not installed (apt-get install golang-go golang-golang-x-mod-dev)")
    from ledgergate.audit import merkle

    leaves = [merkle.leaf_hash(bytes([i])) for i in range(5)]
    root = merkle.root_of(leaves)
    signer = cp.load_or_create_signer(tmp_path / "ledger.key", "ledgergate")
    note = signer.sign(cp.Checkpoint("ledgergate/replica-a", 5, root).body())
    (tmp_path / "cp.note").write_text(note)
    src = tmp_path / "src" / "check"
    src.mkdir(parents=True)
    (src / "main.go").write_text(GO_PROGRAM)
    env = {"GOPATH": f"{tmp_path / 'gopath'}:{gopath}", "GO111MODULE": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": str(tmp_path / "gocache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([go, "run", str(src / "main.go"), str(tmp_path / "ledger.key.pub"), str(tmp_path / "cp.note")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == ["ok", "ledgergate/replica-a", "5", base64.b64encode(root).decode()]
    bad = note.replace("\n5\n", "\n6\n")
    (tmp_path / "bad.note").write_text(bad)
    run = subprocess.run([go, "run", str(src / "main.go"), str(tmp_path / "ledger.key.pub"), str(tmp_path / "bad.note")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode != 0
