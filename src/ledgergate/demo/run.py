"""`ledgergate demo`: the whole product in one process, nothing to install or configure.

One event loop serves two uvicorn servers on 127.0.0.1:

- the development OpenID issuer (`DevIdentityProvider`) on `port + 1` (or any
  free port), whose signing key lives only in this process, and
- the gateway on `port`, fronting the demo bank MCP server (`bank`, a stdio
  child process) with demo policies, masking and the audit ledger.

The data dir defaults to a per-user state directory (`$XDG_STATE_HOME/ledgergate/demo`,
else `~/.local/state/ledgergate/demo`), never the current directory: it holds a private
signing key and bearer tokens, which have no business inside a git checkout.
The generated config is written to `<data_dir>/ledgergate.yaml` and loaded from
there, so the CLI verbs (`audit verify`, `policy check`, ...) work on the
demo's data while it runs and after it stops. The database, ledger key and
witness file live in `data_dir` and survive restarts; the tokens do not (a new
issuer key every run).

The printout is for people, but the token lines (`export ALICE_TOKEN=...`) are
stable and machine-findable, and `<data_dir>/tokens.json` holds the same tokens.
Every path and URL in a line meant for a shell is shell-quoted.

One demo per data dir: a running demo holds `<data_dir>/demo.lock` (its pid inside), and a
second one, or one whose ledger a `ledgergate serve` holds, refuses before it writes anything,
in one line naming the folder and the pid. Whatever stops a start is one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from ledgergate.config import ConfigError, LimitsSettings, LoadedConfig, load_config
from ledgergate.demo.idp import DevIdentityProvider, DevUser
from ledgergate.principal import PrincipalKind
from ledgergate.store.db import parent_problem
from ledgergate.terminal import console as make_console

HOST = "127.0.0.1"
SERVER = "bank"
TOKEN_LIFETIME = 8 * 3600.0  # the issuer's max_token_lifetime is set to the same value
APPROVAL_THRESHOLD = 10_000

log = logging.getLogger("ledgergate.demo")


@dataclass(frozen=True)
class DemoUser:
    name: str
    kind: PrincipalKind
    groups: tuple[str, ...]
    may: str

    @property
    def env_var(self) -> str:
        return self.name.upper().replace("-", "_") + "_TOKEN"


USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "human", ("analysts",),
             "all bank tools, resources and prompts; transfers over $10,000 need approval; "
             "PII partially masked"),
    DemoUser("bob", "human", ("approvers", "analysts", "auditors"),
             "as alice, approves large transfers, and reads the audit API"),
    DemoUser("carol", "human", ("contractors",),
             "lookup/list tools, PII redacted; export_customers denied"),
    DemoUser("nightly-ci", "service", ("ci",),
             "list_transactions only"),
)

AUDITOR = "bob"  # in `auditors`, the default audit.reader_groups


def default_data_dir() -> Path:
    """Where the demo keeps its ledger, key and tokens unless told otherwise: per user, outside
    any checkout (XDG base directories: state that survives restarts)."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "ledgergate" / "demo"


