"""GET /api/v1/audit/records/{log}/{index}/proof on a real gateway: only for auditors, the answer is a
tlog-proof `audit verify-proof` accepts, and every wrong request gets its own precise status."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.support import gateway as gw
from tests.support.oidc import Provider


def test_record_proof_for_auditors_verifies_offline(gateway: gw.RunningGateway, provider: Provider,
                                                      tmp_path_factory: object) -> None:
    auditor = {"Authorization": f"Bearer {provider.token('ann', ['auditors'])}"}
    staff = {"Authorization": f"Bearer {provider.token('alice', ['staff'])}"}
    with httpx.Client(base_url=gateway.base, timeout=30) as http:
        refused = http.post("/mcp/everything", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                            headers={"Accept": "application/json, text/event-stream"})
        assert refused.status_code == 401  # an auth.denied record, so the log has at least one
        note = http.get("/api/v1/audit/checkpoint", headers=auditor)
        assert note.status_code == 200, note.text
        log_id = note.text.split("\n", 1)[0].removeprefix("ledgergate/")
        deadline = time.monotonic() + 10
        while True:  # the gateway signs a checkpoint every second; wait for one that covers record 0
            r = http.get(f"/api/v1/audit/records/{log_id}/0/proof", headers=auditor)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"] == f'attachment; filename="{log_id}-0.tlog-proof"'
        assert r.text.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 0\n" in r.text
        assert http.get(f"/api/v1/audit/records/{log_id}/0/proof").status_code == 401
        assert http.get(f"/api/v1/audit/records/{log_id}/0/proof", headers=staff).status_code == 403
        assert http.get("/api/v1/audit/records/no-such-log/0/proof", headers=auditor).status_code == 404
        assert http.get(f"/api/v1/audit/records/{log_id}/99999999/proof", headers=auditor).status_code == 404
        assert http.get(f"/api/v1/audit/records/{log_id}/-1/proof", headers=auditor).status_code == 400
        assert http.get(f"/api/v1/audit/records/{log_id}/%C2%B2/proof", headers=auditor).status_code == 400
    path = gateway.dir / "record0.tlog-proof"
    path.write_text(r.text)
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "audit", "verify-proof", str(path),
                          "--public-key", str(gateway.dir / "data" / "ledger.key.pub")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ok record 0 of log {log_id}" in run.stdout
