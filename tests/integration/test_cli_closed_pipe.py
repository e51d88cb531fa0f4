"""Every verb that writes to stdout, whose reader is gone before it writes (`… | head -1`), exits 141
(128 + SIGPIPE) with nothing on stderr, as `ledgergate --help` promises and `audit tail` did: `audit siem -o -`
exited 2 with "error writing to stdout: Broken pipe", a verb printing JSON exited 1. A real pipe, its read
end closed before the child starts writing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pipe")
    url = f"sqlite:///{tmp / 'data' / 'ledgergate.db'}"

    async def grow() -> None:
        ledger = await Ledger.open(AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0,
                                                 replica="gw"), url, tmp)
        for i in range(40):
            await ledger.append("rpc.request", {"session": f"s{i % 3}", "server": "bank", "method": "tools/call",
                                                "target": "echo", "request_id": f"req_{i}", "args": {"i": i}})
        await ledger.checkpoint()
        await ledger.close()

    asyncio.run(grow())
    path = tmp / "ledgergate.yaml"
    path.write_text(f"storage: {json.dumps(url)}\naudit:\n  signing_key: ./data/ledger.key\n"
                    "  checkpoint_interval: 1h\n  replica: gw\n")
    return path


def closed_early(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-m", "ledgergate.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the child has imported anything, let alone written
    _, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


@pytest.mark.parametrize("verb", [
    ("audit", "siem", "--from", "0", "-o", "-"),
    ("audit", "tail", "-n", "20"),
    ("sessions", "list", "--json"),
    ("sessions", "list"),
    ("audit", "export", "-o", "/dev/stdout"),
], ids=lambda v: " ".join(v))
def test_a_verb_whose_reader_went_away_exits_141_silently(config: Path, verb: tuple[str, ...]) -> None:
    run = closed_early(*verb, "--config", str(config))
    assert run.returncode == 141, (run.returncode, run.stderr)
    assert "error" not in run.stderr.lower() and "broken pipe" not in run.stderr.lower(), run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr


def test_siem_keeps_no_position_past_what_was_not_delivered(config: Path, tmp_path: Path) -> None:
    state = tmp_path / "siem.state"
    run = closed_early("audit", "siem", "--state", str(state), "-o", "-", "--config", str(config))
    assert run.returncode == 141, run.stderr
    assert not state.exists()  # nothing was delivered, so no position was saved
