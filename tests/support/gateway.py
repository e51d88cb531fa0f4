"""A real gateway (`ledgergate serve`) in front of real upstreams, for integration tests."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.procs import ROOT, Proc, free_port, start_gateway

BANK_ARGV = [sys.executable, "-m", "ledgergate.demo.bank_server"]
STATELESS_ARGV = [sys.executable, str(ROOT / "tests" / "servers" / "stateless_server.py")]


@dataclass
class RunningGateway:
    proc: Proc
    port: int
    dir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, server: str) -> str:
        return f"{self.base}/mcp/{server}"

    def http(self, token: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(headers=headers, timeout=30)

    def log(self) -> str:
        return (self.dir / "gateway.log").read_text(errors="replace")

    def stop(self) -> None:
        self.proc.stop()

    def records(self) -> list[dict[str, Any]]:
        """Every record of every log in the gateway's store, each log in order: what `audit tail` prints,
        read in this process (a CLI process per look cost a test seconds where importing is slow)."""
        from ledgergate.store.ledger_store import open_ledger_store

        config = yaml.safe_load((self.dir / "ledgergate.yaml").read_text())
        store = open_ledger_store(str(config.get("storage", "sqlite:///./data/ledgergate.db")), self.dir)
        try:
            return [json.loads(row.record) for log_id, _ in store.logs()
                    for row in store.rows(log_id, 0, store.size(log_id))]
        finally:
            store.close()


AUDIT = {"signing_key": "./data/ledger.key", "checkpoint_interval": "1s", "witnesses": ["file://./data/witness.log"]}


def write_config(directory: Path, port: int, issuer: str, servers: dict[str, Any],
                 policies: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    config = {
        "listen": f"127.0.0.1:{port}",
        "data_dir": "./data",
        "storage": "sqlite:///./data/ledgergate.db",
        "identity": {"oidc": [{"issuer": issuer, "audience": "ledgergate", "groups_claim": "groups",
                               "max_token_lifetime": "1h"}]},
        "servers": servers,
        "policies": policies,
        "masking": {"profiles": {"standard": {"detectors": ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT",
                                                            "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"],
                                              "operator": "partial"}}},
        "audit": AUDIT,
        **(extra or {}),
    }
    path = directory / "ledgergate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start(directory: Path, issuer: str, servers: dict[str, Any], policies: list[dict[str, Any]],
          extra: dict[str, Any] | None = None, port: int | None = None) -> RunningGateway:
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = write_config(directory, port, issuer, servers, policies, extra)
    proc = start_gateway(config, port, directory / "gateway.log")
    return RunningGateway(proc, port, directory)
