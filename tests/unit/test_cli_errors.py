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
