"""One record, one offline proof (C2SP tlog-proof): made from a real ledger on SQLite, checked by our
`audit verify-proof`, by Go's golang.org/x/mod/sumdb/note + tlog, and refused, naming why, when any
part is altered."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ledgergate.audit import proof
from ledgergate.audit.checkpoint import Signer, load_verifier
from ledgergate.audit.ledger import Ledger
from ledgergate.audit.prover import LogProver, prove_record
from ledgergate.audit.settings import AuditSettings
from ledgergate.store.ledger_store import open_ledger_store


async def _ledger(tmp_path: Path, n: int, witness: bool = True) -> tuple[Ledger, str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = AuditSettings(replica="gw-1", checkpoint_interval=0, signing_key="./ledger.key",
                             witnesses=["file://./witness.log"] if witness else [])
    led = await Ledger.open(settings, url, tmp_path)
    for i in range(n):
        await led.append("rpc.request", {"session": f"s{i % 3}", "n": i, "args": {"account": "***1234"}})
    await led.checkpoint()
    return led, url


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture()
async def made(tmp_path: Path) -> tuple[Path, str, int]:
    led, url = await _ledger(tmp_path, 13)
    await led.close()  # writes nothing new: the checkpoint is at 13
    store = open_ledger_store(url)
    try:
        text = prove_record(store, "gw-1", 6, load_verifier(tmp_path / "ledger.key.pub"),
                            [(tmp_path / "witness.log").read_text()])
    finally:
        store.close()
    return tmp_path, text, 13


async def test_proof_layout_and_verification(made: tuple[Path, str, int]) -> None:
    tmp, text, size = made
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ") and lines[2] == "index 6"
    record = base64.b64decode(lines[1][6:])
    assert b'"seq":6' in record and b'"log":"gw-1"' in record
    head, _, note = text.partition("\n\n")
    assert len(head.split("\n")) - 3 == 4  # a path of ceil(log2 13) = 4 hashes for index 6
    assert note.startswith(f"ledgergate/gw-1\n{size}\n")
    ok = proof.verify(text, load_verifier(tmp / "ledger.key.pub"))
    assert (ok.log_id, ok.index, ok.tree_size, ok.event) == ("gw-1", 6, size, "rpc.request")


async def test_every_index_of_every_size_verifies(tmp_path: Path) -> None:
    led, url = await _ledger(tmp_path, 1, witness=False)
    verifier = led.signer.verifier
    store = open_ledger_store(url)
    try:
        for n in range(1, 18):
            prover = LogProver.open(store, "gw-1", verifier)
            assert prover.size == n
            for i in range(n):
                assert proof.verify(prover.prove(i), verifier).index == i
            await led.append("rpc.response", {"n": n})
            await led.checkpoint()
    finally:
        store.close()
        await led.close()


def _swap_line(text: str, i: int, new: str) -> str:
    lines = text.split("\n")
    lines[i] = new
    return "\n".join(lines)


async def test_altered_proofs_are_refused_naming_the_check(made: tuple[Path, str, int]) -> None:
    tmp, text, _ = made
    verifier = load_verifier(tmp / "ledger.key.pub")
    record = base64.b64decode(text.split("\n")[1][6:])
    cases = {
        "record altered": _swap_line(text, 1, "extra " + base64.b64encode(record.replace(b"***1234", b"***9999")).decode()),
        "record moved": _swap_line(text, 2, "index 7"),
        "path hash altered": _swap_line(text, 3, base64.b64encode(bytes(32)).decode()),
        "path cut short": "\n".join(text.split("\n")[:3] + text.split("\n")[4:]),
        "checkpoint size altered": text.replace("\n13\n", "\n14\n", 1),
        "header": text.replace("tlog-proof@v1", "tlog-proof@v2", 1),
        "leading zero": _swap_line(text, 2, "index 06"),
    }
    reasons = {}
    for name, bad in cases.items():
        with pytest.raises(proof.ProofError) as info:
            proof.verify(bad, verifier)
        reasons[name] = str(info.value)
    assert "not the signed root" in reasons["record altered"]
    assert "not log 'gw-1' seq 7" in reasons["record moved"]
    assert "not the signed root" in reasons["path hash altered"]
    assert "proof too short" in reasons["path cut short"]
    assert "does not verify" in reasons["checkpoint size altered"]
    assert "first line" in reasons["header"]
    assert "leading zeroes" in reasons["leading zero"]
    other = Signer.generate("ledgergate").verifier
    with pytest.raises(proof.ProofError, match="not signed by"):
        proof.verify(text, other)


async def test_cli_verify_proof_exit_codes(made: tuple[Path, str, int]) -> None:
    tmp, text, _ = made
    good, bad = tmp / "good.tlog-proof", tmp / "bad.tlog-proof"
    good.write_text(text)
    bad.write_text(_swap_line(text, 2, "index 5"))
    run = _cli("audit", "verify-proof", str(good), "--public-key", str(tmp / "ledger.key.pub"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok record 6 of log gw-1 (rpc.request" in run.stdout
    run = _cli("audit", "verify-proof", str(bad), "--public-key", str(tmp / "ledger.key.pub"))
    assert run.returncode == 1 and "not log 'gw-1' seq 5" in run.stdout, run.stdout + run.stderr
    run = _cli("audit", "verify-proof", str(tmp / "missing"), "--public-key", str(tmp / "ledger.key.pub"))
    assert run.returncode == 2 and f"PROOF {tmp / 'missing'}: {tmp / 'missing'} does not exist" in run.stderr, \
        run.stderr


async def test_prover_refuses_a_record_edited_in_the_store(tmp_path: Path) -> None:
    led, url = await _ledger(tmp_path, 5, witness=False)
    await led.close()
    db = sqlite3.connect(tmp_path / "ledger.db")
    row = db.execute("SELECT record FROM ledger_leaves WHERE log_id='gw-1' AND seq=2").fetchone()
    db.execute("UPDATE ledger_leaves SET record=? WHERE log_id='gw-1' AND seq=2",
               (bytes(row[0]).replace(b"***1234", b"***0000"),))
    db.commit()
    db.close()
    store = open_ledger_store(url)
    try:
        verifier = load_verifier(tmp_path / "ledger.key.pub")
        with pytest.raises(proof.ProofError, match="not the signed root"):
            prove_record(store, "gw-1", 2, verifier)
        assert proof.verify(prove_record(store, "gw-1", 3, verifier), verifier).index == 3
        with pytest.raises(proof.ProofError, match="not in log gw-1's latest signed checkpoint"):
            prove_record(store, "gw-1", 5, verifier)
    finally:
        store.close()


def test_witness_cosignatures_are_carried() -> None:
    log_key, witness = Signer.generate("ledgergate"), Signer.generate("witness.example")
    body = "ledgergate/x\n1\n" + base64.b64encode(bytes(32)).decode() + "\n"
    note = log_key.sign(body)
    cosigned = witness.sign(body)
    merged = proof.add_cosignatures(note, [cosigned, log_key.sign("ledgergate/x\n2\n" + body.split("\n")[2] + "\n")])
    assert merged.count("\u2014 ") == 2 and "\u2014 witness.example " in merged
    assert proof.add_cosignatures(merged, [cosigned]) == merged


GO_PROGRAM = textwrap.dedent("""
    package main

    import (
        "encoding/base64"
        "fmt"
        "os"
        "strconv"
        "strings"

        "golang.org/x/mod/sumdb/note"
        "golang.org/x/mod/sumdb/tlog"
    )

    func fail(what string, err error) { fmt.Println(what+":", err); os.Exit(1) }

    func main() {
        vkey, _ := os.ReadFile(os.Args[1])
        raw, _ := os.ReadFile(os.Args[2])
        head, checkpoint, found := strings.Cut(string(raw), "\\n\\n")
        if !found { fail("proof", fmt.Errorf("no blank line")) }
        lines := strings.Split(head, "\\n")
        if lines[0] != "c2sp.org/tlog-proof@v1" { fail("proof", fmt.Errorf("header")) }
        record, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
        if err != nil { fail("extra", err) }
        index, err := strconv.ParseInt(strings.TrimPrefix(lines[2], "index "), 10, 64)
        if err != nil { fail("index", err) }
        var path tlog.RecordProof
        for _, l := range lines[3:] {
            h, err := tlog.ParseHash(l)
            if err != nil { fail("hash", err) }
            path = append(path, h)
        }
        v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
        if err != nil { fail("verifier", err) }
        n, err := note.Open([]byte(checkpoint), note.VerifierList(v))
        if err != nil { fail("open", err) }
        body := strings.Split(n.Text, "\\n")
        size, _ := strconv.ParseInt(body[1], 10, 64)
        root, err := tlog.ParseHash(body[2])
        if err != nil { fail("root", err) }
        if err := tlog.CheckRecord(path, size, root, index, tlog.RecordHash(record)); err != nil { fail("check", err) }
        fmt.Printf("ok %s %d %d %d\\n", body[0], index, size, len(n.UnverifiedSigs))
    }