def cli_command() -> str:
    """How to run `ledgergate` again, from any folder: the absolute path of the script that is running
    now (started as `.venv/bin/ledgergate`, whose venv need not be activated, it is printed as
    `/home/me/project/.venv/bin/ledgergate`: the relative form failed from any other folder), else
    the one beside this interpreter, else this interpreter with `-m`."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "ledgergate":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)  # a bare name was found on PATH
        if found:
            return shlex.quote(os.path.abspath(found))
    beside = Path(os.path.abspath(sys.executable)).parent / "ledgergate"
    if beside.exists():
        return shlex.quote(str(beside))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -m ledgergate.cli"


STANDARD_DETECTORS = ["US_SSN", "CREDIT_CARD", "US_BANK_ACCOUNT", "ABA_ROUTING", "IBAN", "EMAIL", "PHONE", "SECRET"]
#: contractors and CI see no customer's name, street address or date of birth either
STRICT_DETECTORS = [*STANDARD_DETECTORS, "PERSON", "ADDRESS", "DATE_OF_BIRTH"]

POLICIES: list[dict[str, Any]] = [
    {"name": "analysts-read",
     "description": "Analysts look customers up, read transactions and export; PII partially masked.",
     "match": {"groups": ["analysts"], "servers": [SERVER],
               "tools": ["lookup_customer", "list_transactions", "export_customers"]},
     "effect": "allow", "mask": "standard"},
    {"name": "analysts-operations",
     "description": "Analysts move money and use the interactive tools.",
     "match": {"groups": ["analysts"], "servers": [SERVER],
               "tools": ["transfer_funds", "confirm_large_action", "summarize_customer", "slow_report"]},
     "effect": "allow", "mask": "standard"},
    {"name": "analysts-resources-prompts",
     "match": {"groups": ["analysts"], "servers": [SERVER], "resources": ["bank://*"], "prompts": ["fraud_review"]},
     "effect": "allow", "mask": "standard"},
    {"name": "analysts-client-requests",
     "description": "The bank server may ask an analyst's client for a confirmation (elicitation) or an LLM call "
                    "(sampling); server-to-client requests are refused unless a rule names them.",
     "match": {"groups": ["analysts"], "servers": [SERVER],
               "methods": ["elicitation/create", "sampling/createMessage"]},
     "effect": "allow"},
    {"name": "contractors-read",
     "description": "Contractors may use read-only tools, with PII redacted.",
     "match": {"groups": ["contractors"], "servers": [SERVER], "tools": ["lookup_*", "list_*", "export_*"]},
     "effect": "allow", "mask": "strict"},
    {"name": "ci-transactions-only",
     "description": "The nightly CI job reconciles transactions and may do nothing else.",
     "match": {"groups": ["ci"], "kinds": ["service"], "servers": [SERVER], "tools": ["list_transactions"]},
     "effect": "allow", "mask": "strict"},
    {"name": "large-transfers-need-approval",
     "description": "Deny beats approve beats allow: this holds for every caller.",
     "match": {"servers": [SERVER], "tools": ["transfer_funds"]},
     "when": f"double(args.amount) > {APPROVAL_THRESHOLD}.0",
     "effect": "approve", "approvers": {"groups": ["approvers"], "count": 1}},
    {"name": "no-bulk-export-for-contractors",
     "description": "Deny beats allow: contractors-read matches export_*, this rule wins.",
     "match": {"groups": ["contractors"], "tools": ["export_customers"]},
     "effect": "deny"},
]


def demo_settings(port: int, issuer: DevIdentityProvider) -> dict[str, Any]:
    """The demo's config document; paths are relative to the data dir (where the file is written)."""
    oidc = issuer.issuer_settings().model_dump(mode="json", exclude_defaults=True)
    oidc.update({"issuer": issuer.issuer, "audience": issuer.audience, "groups_claim": "groups",
                 "max_token_lifetime": issuer.max_lifetime})
    return {
        "listen": f"{HOST}:{port}",
        "data_dir": ".",
        "storage": "sqlite:///./ledgergate.db",
        "identity": {"oidc": [oidc]},
        "servers": {SERVER: {"command": [sys.executable, "-m", "ledgergate.demo.bank_server"]}},
        "policies": POLICIES,
        "masking": {"profiles": {
            "standard": {"detectors": STANDARD_DETECTORS, "operator": "partial"},
            "strict": {"detectors": STRICT_DETECTORS, "operator": "redact"},
        }},
        "public_url": f"http://{HOST}:{port}",
        "approvals": {"timeout": "10m", "console_url": f"http://{HOST}:{port}/ui/approvals"},
        "console": {"issuer": issuer.issuer, "client_id": "ledgergate-console",
                    "roles": {"approver": ["approvers"], "auditor": ["approvers", "auditors"],
                              "admin": ["approvers", "admins"]},
                    "session_ttl": "8h"},
        "audit": {"signing_key": "./ledger.key", "checkpoint_interval": "5s", "replica": "demo",
                  "witnesses": ["file://./witness.log"]},
        "log_level": "warning",
    }


CONFIG_HEADER = """\
# Written by `ledgergate demo` on every start (the development issuer's port and key
# change per run, so tokens from an earlier run no longer verify). The ledger, its key
# and the witness file in this folder persist across runs.
#   {cli} audit verify --config {path}
#   {cli} policy check --config {path} --subject carol --groups contractors \\
#       --server bank --tool export_customers
"""


def q(path: Path | str) -> str:
    """A path or URL as a shell reads it back: every one the demo prints is pasted into a shell, and a
    data dir with a space (or a URL with `?`, which zsh globs) must arrive as one word."""
    return shlex.quote(str(path))


