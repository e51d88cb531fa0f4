"""`ledgergate demo` started by a relative path (`.venv/bin/ledgergate demo`) printed its follow-up commands
with that relative path, which fails from any other folder. Every suggested command now names the
running `ledgergate` by its absolute path, and runs as printed from another directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledgergate.demo import run
from tests.support.procs import Proc, free_port

pytestmark = pytest.mark.timeout(180)

SCRIPT = Path(sys.executable).parent / "ledgergate"


@pytest.mark.skipif(not SCRIPT.exists(), reason="no ledgergate script beside this interpreter")
def test_the_demo_started_by_a_relative_path_prints_absolute_commands(tmp_path: Path) -> None:
    start = tmp_path / "here"
    start.mkdir()
    relative = os.path.relpath(SCRIPT, start)
    assert not os.path.isabs(relative) and "/" in relative
    port, log = free_port(), tmp_path / "demo.log"
    proc = Proc([relative, "demo", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                env={"PYTHONUNBUFFERED": "1", "COLUMNS": "400"}, cwd=start, log=log)
    try:
        deadline = time.monotonic() + 60
        while "ledgergate demo is running" not in log.read_text(errors="replace"):
            assert proc.proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        printed = log.read_text(errors="replace")
        config_text = (tmp_path / "data" / "ledgergate.yaml").read_text()
    finally:
        proc.stop()
    absolute = os.path.abspath(SCRIPT)
    suggested = [line.strip() for line in printed.splitlines()
                 if re.match(r"\s*\S*ledgergate (approvals|sessions|audit|policy|config) ", line)]
    assert len(suggested) >= 5, printed
    for line in suggested:
        assert line.startswith(absolute + " "), line
    assert relative not in printed.replace(absolute, "")
    assert f"#   {absolute} audit verify" in config_text  # the commands in the config's header too
    listing = next(line for line in suggested if " approvals list --config " in line)
    elsewhere = subprocess.run(listing, shell=True, cwd="/", capture_output=True, text=True, timeout=60, check=False,
                               env={"PATH": "/usr/bin:/bin"})  # as printed, from another folder
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr


def test_cli_command_is_absolute_however_the_script_was_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "my tools" / "bin"
    bindir.mkdir(parents=True)
    script = bindir / "ledgergate"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(bindir.parent)
    monkeypatch.setattr(sys, "argv", ["bin/ledgergate", "demo"])
    assert run.cli_command() == f"'{script}'"
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(sys, "argv", ["ledgergate", "demo"])  # found on PATH
    assert run.cli_command() == f"'{script}'" and shutil.which("ledgergate") == str(script)
