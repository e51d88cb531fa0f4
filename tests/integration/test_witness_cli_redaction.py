"""`ledgergate audit verify` names every configured witness (the one it cannot read back, a file witness
that holds nothing) and must never print an http(s) witness URL's credentials: its password, or a token in
its query. test_witness_redaction.py checks this against a running gateway with node peers; this is the
same guarantee for the CLI alone, fast and without them (a regression guard: it holds since 88cb5eb)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledgergate.audit.ledger import Ledger
from ledgergate.audit.settings import AuditSettings

pytestmark = pytest.mark.timeout(60)

PASSWORD = "Witn3ssPassw0rd"
TOKEN = "QueryT0ken77"
URL = f"https://auditor:{PASSWORD}@witness.example:8443/add-checkpoint?token={TOKEN}"


async def test_audit_verify_never_prints_a_witness_urls_credentials(tmp_path: Path) -> None:
    settings = AuditSettings(signing_key="./data/ledger.key", checkpoint_interval=0, replica="replica-a",
                             witnesses=["file://./data/witness.log"])
    ledger = await Ledger.open(settings, f"sqlite:///{tmp_path / 'data' / 'l.db'}", tmp_path)
    await ledger.append("rpc.request", {"n": 1})
    await ledger.checkpoint()
    await ledger.close()
    (tmp_path / "data" / "witness.log").unlink()  # a file witness that holds nothing: a FAIL naming witnesses
    config = tmp_path / "ledgergate.yaml"
    config.write_text(f"storage: sqlite:///./data/l.db\nidentity: {{api_keys: true}}\n"
                      "servers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\n"
                      f"audit:\n  signing_key: ./data/ledger.key\n  replica: replica-a\n"
                      f"  witnesses: ['file://./data/witness.log', '{URL}']\n")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ledgergate.cli", "audit", "verify",
                                                   "--config", str(config)],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50, check=False)
    both = run.stdout + run.stderr
    assert run.returncode == 1 and "FAIL witness file://./data/witness.log" in run.stdout, both
    assert "witness https://witness.example:8443/add-checkpoint?… cannot be read back" in run.stdout, both
    assert PASSWORD not in both and TOKEN not in both and "auditor" not in both, both