def write_text(path: Path, text: str) -> None:
    """A file of the data dir written, or DemoError naming it and why not (a full disk, no permission)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DemoError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_config(data_dir: Path, port: int, issuer: DevIdentityProvider) -> LoadedConfig:
    path = data_dir / "ledgergate.yaml"
    text = CONFIG_HEADER.format(path=q(path), cli=cli_command()) + yaml.safe_dump(demo_settings(port, issuer), sort_keys=False, width=100)
    write_text(path, text)
    return load_config(path)


EXAMPLE_CLIENT = '''\
"""Call the demo bank through ledgergate with the official MCP Python SDK.

    export ALICE_TOKEN=...        # printed by `ledgergate demo`
    python {path}            # stateless 2026-07-28: every call stands alone, no session
    python {path} --legacy   # initialize handshake: a session to list and replay
"""
import asyncio
import os
import sys

import httpx
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

URL = "{url}"
# "auto" discovers the server and speaks the stateless revision 2026-07-28 to it;
# "legacy" opens a session (initialize, Mcp-Session-Id) that `ledgergate sessions` lists.
MODE = "legacy" if "--legacy" in sys.argv[1:] else "auto"


async def main() -> None:
    token = os.environ["ALICE_TOKEN"]
    auth = {{"Authorization": f"Bearer {{token}}"}}
    async with httpx.AsyncClient(headers=auth, timeout=60) as http:
        transport = streamable_http_client(URL, http_client=http)
        async with Client(transport, mode=MODE) as client:
            tools = await client.list_tools()
            print("tools:", [t.name for t in tools.tools])
            result = await client.call_tool(
                "lookup_customer", {{"customer_id": "C-1001"}}
            )
            print(result.content[0].text)


asyncio.run(main())
'''


def curl_line(url: str, env_var: str) -> str:
    body = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "lookup_customer", "arguments": {"customer_id": "C-1001"},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                             "io.modelcontextprotocol/clientCapabilities": {},
                             "io.modelcontextprotocol/clientInfo": {"name": "curl", "version": "1"}}},
    }, separators=(",", ":"))
    return (f"curl -s {q(url)} -H \"Authorization: Bearer ${env_var}\" "
            "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' "
            "-H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' -H 'Mcp-Name: lookup_customer' "
            f"-d '{body}'")


# ── sockets and servers ─────────────────────────────────────────────────────


class DemoError(Exception):
    pass


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _bind_gateway(port: int) -> socket.socket:
    try:
        return _bind(port)
    except OSError as exc:
        why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise DemoError(f"port {HOST}:{port} {why}; pick another with --port") from None


def _bind_issuer(port: int) -> socket.socket:
    if port + 1 < 65536:
        with contextlib.suppress(OSError):
            return _bind(port + 1)
    return _bind(0)


def _uvicorn_server(app: Any, sock: socket.socket, gateway: bool, limits: LimitsSettings | None = None) -> Any:
    """The gateway is served as `ledgergate serve` serves it (same protocol, limits and options), except
    that the demo starts and stops it itself (`_start_gateway`), so uvicorn runs no lifespan for it; the
    issuer plainly."""
    import uvicorn

    from ledgergate.app import uvicorn_config

    class EmbeddedServer(uvicorn.Server):
        # Both servers share one loop; run_demo owns SIGINT/SIGTERM and stops them in order.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn ends a failed start with sys.exit() inside the server's task, which would escape
            # the event loop as a traceback; stopped here, `_wait_started` reports it in one line
            try:
                await super().startup(sockets=sockets)
            except SystemExit:
                self.should_exit = True

    host, port = sock.getsockname()[:2]
    if gateway:
        config = uvicorn_config(app, host, port, limits)
        config.lifespan = "off"
        return EmbeddedServer(config)
    return EmbeddedServer(uvicorn.Config(app, host=host, port=port, lifespan="auto", interface="asgi3",
                                         http="auto", log_config=None, access_log=False, server_header=False,
                                         timeout_graceful_shutdown=1))


async def _wait_started(server: Any, task: asyncio.Task[None], what: str) -> None:
    while not server.started:
        if task.done():
            exc = task.exception()
            raise DemoError(f"the {what} did not start" + (f": {exc}" if exc else " (see the log above)"))
        await asyncio.sleep(0.02)


# ── output ──────────────────────────────────────────────────────────────────


def _print_banner(console: Console, config: LoadedConfig, issuer: DevIdentityProvider,
                  tokens: dict[str, str], data_dir: Path, example: Path) -> None:
    """Everything printed is pasted into a shell as it stands: paths and URLs are shell-quoted (`q`),
    and lines with Rich markup escape them."""
    port = config.settings.port
    url = f"http://{HOST}:{port}/mcp/{SERVER}"
    cfg = q(config.path or data_dir / "ledgergate.yaml")
    cli = cli_command()
    p = console.print

    def command(line: str) -> None:  # a line to paste: printed exactly, no markup, no highlighting
        p(line, soft_wrap=True, highlight=False, markup=False)

    p()
    p("[bold]ledgergate demo[/bold] — an identity-aware, audited gateway in front of a fictional bank's MCP server",
      soft_wrap=True)
    p()
    p(f"  MCP endpoint   [bold cyan]{url}[/bold cyan]", soft_wrap=True)
    p(f"  Web console    [bold cyan]http://{HOST}:{port}/ui/[/bold cyan]  [dim](sign in as bob to approve)[/dim]",
      soft_wrap=True)
    issuer_port = issuer.issuer.rsplit(":", 1)[1]
    p(f"  Issuer (OIDC)  {issuer.issuer}  [dim](the demo's second port, {issuer_port}: a development identity "
      "provider whose key lives in this process)[/dim]", soft_wrap=True)
    p(f"  Upstream       {SERVER}: the demo bank MCP server over stdio", soft_wrap=True)
    p(f"  Data           {escape(q(data_dir))}", soft_wrap=True)
    p()

    table = Table(title=f"Demo identities (tokens valid {TOKEN_LIFETIME / 3600:g} h)", title_justify="left",
                  show_lines=False, expand=False)
    table.add_column("user", style="bold")
    table.add_column("kind")
    table.add_column("groups")
    table.add_column("policy lets them", overflow="fold")
    for u in USERS:
        table.add_row(u.name, u.kind, ", ".join(u.groups), u.may)
    p(table)
    p()
    p("[bold]Policies[/bold] (ordered; default deny; deny beats approve beats allow):")
    for rule in POLICIES:
        colour = {"allow": "green", "deny": "red", "approve": "yellow"}[rule["effect"]]
        extra = f" when {rule['when']}" if "when" in rule else ""
        mask = f", mask {rule['mask']}" if rule.get("mask") else ""
        p(f"  [{colour}]{rule['effect']:<7}[/{colour}] {rule['name']}{extra}{mask}", soft_wrap=True)
    p()
    api = f"http://{HOST}:{port}/api/v1/approvals"
    p(f"[bold]Approvals[/bold] — transfer_funds over ${APPROVAL_THRESHOLD:,} waits for one of 'approvers' (bob), "
      "never the requester. Alice's call is held (up to 50 s, with progress notices naming the approval "
      "and where to decide it) and runs once, as soon as bob approves:", soft_wrap=True)
    command(f"  {cli} approvals list --config {cfg}")
    command(f"  {cli} approvals approve APPROVAL_ID --reason \"checked with the customer\" --by bob --config {cfg}")
    command(f"  curl -s -X POST {q(api + '/APPROVAL_ID/approve')} -H \"Authorization: Bearer $BOB_TOKEN\" "
            "-H 'Content-Type: application/json' -d '{\"reason\": \"checked with the customer\"}'")
    p("  [dim]pending approvals:[/dim]", soft_wrap=True)
    command(f"  curl -s {q(api + '?status=pending')} -H \"Authorization: Bearer $BOB_TOKEN\"")
    p()
    p("[bold]Tokens[/bold] — paste into your shell:")
    for u in USERS:
        command(f"export {u.env_var}={tokens[u.name]}")
    p(f"[dim](also in {escape(q(data_dir / 'tokens.json'))})[/dim]", soft_wrap=True)
    p()
    python = q(os.path.abspath(sys.executable))
    p(f"[bold]Python SDK[/bold] — {escape(q(example))}, run with ALICE_TOKEN exported, with this interpreter, which "
      "has the SDK:", soft_wrap=True, highlight=False)
    command(f"  {python} {q(example)}")
    p(Syntax(example.read_text(encoding="utf-8").split('"""', 2)[2].lstrip("\n"), "python",
             theme="ansi_dark", background_color="default"))
    p("It speaks the stateless revision 2026-07-28 (mode=\"auto\" finds it here): every call stands alone, so it "
      "opens no session and `sessions list` and the console's Sessions page show none for it. For a session "
      "to list and replay, run it in legacy mode (initialize handshake, Mcp-Session-Id):", soft_wrap=True,
      highlight=False, markup=False)
    command(f"  {python} {q(example)} --legacy")
    command(f"  {cli} sessions list --config {cfg}")
    command(f"  {cli} sessions replay SESSION_ID --config {cfg}")
    p("[bold]curl[/bold] — one stateless (2026-07-28) request:")
    command(curl_line(url, "ALICE_TOKEN"))
    p()
    p(f"[bold]Audit ledger[/bold]  {escape(q(data_dir / 'ledgergate.db'))} (signing key "
      f"{escape(q(data_dir / 'ledger.key'))}, witness {escape(q(data_dir / 'witness.log'))})", soft_wrap=True)
    command(f"  {cli} audit verify --config {cfg}")
    command(f"  {cli} policy check --config {cfg} --subject carol --groups contractors --server bank "
            "--tool export_customers")
    auditor = next(u for u in USERS if u.name == AUDITOR).env_var
    p(f"  curl -s {escape(q(f'http://{HOST}:{port}/api/v1/audit/checkpoint'))} -H \"Authorization: Bearer "
      f"${auditor}\"   [dim]# {AUDITOR} is in 'auditors'[/dim]", soft_wrap=True, highlight=False)
    p()
    p("[green]ledgergate demo is running[/green] — press Ctrl-C to stop.")


