"""`config validate` refuses what `serve` would refuse or run unusably, each as a load error naming the
key and the line (probe report /work/probe/newuser #2, #3, #9, #11): upstream URLs that cannot be
connected to (and never their password in any message), log levels, storage URLs, witnesses, zero
timeouts, `listen`, `public_url`, empty audiences and group claims, approvals that expire while held,
`tool_drift` naming an unconfigured server, durations for `limits.session_idle_timeout`, and config
paths that are not regular files or are too big."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledgergate import config as config_module
from ledgergate.config import ConfigError, load_config, parse_config
from ledgergate.upstream.h1 import Origin

SECRET = "Hunter2Secret"
MAX_CONFIG_BYTES = 1024 * 1024  # what the loader must cap at (checked below)
SERVERS = "servers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\n"
BASE = "identity: {api_keys: true}\n" + SERVERS


def _with_base(text: str) -> str:
    return text + (SERVERS if text.startswith("identity:") else BASE)


def _problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml", env=env or {})
    return caught.value.problems


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    return subprocess.run([sys.executable, "-m", "ledgergate.cli", *args], env={**base, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


# --- #2: upstream URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "words"), [
    ("http://svc:${UP_PW}@/mcp", "needs a host"),
    ("http://", "needs a host"),
    ("https://svc:${UP_PW}@127.0.0.1:99999/mcp", "port must be a number from 1 to 65535"),
    ("http://svc:${UP_PW}@127.0.0.1:0/mcp", "port must be a number from 1 to 65535"),
    ("http://svc:${UP_PW}@127.0.0.1:80x/mcp", "port must be a number from 1 to 65535"),
    ("http://svc:${UP_PW}@[zz]/mcp", "IPv6"),
    ("http://svc:${UP_PW}@a b/mcp", "spaces or control characters"),
    ("http://svc:${UP_PW}@h/mcp#frag", "fragment"),
    ("ftp://svc:${UP_PW}@h/mcp", "must start with http:// or https://"),
])
def test_an_unusable_upstream_url_is_a_load_error_that_never_shows_the_url(url: str, words: str) -> None:
    text = f"identity: {{api_keys: true}}\nservers:\n  a:\n    url: \"{url}\"\n"
    problems = _problems(text, env={"UP_PW": SECRET})
    assert len(problems) == 1, problems
    assert problems[0].startswith("line 3: servers.a: 'url' "), problems
    assert words in problems[0], problems
    assert SECRET not in problems[0] and "svc" not in problems[0], problems


@pytest.mark.parametrize("url", ["http://127.0.0.1:3001/mcp", "https://u:p@mcp.example.com/x?k=v",
                                 "http://[::1]:8080/mcp", "http://svc_1.ns.svc.cluster.local/mcp",
                                 "unix:///run/mcp.sock"])
def test_usable_upstream_urls_still_load(url: str) -> None:
    parse_config(f"identity: {{api_keys: true}}\nservers:\n  a: {{url: '{url}'}}\n", env={})


def test_the_http_client_never_puts_userinfo_in_its_errors() -> None:
    for url in (f"http://svc:{SECRET}@/mcp", f"http://svc:{SECRET}@h:99999/mcp", f"http://svc:{SECRET}@[zz/mcp",
                f"ftp://svc:{SECRET}@h/mcp"):
        with pytest.raises(ValueError) as caught:
            Origin.of(url)
        assert SECRET not in str(caught.value) and "svc" not in str(caught.value), caught.value


def test_validate_refuses_and_serve_never_crashes_on_a_hostless_url_with_a_password(tmp_path: Path) -> None:
    cfg = tmp_path / "leak.yaml"
    cfg.write_text("listen: 127.0.0.1:1\nidentity: {api_keys: true}\nservers:\n  a: {url: \"http://svc:${UP_PW}@/mcp\"}\n"
                   f"storage: sqlite:///{tmp_path}/x.db\naudit: {{signing_key: {tmp_path}/k}}\n")
    for verb in ("config validate", "serve"):
        run = _cli(*verb.split(), "-c", str(cfg), env={"UP_PW": SECRET}, cwd=tmp_path)
        assert run.returncode == 2, (verb, run.returncode, run.stderr)
        assert "line 4: servers.a: 'url' needs a host" in run.stderr, run.stderr
        assert SECRET not in run.stderr + run.stdout and "this is a bug" not in run.stderr, run.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was created


# --- #3: what serve refuses or runs unusably -------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("log_level: verbose\n", "line 1: log_level: 'log_level' must be one of debug, info, warning, error, critical"),
    ("storage: 'mysql://root:pw@db/x'\n", "line 1: storage: 'storage' must be sqlite:///PATH or postgresql://"),
    ("storage: 'sqlite:///'\n", "line 1: storage: 'storage': sqlite:/// needs the database file's path"),
    ("storage: 'sqlite:///./data/'\n", "line 1: storage: 'storage': sqlite:/// needs the database file's path"),
    ("audit:\n  witnesses:\n    - file://./w.log\n    - gopher://x\n",
     "line 4: audit.witnesses[1]: a witness is file://PATH"),
    ("audit:\n  witnesses: ['file://']\n", "line 2: audit.witnesses[0]: file:// needs the witness file's path"),
    ("audit:\n  witnesses: ['https://tok:s3cret@/w']\n", "line 2: audit.witnesses[0]: the URL needs a host"),
    ("audit: {append_timeout: 0}\n", "line 1: audit.append_timeout: Input should be greater than 0"),
    ("listen: 'not a host:23251'\n", "line 1: listen: 'listen' must be host:port with a host name"),
    ("listen: 'exa_mple..com:8080'\n", "line 1: listen: 'listen' must be host:port with a host name"),
    ("listen: '[nope]:8080'\n", "line 1: listen: 'listen' must be host:port with a host name"),
    ("listen: '127.0.0.1:65536'\n", "line 1: listen: 'listen' must be host:port"),
    ("public_url: 'not a url'\n", "line 1: public_url: 'public_url' must be the absolute http(s) URL"),
    ("public_url: 'https://'\n", "it names no host"),
    ("public_url: 'https://gw.example.com:99999'\n", "it does not parse"),
    ("public_url: 'https://gw.example.com/#x'\n", "must not have a query"),
    ("identity:\n  api_keys: true\n  oidc:\n    - issuer: http://idp\n      audience: []\n",
     "line 5: identity.oidc[0].audience: an empty list names nothing"),
    ("identity:\n  api_keys: true\n  oidc:\n    - issuer: http://idp\n      audience: ''\n",
     "line 5: identity.oidc[0].audience: must be non-empty"),
    ("identity:\n  api_keys: true\n  oidc:\n    - issuer: http://idp\n      groups_claim: ''\n",
     "line 5: identity.oidc[0].groups_claim: must be non-empty"),
    ("identity:\n  api_keys: true\n  oidc:\n    - issuer: http://idp\n      groups_claim: []\n",
     "line 5: identity.oidc[0].groups_claim: an empty list names nothing"),
    ("console: {session_ttl: 0s}\n", "line 1: console.session_ttl: Input should be greater than 0"),
    ("approvals:\n  timeout: 1s\n  hold: 1h\n",
     "line 2: approvals.timeout: approvals.timeout (1s) must be longer than approvals.hold (3600s)"),
    ("approvals:\n  timeout: 50s\n", "line 2: approvals.timeout: approvals.timeout (50s) must be longer"),
    ("tool_drift:\n  servers:\n    nosuch: block\n", "line 3: tool_drift.servers.nosuch: 'nosuch' names no configured server"),
])
def test_what_serve_cannot_use_is_a_load_error_with_key_and_line(text: str, expected: str) -> None:
    problems = _problems(_with_base(text))
    assert any(expected in p for p in problems), problems
    assert all("mysql://root:pw" not in p and "s3cret" not in p for p in problems), problems


@pytest.mark.parametrize("text", [
    "log_level: DEBUG\n", "log_level: warning\n", "storage: 'postgresql://u:p@db:5432/x'\n",
    "storage: 'postgres://db/x'\n", "storage: 'sqlite:///./data/ledgergate.db'\n", "listen: '[::1]:8080'\n",
    "listen: '0.0.0.0:8080'\n", "listen: ':::8080'\n", "listen: 'gateway.internal:8080'\n",
    "public_url: 'https://mcp.example.com'\n", "public_url: 'http://127.0.0.1:8080/base/'\n",
    "audit: {witnesses: ['file://./data/witness.log', 'https://witness.example/add']}\n",
    "identity:\n  api_keys: true\n  oidc:\n    - {issuer: http://idp, audience: [a, b], groups_claim: [roles, groups]}\n",
    "approvals: {timeout: 10m}\n", "approvals: {timeout: 2m, hold: 1m}\n", "tool_drift: {servers: {bank: alert}}\n",
])
def test_legitimate_values_still_load(text: str) -> None:
    settings = parse_config(_with_base(text), "t.yaml", env={})
    assert settings.port > 0


def test_a_bracketed_ipv6_listen_address_is_served_without_its_brackets() -> None:
    settings = parse_config("listen: '[::1]:8080'\n" + BASE, env={})
    assert (settings.host, settings.port) == ("::1", 8080)


def test_every_problem_in_serve_is_the_same_line_as_in_validate(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE + "log_level: verbose\n" + f"storage: sqlite:///{tmp_path}/x.db\n")
    for verb in ("config validate", "serve"):
        run = _cli(*verb.split(), "-c", str(cfg), cwd=tmp_path)
        assert run.returncode == 2, (verb, run.stderr)
        assert "line 4: log_level:" in run.stderr and "this is a bug" not in run.stderr, run.stderr


# --- #9: limits.session_idle_timeout --------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [("30s", 30.0), ("1m", 60.0), ("90", 90.0), ("1.5", 1.5)])
def test_session_idle_timeout_is_a_duration(value: str, seconds: float) -> None:
    assert parse_config(f"limits: {{session_idle_timeout: {value}}}\n" + BASE, env={}).limits.session_idle_timeout \
        == seconds


@pytest.mark.parametrize("value", ["0", "0s", "-5"])
def test_session_idle_timeout_must_be_positive(value: str) -> None:
    problems = _problems(f"limits:\n  session_idle_timeout: {value}\n" + BASE)
    assert any(p.startswith("line 2: limits.session_idle_timeout: ") for p in problems), problems


# --- #11: what load_config reads -----------------------------------------------------------------

def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    run = _cli("config", "validate", "-c", str(fifo), timeout=20)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().endswith("cannot read the file: it is a named pipe (FIFO), not a regular file"), \
        run.stderr


def test_a_device_is_refused_before_it_is_read(tmp_path: Path) -> None:
    run = _cli("config", "validate", "-c", "/dev/zero", timeout=20)
    assert run.returncode == 2, run.stderr
    assert "/dev/zero: cannot read the file: it is a character device, not a regular file" in run.stderr, run.stderr


def test_a_config_bigger_than_the_cap_is_refused(tmp_path: Path) -> None:
    assert getattr(config_module, "MAX_CONFIG_BYTES", None) == MAX_CONFIG_BYTES
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(big)
    assert caught.value.problems == ["the file is larger than 1048576 bytes (1 MiB), the most a config may be"]
    fits = tmp_path / "fits.yaml"
    fits.write_text(BASE + "#" * (MAX_CONFIG_BYTES - len(BASE) - 1) + "\n")
    assert fits.stat().st_size == MAX_CONFIG_BYTES
    load_config(fits)


def test_crlf_files_still_load_with_the_same_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "crlf.yaml"
    cfg.write_bytes((BASE + "log_level: verbose\n").replace("\n", "\r\n").encode())
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    assert caught.value.problems[0].startswith("line 4: log_level:"), caught.value.problems
