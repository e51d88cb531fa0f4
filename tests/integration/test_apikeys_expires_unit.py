"""`ledgergate apikeys create --expires 5` made a key that expired five seconds later (the config's parser
reads a bare number as seconds). A lifetime needs a unit now: a bare number is refused naming the accepted
forms, nothing is created; with a unit the lifetime is what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", "apikeys", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ledgergate.yaml"
    path.write_text(f'storage: "sqlite:///{tmp_path / "ledgergate.db"}"\nidentity:\n  api_keys: true\n')
    return path


@pytest.mark.parametrize("bare", ["5", "90", " 30 ", "1.5"])
def test_a_bare_number_is_refused_naming_the_units(config: Path, bare: str) -> None:
    run = cli(config, "create", "--name", "ci", "--expires", bare)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--expires" in run.stderr and "no unit" in run.stderr
    for form in ("s, m, h or d", "30d", "never"):
        assert form in run.stderr, run.stderr
    assert "lgk_" not in run.stdout


@pytest.mark.parametrize(("given", "seconds"), [("45s", 45), ("10m", 600), ("12h", 43200), ("30d", 2592000)])
def test_a_lifetime_with_a_unit_is_what_it_says(config: Path, given: str, seconds: int) -> None:
    before = time.time()
    run = cli(config, "create", "--name", f"k{seconds}", "--expires", given, "--json")
    assert run.returncode == 0, run.stderr
    expires = datetime.fromisoformat(json.loads(run.stdout)["expires_at"]).timestamp()
    assert before + seconds - 5 <= expires <= time.time() + seconds + 5


def test_never_still_means_no_expiry(config: Path) -> None:
    run = cli(config, "create", "--name", "forever", "--expires", "never", "--json")
    assert run.returncode == 0 and json.loads(run.stdout)["expires_at"] is None, run.stderr
