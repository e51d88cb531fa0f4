"""`listen` naming a host that does not resolve let `serve` start the whole gateway (store opened, start-up
records written) and then fail in uvicorn with the resolver's words alone, `[Errno -2] Name or service not
known` in a JSON log line, exit 3: neither the setting nor its value was named. `serve` now resolves the
host first and refuses in one line naming `listen`, the value and why, exit 2 as for any config error,
before anything is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

HOST = "no-such-host.invalid"  # RFC 6761: never resolves


def test_serve_with_a_listen_host_that_does_not_resolve_names_listen_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "ledgergate.yaml"
    config.write_text(f"listen: \"{HOST}:8080\"\nstorage: sqlite:///./data/ledgergate.db\n"
                      "identity: {api_keys: true}\nservers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\n"
                      "audit: {signing_key: ./data/ledger.key}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "serve", "--config", str(config)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=50, check=False)
    lines = run.stderr.splitlines()
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error listen: "), run.stderr[-2000:]
    assert f"{HOST}:8080" in lines[0] and "does not resolve" in lines[0] and "`listen`" in lines[0], lines[0]
    assert "Errno" not in lines[0] and "Traceback" not in run.stderr and run.stdout == "", run.stderr
    assert not (tmp_path / "data").exists()  # refused before the store or the key was made


def test_a_listen_host_that_resolves_has_no_problem() -> None:
    from ledgergate.app import listen_problem

    assert listen_problem("127.0.0.1", 8080) is None and listen_problem("::1", 8080) is None
    assert listen_problem("localhost", 8080) is None
    problem = listen_problem(HOST, 8080)
    assert problem is not None and HOST in problem and "does not resolve" in problem
