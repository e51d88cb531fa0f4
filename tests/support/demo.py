"""`ledgergate demo` as a subprocess (gateway, bank server and development issuer), for tests that need
the whole product as a user starts it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import Proc, free_port

READY = "ledgergate demo is running"


@dataclass
class Demo:
    proc: Proc
    port: int
    dir: Path
    log: Path
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp/bank"

    @property
    def config(self) -> Path:
        return self.dir / "ledgergate.yaml"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args], capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir)

    def records(self) -> list[dict[str, Any]]:
        """Every record of every log, parsed (read straight from the demo's SQLite store)."""
        from ledgergate.store.ledger_store import open_ledger_store

        store = open_ledger_store(f"sqlite:///{self.dir / 'ledgergate.db'}")
        try:
            return [json.loads(bytes(r)) for log_id, _ in store.logs()
                    for chunk in store.iter_leaves(log_id) for _, _, r in chunk]
        finally:
            store.close()

    def stop(self) -> None:
        self.proc.stop()


def start_demo(base: Path) -> Demo:
    data_dir = base / "data"
    port = free_port()
    log = base / "demo.log"
    proc = Proc([sys.executable, "-m", "ledgergate.cli", "demo", "--port", str(port), "--data-dir", str(data_dir)],
                env={"PYTHONUNBUFFERED": "1"}, cwd=base, port=port, log=log)
    running = Demo(proc, port, data_dir, log, {})
    deadline = time.monotonic() + 60
    while READY not in running.output():
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"the demo did not become ready:\n{running.output()[-3000:]}")
        time.sleep(0.1)
    running.tokens = json.loads((data_dir / "tokens.json").read_text())
    return running