# ── the run ─────────────────────────────────────────────────────────────────


def _configure_logging(console: Console) -> None:
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    else:  # a pipe or a file: one plain line per record, never wrapped
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


LOCK_NAME = "demo.lock"
#: the demo's log id (`audit.replica`); the gateway claims it in `<db>.<log id>.lock` (store/claims.py)
REPLICA = "demo"


def _take_data_dir(data_dir: Path) -> int:
    """The data dir, this demo's while it runs: an exclusive `flock` on `<data_dir>/demo.lock`, which
    holds the pid, taken before anything in the folder is written. A second demo on the same folder
    would rewrite the running one's config, which that one reloads, and every token it printed would
    stop verifying; so it is refused here, naming the folder and the pid. The kernel drops the lock
    when the process ends, even after kill -9. The file stays: deleting a lock file lets two
    processes hold a lock each, one on the deleted file and one on its successor."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DemoError(f"cannot use {data_dir} as the data dir: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = ""
            for _ in range(50):  # the holder writes its pid just after it locks
                holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
                if holder:
                    break
                time.sleep(0.02)
        finally:
            os.close(fd)
        raise DemoError(f"a demo is already running on {data_dir} ({holder or 'a process that did not say its pid'}); "
                        "stop it, or give this one its own --data-dir") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the lock is what counts; the pid only helps the next refusal
    return fd


def _check_ledger_free(data_dir: Path) -> None:
    """Nothing else writes the demo's log: a `ledgergate serve` on this folder's config, or a demo of
    an earlier version (which took no data dir lock), holds the gateway's claim on it. Asked the way the
    gateway will ask when it starts, and let go at once; a refusal names the holder and its pid."""
    from ledgergate.store.claims import ClaimRefused, LogClaim
    from ledgergate.store.db import StoreURL
    from ledgergate.store.ledger_store import StoreError

    db = data_dir / "ledgergate.db"
    try:
        LogClaim(StoreURL("sqlite", str(db)), REPLICA).release()
    except ClaimRefused:
        claim = db.with_name(f"{db.name}.{REPLICA}.lock")
        try:
            holder = claim.read_text(errors="replace").strip()
        except OSError:
            holder = ""
        raise DemoError(f"the demo's ledger in {data_dir} is in use by another gateway "
                        f"({holder or 'a process that did not say its pid'}); stop it, or give this demo its own "
                        "--data-dir") from None
    except StoreError as exc:
        raise DemoError(f"cannot use the demo's ledger in {data_dir}: {exc}") from None


async def _start_gateway(gateway: Any) -> None:
    """The gateway's start (ledger, claim, stores), run here rather than in uvicorn's lifespan, so a
    failure is the demo's one line instead of uvicorn's error lines and an exit from inside a task."""
    try:
        await gateway.start()
    except Exception as exc:  # noqa: BLE001 - whatever stops it, the user gets one line
        with contextlib.suppress(Exception):
            await gateway.stop()
        raise DemoError(f"the gateway did not start: {exc}") from None


async def _serve(port: int, data_dir: Path, console: Console) -> None:
    lock = _take_data_dir(data_dir)
    try:
        await _serve_locked(port, data_dir, console)
    finally:
        os.close(lock)


async def _serve_locked(port: int, data_dir: Path, console: Console) -> None:
    from ledgergate.app import Gateway

    _check_ledger_free(data_dir)
    gateway_sock = _bind_gateway(port)
    try:
        issuer_sock = _bind_issuer(port)
    except OSError as exc:
        gateway_sock.close()
        raise DemoError(f"no port for the development issuer on {HOST}: {exc.strerror or exc}") from None
    try:
        await _run(port, data_dir, console, gateway_sock, issuer_sock, Gateway)
    finally:
        for sock in (gateway_sock, issuer_sock):
            sock.close()


async def _run(port: int, data_dir: Path, console: Console, gateway_sock: socket.socket,
               issuer_sock: socket.socket, gateway_class: Any) -> None:
    issuer_port = issuer_sock.getsockname()[1]
    issuer = DevIdentityProvider(f"http://{HOST}:{issuer_port}", max_lifetime=TOKEN_LIFETIME,
                                 users={u.name: DevUser(u.groups, u.kind) for u in USERS})
    try:
        config = write_config(data_dir, port, issuer)
    except ConfigError as exc:  # a bug in the demo's own config; say so plainly
        raise DemoError(f"the generated config is invalid: {exc}") from None
    try:
        gateway = gateway_class(config)
    except Exception as exc:  # noqa: BLE001 - one line, whatever it is
        raise DemoError(f"the gateway could not be built: {exc}") from None

    idp_server = _uvicorn_server(issuer.app, issuer_sock, gateway=False)
    gw_server = _uvicorn_server(gateway.asgi, gateway_sock, gateway=True, limits=config.settings.limits)

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():  # a second Ctrl-C: stop now, skip graceful waits
            gw_server.force_exit = idp_server.force_exit = True
        stopping.set()
        gw_server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    idp_task = asyncio.create_task(idp_server.serve(sockets=[issuer_sock]))
    gw_task: asyncio.Task[None] | None = None
    started = False
    try:
        await _wait_started(idp_server, idp_task, "development issuer")
        await _start_gateway(gateway)  # the issuer answers by now: the gateway's identity start asks it
        started = True
        gw_task = asyncio.create_task(gw_server.serve(sockets=[gateway_sock]))
        await _wait_started(gw_server, gw_task, "gateway")

        tokens = {u.name: issuer.mint(u.name, u.groups, kind=u.kind, lifetime=TOKEN_LIFETIME, name=u.name)
                  for u in USERS}
        tokens_path = data_dir / "tokens.json"
        write_text(tokens_path, json.dumps(tokens, indent=2) + "\n")
        tokens_path.chmod(0o600)
        example = data_dir / "example_client.py"
        write_text(example, EXAMPLE_CLIENT.format(path=q(example), url=f"http://{HOST}:{port}/mcp/{SERVER}"))
        _print_banner(console, config, issuer, tokens, data_dir, example)

        await gw_task  # returns once should_exit is set (signal) or the server fails
    finally:
        if gw_task is not None and not gw_task.done():
            gw_server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await gw_task
        if started:  # after uvicorn closed the connections, as its lifespan's shutdown would
            with contextlib.suppress(Exception):
                await gateway.stop()
        idp_server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await idp_task
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print(f"stopped; the ledger stays in {q(data_dir)} — "
                  f"{cli_command()} audit verify --config {q(config.path or data_dir / 'ledgergate.yaml')}",
                  soft_wrap=True, highlight=False, markup=False)


def _data_dir_problem(data_dir: Path, exc: OSError) -> str:
    """Why the data dir cannot be made, in plain words ("File exists" means a file is in the way)."""
    if data_dir.exists() and not data_dir.is_dir():
        return f"{data_dir} is a file, not a directory"
    return parent_problem(data_dir) or str(exc.strerror or exc)


def run_demo(port: int = 8080, data_dir: Path | None = None) -> None:
    """Run the gateway, the demo bank server and the development issuer until Ctrl-C / SIGTERM.
    Whatever stops it from starting is one line on stderr and a non-zero exit, never a traceback."""
    console = make_console()
    _configure_logging(make_console(stderr=True))
    data_dir = (data_dir or default_data_dir()).expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        make_console(stderr=True).print(f"[red]error[/red] cannot create the data dir {escape(str(data_dir))}: "
                                        f"{escape(_data_dir_problem(data_dir, exc))}", soft_wrap=True)
        raise SystemExit(2) from None
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the bank server's stderr reaches the log promptly
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(_serve(port, data_dir, console))
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(_serve(port, data_dir, console))
    except DemoError as exc:
        make_console(stderr=True).print(f"[red]error[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise SystemExit(1) from None
