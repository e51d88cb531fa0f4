"""The identity fixes seen from outside a real gateway (`ledgergate serve`, a real OpenID provider):
`/readyz` (no authentication, by design for probes) and the log never quote a JWKS URL's credentials,
and `ledgergate config validate` refuses an off-boarding entry that could never match."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import gateway as gw
from tests.support.integration import POLICIES
from tests.support.oidc import Provider
from tests.support.upstream import RecordingUpstream

pytestmark = pytest.mark.node


async def test_readyz_and_the_log_redact_a_jwks_url_with_credentials(tmp_path: Path, provider: Provider) -> None:
    port = provider.issuer.rsplit(":", 1)[1]
    upstream = RecordingUpstream()
    await upstream.start()
    running = None
    try:
        running = await asyncio.to_thread(gw.start, tmp_path, provider.issuer, {"rec": {"url": upstream.url}}, POLICIES,
                                          {"identity": {"api_keys": False, "oidc": [{
                                              "issuer": provider.issuer, "audience": "ledgergate",
                                              "jwks_uri": f"http://user:PASSWD@127.0.0.1:{port}/nokeys?key=URLSECRET"}]}})
        async with httpx.AsyncClient(timeout=30) as http:
            ready = await http.get(f"{running.base}/readyz")
        assert ready.status_code == 503
        said = ready.json()["checks"]["identity"][provider.issuer]
        assert said == f"no usable keys: ValueError: JWKS at http://127.0.0.1:{port}/nokeys?… answered HTTP 404"
        messages = "\n".join(json.loads(line).get("message", "") for line in running.log().splitlines()
                              if line.startswith("{"))
        for text in (ready.text, running.log(), messages):
            assert "PASSWD" not in text and "URLSECRET" not in text and "user:" not in text
        assert f"127.0.0.1:{port}/nokeys?… answered HTTP 404" in messages  # the log still says which endpoint
        assert f"GET http://127.0.0.1:{port}/nokeys?… " in messages  # and so does httpx's own request line
    finally:
        if running is not None:
            await asyncio.to_thread(running.stop)
        await upstream.stop()


def test_config_validate_refuses_an_offboarding_entry_for_an_issuer_not_configured(tmp_path: Path,
                                                                                   provider: Provider) -> None:
    path = gw.write_config(tmp_path, 8080, provider.issuer, {"rec": {"url": "http://127.0.0.1:9/mcp"}}, POLICIES)
    doc = yaml.safe_load(path.read_text())
    typo = provider.issuer.replace("http://", "https://") + "#alice"
    for entries, ok in (([provider.issuer + "/#alice", "apikey:ci", "ledgergate:apikey#apikey:ci"], True),
                        (["bob", typo], False)):
        doc["identity"]["disabled_subjects"] = entries
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        check = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "--config", str(path)],
                               capture_output=True, text=True, timeout=60, check=False)
        if ok:
            assert check.returncode == 0, check.stderr
            continue
        assert check.returncode == 2, (check.stdout, check.stderr)
        line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if typo in text)
        said = " ".join(check.stderr.split())
        assert f"line {line}: identity.disabled_subjects[1]:" in said, said
        assert f"configured issuers: '{provider.issuer}'" in said, said
