"""Every CLI error is one clear line on stderr and a non-zero exit — never a traceback, a box,
or a message about a config the user never wrote. Each case runs the real `ledgergate` command
as a child process, its output on pipes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ledgergate.audit.checkpoint import load_or_create_signer


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def _one_clear_line(run: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    lines = run.stderr.splitlines()
    assert run.returncode == code, (run.returncode, run.stderr)
    assert len(lines) == 1, run.stderr
    line = lines[0]
    assert line.startswith("error "), line
    for banned in ("Traceback", "╭", "│", "Error:", "invalid literal", "the generated config"):
        assert banned not in line, line
    for word in words:
        assert word in line, (word, line)
    assert len(line) < 400, line
    return line


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "ok.yaml").write_text("servers:\n  bank:\n    url: http://127.0.0.1:1/mcp\n"
                                      "identity:\n  api_keys: true\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00listen")
    (tmp_path / "adir.yaml").mkdir()
    (tmp_path / "plain-file").write_text("x")
    return tmp_path


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1", "abc", "8080.5", "١٢٣"])
def test_demo_bad_ports(files: Path, port: str) -> None:
    run = _cli("demo", "--port", port, "--data-dir", str(files / "demo"), cwd=files)
    _one_clear_line(run, 2, "--port", "ledgergate demo --help")
    assert not (files / "demo").exists()  # refused before anything was written


def test_demo_port_in_use_and_unwritable_data_dir(files: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = _cli("demo", "--port", str(port), "--data-dir", str(files / "demo"), cwd=files)
        _one_clear_line(run, 1, f"127.0.0.1:{port} is already in use", "--port")
    run = _cli("demo", "--port", "8080", "--data-dir", str(files / "plain-file" / "sub"), cwd=files)
    _one_clear_line(run, 2, "cannot create", "plain-file")
    assert run.stdout == ""


@pytest.mark.parametrize("verb", [["config", "validate"], ["tools", "list"], ["audit", "verify"],
                                  ["apikeys", "list"], ["serve"]])
def test_config_files_that_cannot_be_read(files: Path, verb: list[str]) -> None:
    for name, words in (("missing.yaml", ("missing.yaml", "cannot read the file", "No such file")),
                        ("adir.yaml", ("adir.yaml", "cannot read the file", "directory")),
                        ("binary.yaml", ("binary.yaml", "not UTF-8 text"))):
        _one_clear_line(_cli(*verb, "--config", str(files / name), cwd=files), 2, *words)


@pytest.mark.parametrize(("args", "words"), [
    (["--args", "{"], ("--args", "not valid JSON")),
    (["--args", "[1, 2]"], ("--args", "must be a JSON object")),
    (["--args", "nope"], ("--args", "not valid JSON")),
    (["--claims", '"x"'], ("--claims", "must be a JSON object")),
    (["--at", "yesterday"], ("--at", "epoch seconds or an ISO 8601 time")),
    (["--at", "١٢٣"], ("--at", "epoch seconds")),
    (["--at", "inf"], ("--at", "epoch seconds")),
    (["--at", "9" * 4000], ("--at", "epoch seconds")),
    (["--kind", "robot"], ("--kind",)),
])
def test_policy_check_bad_arguments(files: Path, args: list[str], words: tuple[str, ...]) -> None:
    run = _cli("policy", "check", "--config", str(files / "ok.yaml"), "--subject", "a", "--server", "bank",
               "--tool", "t", *args, cwd=files)
    _one_clear_line(run, 2, *words)
    assert run.stdout == ""


def test_policy_check_names_a_server_the_config_does_not_have(files: Path) -> None:
    """A typo in --server was judged like an unknown server and printed "deny" with exit 1: an answer
    to a question nobody asked. It is a usage error naming the configured servers."""
    run = _cli("policy", "check", "--config", str(files / "ok.yaml"), "--subject", "a", "--server", "bnak",
               "--tool", "t", cwd=files)
    _one_clear_line(run, 2, "--server", "bnak", "bank")
    assert run.stdout == ""


@pytest.mark.parametrize("expires", ["5x", "١٠d", "-1d", "1" * 5000 + "d", "", "[bold]1d"])
def test_apikeys_bad_durations(files: Path, expires: str) -> None:
    run = _cli("apikeys", "create", "--name", "n", "--expires", expires, "--config", str(files / "ok.yaml"),
               cwd=files)
    _one_clear_line(run, 2, "--expires")


def test_a_bad_duration_in_the_config(files: Path) -> None:
    (files / "bad.yaml").write_text("audit:\n  checkpoint_interval: 5 parsecs\n")
    _one_clear_line(_cli("config", "validate", "--config", str(files / "bad.yaml"), cwd=files), 2,
                    "line 2", "checkpoint_interval", "expected a duration")


@pytest.mark.parametrize(("args", "words"), [
    (["nosuchverb"], ("No such command", "ledgergate --help")),
    (["config", "validate"], ("Missing option", "--config", "ledgergate config validate --help")),
    (["config", "validate", "--config", "x", "--bogus"], ("No such option", "--bogus")),
    (["policy", "check", "--config", "x"], ("Missing option",)),
    (["tools", "accept", "--config", "x"], ("Missing argument",)),
])
def test_usage_errors(files: Path, args: list[str], words: tuple[str, ...]) -> None:
    run = _cli(*args, cwd=files)
    _one_clear_line(run, 2, *words)
    assert run.stdout == ""


@pytest.mark.parametrize("verb", [["audit", "verify"], ["audit", "tail"], ["sessions", "list"]])
def test_reading_a_ledger_that_is_not_there_creates_nothing(tmp_path: Path, verb: list[str]) -> None:
    """A mistyped `storage` path: the readers say so and write nothing (no folder, no empty database)."""
    config = tmp_path / "ledgergate.yaml"
    config.write_text("storage: sqlite:///./typo/ledgergate.db\n")
    load_or_create_signer(tmp_path / "data" / "ledger.key", "ledgergate")  # the verifier key is there
    _one_clear_line(_cli(*verb, "--config", str(config), cwd=tmp_path), 2, "typo", "does not exist")
    assert not (tmp_path / "typo").exists()


# ── JSON given on the command line (policy check --args / --claims) ─────────────────────────────────
# Exit 1 is "deny" for `policy check`: whatever cannot be read as the gateway reads a message is a usage
# error (exit 2), never a crash that a gate would take for a decision.

_DEEP = "[" * 30000 + "]" * 30000


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--args", '{"amount": ' + _DEEP + "}", ("--args", "nested too deep")),
    ("--args", '{"a": ' + "[" * 126 + "]" * 126 + "}", ("--args", "nested too deep", "128")),  # 127 levels
    ("--args", '{"amount": ' + "9" * 5000 + "}", ("--args", "number is too large")),
    ("--args", '{"amount": ' + "9" * 400 + "}", ("--args", "number is too large")),
    ("--args", '{"amount": -1e999}', ("--args", "number is too large")),
    ("--args", '{"amount": NaN}', ("--args", "not valid JSON")),
    ("--claims", '{"x": ' + _DEEP + "}", ("--claims", "nested too deep")),
    ("--claims", '{"x": ' + "9" * 5000 + "}", ("--claims", "number is too large")),
])
def test_policy_check_json_it_cannot_read_is_a_usage_error(files: Path, option: str, value: str,
                                                          words: tuple[str, ...]) -> None:
    run = _cli("policy", "check", "--config", str(files / "ok.yaml"), "--subject", "a", "--server", "bank",
               "--tool", "t", option, value, cwd=files)
    _one_clear_line(run, 2, *words)
    assert run.stdout == ""


def test_policy_check_args_that_are_not_utf8_are_a_usage_error(files: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "policy", "check", "--config",
                          str(files / "ok.yaml"), "--subject", "a", "--server", "bank", "--tool", "t",
                          "--args", b'{"a": "\xff"}'], cwd=files, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    _one_clear_line(run, 2, "--args", "UTF-8")


def test_policy_check_decides_on_what_the_gateway_accepts(files: Path) -> None:
    """The boundaries are the gateway's: arguments nested 126 levels (128 with the message around them)
    and an integer beyond 64 bits are decided (exactly: the integer is not rounded)."""
    for value in ('{"a": ' + "[" * 125 + "]" * 125 + "}", '{"amount": 123456789012345678901234567890}'):
        run = _cli("policy", "check", "--config", str(files / "ok.yaml"), "--subject", "a", "--server", "bank",
                   "--tool", "t", "--args", value, "--json", cwd=files)
        assert run.returncode == 1 and '"decision": "deny"' in run.stdout, run.stderr  # no rule: default deny
    assert "123456789012345678901234567890" in run.stdout


# ── files named on the command line ──────────────────────────────────────────────────────────────────

@pytest.fixture
def key_files(files: Path) -> Path:
    load_or_create_signer(files / "data" / "ledger.key", "ledgergate")
    (files / "garbage").write_bytes(b"\xe6\x00\xff" * 40)
    (files / "empty").write_bytes(b"")
    (files / "notakey").write_text("hello\n")
    (files / "notjson").write_text('{"format": ')
    return files


@pytest.mark.parametrize(("name", "problem"), [
    ("missing", "missing does not exist"),
    ("adir.yaml", "adir.yaml is a directory, not a file"),
    ("plain-file/x", "plain-file is not a directory"),
    ("empty", "empty is empty: not an evidence bundle"),
    ("garbage", "garbage is not UTF-8 text (byte 0): not an evidence bundle"),
    ("notjson", "notjson is not JSON (unexpected end of data at character 11): not an evidence bundle"),
])
def test_verify_bundle_names_the_bundle_and_what_is_wrong(key_files: Path, name: str, problem: str) -> None:
    bundle = key_files / name
    run = _cli("audit", "verify-bundle", str(bundle), "--public-key", str(key_files / "data" / "ledger.key.pub"),
               cwd=key_files)
    line = _one_clear_line(run, 2, f"BUNDLE {bundle}: ", problem)
    assert "Errno" not in line and "codec" not in line and "line 1 column" not in line


@pytest.mark.parametrize(("name", "problem"), [
    ("missing", "missing does not exist"),
    ("adir.yaml", "adir.yaml is a directory, not a file"),
    ("empty", "empty is empty: not a verifier key file"),
    ("garbage", "garbage is not UTF-8 text (byte 0): not a verifier key file"),
    ("notakey", "notakey does not hold a verifier key"),
])
def test_public_key_files_are_named_with_what_is_wrong(key_files: Path, name: str, problem: str) -> None:
    key = str(key_files / name)
    config = key_files / "ok.yaml"
    for verb in (["audit", "verify-bundle", str(key_files / "notjson")],
                 ["audit", "verify-proof", str(key_files / "notjson")],
                 ["audit", "verify", "--config", str(config)],
                 ["audit", "export", "--config", str(config), "-o", str(key_files / "b.bundle")]):
        line = _one_clear_line(_cli(*verb, "--public-key", key, cwd=key_files), 2, f"--public-key {key}: ", problem)
        assert "Errno" not in line and "codec" not in line, line


def test_a_key_file_is_not_read_whole(key_files: Path) -> None:
    run = _cli("audit", "verify-bundle", str(key_files / "notjson"), "--public-key", "/dev/zero", cwd=key_files)
    _one_clear_line(run, 2, "--public-key /dev/zero: ", "larger than")


def test_verify_proof_names_the_proof_and_the_record(key_files: Path) -> None:
    pub = str(key_files / "data" / "ledger.key.pub")
    missing = key_files / "missing"
    _one_clear_line(_cli("audit", "verify-proof", str(missing), "--public-key", pub, cwd=key_files), 2,
                    f"PROOF {missing}: {missing} does not exist")
    _one_clear_line(_cli("audit", "verify-proof", str(key_files / "notjson"), "--public-key", pub, "--record",
                         str(missing), cwd=key_files), 2, f"--record {missing}: {missing} does not exist")


@pytest.mark.parametrize("name", ["", "a b", "x" * 100_000])
def test_apikeys_bad_names_are_usage_errors(files: Path, name: str) -> None:
    """As a bad --expires is: exit 2 naming the option; nothing is opened or created."""
    (files / "fresh.yaml").write_text("storage: sqlite:///./fresh/ledgergate.db\n")
    run = _cli("apikeys", "create", "--name", name, "--config", str(files / "fresh.yaml"), cwd=files)
    _one_clear_line(run, 2, "--name", "1-100 characters without spaces")
    assert not (files / "fresh").exists()


@pytest.mark.parametrize("verb", [["apikeys", "create", "--name", "ci"], ["serve"]])
def test_a_file_where_a_folder_should_be_is_named_as_not_a_directory(files: Path, verb: list[str]) -> None:
    """The system says "File exists" when a folder of the path is a file; the CLI says which file."""
    (files / "under-a-file.yaml").write_text(f"listen: 127.0.0.1:{_free_port()}\n"
                                             "storage: sqlite:///./plain-file/ledgergate.db\n")
    line = _one_clear_line(_cli(*verb, "--config", str(files / "under-a-file.yaml"), cwd=files), 2,
                           f"{files / 'plain-file'} is not a directory", "storage")
    assert "File exists" not in line
    (files / "key-under-a-file.yaml").write_text(f"listen: 127.0.0.1:{_free_port()}\n"
                                                 "audit:\n  signing_key: ./plain-file/keys/ledger.key\n")
    line = _one_clear_line(_cli(*verb, "--config", str(files / "key-under-a-file.yaml"), cwd=files), 2,
                           f"{files / 'plain-file'} is not a directory", "audit.signing_key")
    assert "File exists" not in line


def test_demo_data_dir_that_is_a_file(files: Path) -> None:
    run = _cli("demo", "--port", str(_free_port()), "--data-dir", str(files / "plain-file"), cwd=files)
    line = _one_clear_line(run, 2, f"{files / 'plain-file'} is a file, not a directory")
    assert "File exists" not in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("address", ["udp://127.0.0.1:99999", "tcp://127.0.0.1:0", "udp://127.0.0.1:65536"])
def test_audit_siem_syslog_port_out_of_range_is_a_usage_error(key_files: Path, address: str) -> None:
    run = _cli("audit", "siem", "--config", str(key_files / "ok.yaml"), "--syslog", address, cwd=key_files)
    line = _one_clear_line(run, 2, "--syslog", "invalid port", "1-65535")
    assert "refused" not in line


def test_serve_says_a_failed_start_once(files: Path) -> None:
    """`serve` whose start fails (its log id held by another process, here this test) logs the failure
    once, not again from uvicorn and once more as "Application startup failed. Exiting."."""
    import json

    from ledgergate.store.claims import LogClaim
    from ledgergate.store.db import StoreURL

    (files / "held.yaml").write_text(f"listen: 127.0.0.1:{_free_port()}\nstorage: sqlite:///./held.db\n"
                                     "audit:\n  replica: held\n")
    claim = LogClaim(StoreURL("sqlite", str(files / "held.db")), "held")
    try:
        run = _cli("serve", "--config", str(files / "held.yaml"), cwd=files)
    finally:
        claim.release()
    assert run.returncode != 0, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines()]
    errors = [r for r in records if r["level"] in ("error", "critical")]
    assert len(errors) == 1, run.stderr
    assert "already claimed" in errors[0]["message"] and f"pid {os.getpid()}" in errors[0]["message"]
    assert "Traceback" not in run.stderr