""")


async def test_go_sumdb_tlog_checks_our_proof(made: tuple[Path, str, int]) -> None:
    go = shutil.which("go")
    gopath = Path("/usr/share/gocode")
    if go is None or not (gopath / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        pytest.skip("Go toolchain or golang.org/x/mod not installed (apt-get install golang-go golang-golang-x-mod-dev)")
    tmp, text, size = made
    (tmp / "good.tlog-proof").write_text(text)
    (tmp / "bad.tlog-proof").write_text(_swap_line(text, 2, "index 5"))
    src = tmp / "src" / "checkproof"
    src.mkdir(parents=True)
    (src / "main.go").write_text(GO_PROGRAM)
    env = {"GOPATH": f"{tmp / 'gopath'}:{gopath}", "GO111MODULE": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": str(tmp / "gocache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    build = subprocess.run([go, "build", "-o", str(tmp / "checkproof"), str(src / "main.go")],
                           capture_output=True, text=True, env=env, timeout=240)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([str(tmp / "checkproof"), str(tmp / "ledger.key.pub"), str(tmp / "good.tlog-proof")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == ["ok", "ledgergate/gw-1", "6", str(size), "0"]
    run = subprocess.run([str(tmp / "checkproof"), str(tmp / "ledger.key.pub"), str(tmp / "bad.tlog-proof")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "check" in run.stdout, run.stdout


async def test_verify_proof_prints_a_proofs_key_names_escaped_and_bounded(made: tuple[Path, str, int]) -> None:
    """A proof comes from outside. Its signature lines' key names were printed as they were: a C1 control
    (U+009B is CSI on terminals that honour C1 in UTF-8) could erase the line and draw a green "ok" over an
    invalid verdict, and a 900,000-character name printed 900 KB. Now every name is escaped and bounded, and
    no more than ten other signers are listed."""
    tmp, text, _ = made
    fake_sig = base64.b64encode(bytes(68)).decode()
    hostile = "\u009b2K\u009b1G\u009b32mok\u009b0m\u00a0record\u202e\u2028"
    extra = "".join(f"\u2014 {hostile}{i} {fake_sig}\n" for i in range(12)) + f"\u2014 {'x' * 900_000} {fake_sig}\n"
    cosigned, alone = tmp / "cosigned.tlog-proof", tmp / "alone.tlog-proof"
    cosigned.write_text(text + extra, encoding="utf-8")
    head, _, note = text.partition("\n\n")
    body = note.split("\n\n")[0] if "\n\n" in note else note.split("\u2014")[0].rstrip("\n")
    alone.write_text(f"{head}\n\n{body}\n\n\u2014 {hostile} {fake_sig}\n", encoding="utf-8")
    for path, code in ((cosigned, 0), (alone, 1)):
        run = _cli("audit", "verify-proof", str(path), "--public-key", str(tmp / "ledger.key.pub"))
        said = run.stdout + run.stderr
        assert run.returncode == code, said
        assert not any(ch in said for ch in "\u009b\u202e\u2028\u00a0"), repr(said[:400])
        assert "\\x9b" in said and len(said) < 5_000, len(said)
    assert " and 3 more" in _cli("audit", "verify-proof", str(cosigned), "--public-key",
                                 str(tmp / "ledger.key.pub")).stdout.replace("\n", " ")
