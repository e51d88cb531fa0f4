"""A config that would identify nobody, through the real CLI and a real gateway (`ledgergate serve`) in
front of server-everything, with tokens from a real OpenID provider (probe report
/work/probe/ha/REPORT.md, defect 2):

- an empty document (0 bytes, blank lines, only comments, `null`, `~`, `---`) is a config error naming
  the file: `config validate` exits 2, `serve` does not start, and a reload (SIGHUP or the file watcher)
  is refused and recorded while the running config stays — before, it was taken as "every default" and
  dropped every issuer, so every caller got 401 while /readyz stayed 200;
- so is a config with no way to authenticate anyone (no issuer, API keys off), and a reload that would
  drop every issuer the running gateway trusts;
- /readyz is not ready while no configured issuer's keys are loaded, as docs/kubernetes.md §7 says,
  even with API keys on; an API-key-only gateway is ready once its key store answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml

from tests.support import gateway as gw
from tests.support.client import MODERN
from tests.support.oidc import Provider
from tests.support.procs import Proc, free_port, wait_port

pytestmark = pytest.mark.node

POLICIES = [{"name": "staff-echo", "match": {"groups": ["staff"], "servers": ["everything"], "tools": ["echo"]},
             "effect": "allow"}]
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
EMPTY = {"zero bytes": "", "blank lines": "\n   \n\n", "only comments": "# the config\n# comes later\n",
         "null": "null\n", "tilde": "~\n", "an empty document": "---\n...\n"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "COLUMNS": "400"})


@pytest.mark.parametrize("text", EMPTY.values(), ids=EMPTY.keys())
def test_config_validate_refuses_an_empty_config_naming_the_file(tmp_path: Path, text: str) -> None:
    config = tmp_path / "ledgergate.yaml"
    config.write_text(text)
    out = cli("config", "validate", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    said = " ".join(out.stderr.split())
    assert f"{config}: line 1: the config is empty" in said, said
    assert "ok" not in out.stdout


def test_serve_does_not_start_on_an_empty_config(tmp_path: Path) -> None:
    config = tmp_path / "ledgergate.yaml"
    config.write_text("")
    port = 8080  # the default `listen`, which an empty config would have served on
    proc = subprocess.Popen([sys.executable, "-m", "ledgergate.cli", "serve", "--config", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"serve started on an empty config (listening on {port})")
    assert proc.returncode == 2, err
    assert f"{config}: line 1: the config is empty" in " ".join(err.split())
    assert not (tmp_path / "data").exists()  # nothing was created: no ledger, no key


def test_a_config_that_could_authenticate_nobody_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "ledgergate.yaml"
    config.write_text("listen: 127.0.0.1:1\n"
                      "servers:\n  everything: {url: 'http://127.0.0.1:1/mcp'}\n"
                      "identity:\n  api_keys: false\n")
    out = cli("config", "validate", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    said = " ".join(out.stderr.split())
    assert f"{config}: line 4: identity: no caller could ever be authenticated" in said, said
    # one way in is enough: an issuer, or API keys
    config.write_text(config.read_text().replace("api_keys: false", "api_keys: true"))
    assert cli("config", "validate", "--config", str(config), cwd=tmp_path).returncode == 0


# ── reload ──────────────────────────────────────────────────────────────────
class Running:
    def __init__(self, gateway: gw.RunningGateway, idp: Provider) -> None:
        self.gateway = gateway
        self.idp = idp
        self.path = gateway.dir / "ledgergate.yaml"
        self.good = self.path.read_text()
        self.reader = self.path.with_name("reader.yaml")  # the CLI reads the ledger with the good config
        self.reader.write_text(self.good)

    def records(self) -> list[dict[str, Any]]:
        out = cli("audit", "tail", "-n", "100000", "--config", str(self.reader), cwd=self.gateway.dir)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]

    def reloads(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event"] in ("config.reloaded", "config.reload_refused")]

    async def echo(self, message: str) -> httpx.Response:
        async with self.gateway.http(self.idp.token("alice", ["staff"])) as http:
            return await http.post(self.gateway.url("everything"), headers={
                "Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "tools/call", "Mcp-Name": "echo"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": message}, "_meta": META}})

    async def ready(self) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.get(f"{self.gateway.base}/readyz")

    async def next_reload(self, seen: int, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(self.reloads)
            if len(found) > seen:
                assert len(found) == seen + 1, found[seen:]
                return found[-1]
            await asyncio.sleep(0.3)
        raise AssertionError(f"no reload was recorded within {timeout}s")

    async def serves_as_before(self) -> None:
        r = await self.echo("still served")
        assert r.status_code == 200 and "result" in r.json(), r.text
        ready = await self.ready()
        assert ready.status_code == 200, ready.text


@pytest_asyncio.fixture()
async def running(tmp_path: Path, idp: Provider, upstream: Proc) -> AsyncIterator[Running]:
    gateway = await asyncio.to_thread(gw.start, tmp_path, idp.issuer,
                                      {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES)
    try:
        yield Running(gateway, idp)
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_a_reload_of_an_empty_file_is_refused_and_the_running_config_stays(running: Running) -> None:
    await running.serves_as_before()
    pid = running.gateway.proc.proc.pid
    seen = 0
    # truncated to 0 bytes, then SIGHUP (a `> file` typo, a save that stalls half-way)
    running.path.write_text("")
    os.kill(pid, signal.SIGHUP)
    refused = await running.next_reload(seen)
    seen += 1
    assert refused["event"] == "config.reload_refused" and refused["trigger"] == "SIGHUP", refused
    assert f"{running.path}: line 1: the config is empty" in refused["error"], refused
    await running.serves_as_before()
    # only comments, found by the file watcher (a ConfigMap caught empty): no SIGHUP needed to refuse it
    running.path.write_text("# placeholder: the config is rendered at deploy time\n")
    refused = await running.next_reload(seen)
    seen += 1
    assert refused["event"] == "config.reload_refused" and refused["trigger"] == "file change", refused
    assert "the config is empty" in refused["error"]
    await running.serves_as_before()
    # a whole config that lost its identity block: valid, but it would turn away every token
    doc = yaml.safe_load(running.good)
    del doc["identity"]
    running.path.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.kill(pid, signal.SIGHUP)
    refused = await running.next_reload(seen)
    seen += 1
    assert refused["event"] == "config.reload_refused", refused
    assert "identity.oidc: the new config lists no issuer, while the running one trusts 1" in refused["error"]
    await running.serves_as_before()
    # and a good change still applies after all of that
    doc = yaml.safe_load(running.good)
    doc["policies"].insert(0, {"name": "no-secrets", "match": {"tools": ["echo"]},
                               "when": 'args.message.startsWith("secret")', "effect": "deny"})
    running.path.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.kill(pid, signal.SIGHUP)
    applied = await running.next_reload(seen)
    assert applied["event"] == "config.reloaded" and applied["applied"] == ["policies"], applied
    denied = await running.echo("secret plans")
    assert denied.json()["error"]["data"]["rule"] == "no-secrets", denied.text
    await running.serves_as_before()


# ── readiness ───────────────────────────────────────────────────────────────
async def test_readyz_is_not_ready_while_no_issuers_keys_are_loaded_even_with_api_keys_on(
        tmp_path: Path, upstream: Proc) -> None:
    """docs/kubernetes.md §7: not ready while no issuer's keys are loaded. API keys (on by default) do not
    stand in for the IdP: their store is the ledger's own database, so "api_keys: ok" holds whenever the
    ledger does, and such a replica would stay in the Service answering 401 to every person and workload."""
    dead_issuer = f"http://127.0.0.1:{free_port()}"
    gateway = await asyncio.to_thread(gw.start, tmp_path, dead_issuer,
                                      {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{gateway.base}/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["ready"] is False and body["checks"]["ledger"] == "ok", body
        assert body["checks"]["identity"]["api_keys"] == "ok"
        assert body["checks"]["identity"][dead_issuer].startswith("no usable keys"), body
        assert body["checks"]["authentication"].startswith("no issuer's keys are loaded"), body
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_an_api_key_only_gateway_is_ready_and_serves(tmp_path: Path, upstream: Proc) -> None:
    """No issuer at all, API keys on: a deliberate deployment, ready once the key store answers."""
    tmp_path.mkdir(exist_ok=True)
    port = free_port()
    config = gw.write_config(tmp_path, port, "http://unused.invalid",
                             {"everything": {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}, POLICIES,
                             {"identity": {"api_keys": True}})
    proc = Proc([sys.executable, "-m", "ledgergate.cli", "serve", "--config", str(config)],
                env={"PYTHONUNBUFFERED": "1"}, cwd=tmp_path, port=port, log=tmp_path / "gateway.log")
    try:
        wait_port(port, proc.proc)
        made = cli("apikeys", "create", "--name", "ci", "--groups", "staff", "--expires", "1d", "--json",
                   "--config", str(config), cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)["key"]
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {key}"}) as http:
            r = await http.get(f"http://127.0.0.1:{port}/readyz")
            assert r.status_code == 200 and r.json()["checks"]["identity"] == {"api_keys": "ok"}, r.text
            call = await http.post(f"http://127.0.0.1:{port}/mcp/everything", headers={
                "Accept": "application/json", "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "tools/call", "Mcp-Name": "echo"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "by key"}, "_meta": META}})
            assert call.status_code == 200 and "result" in call.json(), call.text
    finally:
        proc.stop()
