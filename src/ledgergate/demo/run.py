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
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shlex
import signal
import socket
import sys
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
    """How to run `ledgergate` again from this shell: the script that is running now (say
    `.venv/bin/ledgergate`, whose venv need not be activated), else the one beside this
    interpreter, else this interpreter with `-m`."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "ledgergate":
        return shlex.quote(str(argv0))
    beside = Path(sys.executable).parent / "ledgergate"
    if beside.exists():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m ledgergate.cli"


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


def write_config(data_dir: Path, port: int, issuer: DevIdentityProvider) -> LoadedConfig:
    path = data_dir / "ledgergate.yaml"
    text = CONFIG_HEADER.format(path=path, cli=cli_command()) + yaml.safe_dump(demo_settings(port, issuer), sort_keys=False, width=100)
    path.write_text(text, encoding="utf-8")
    return load_config(path)


EXAMPLE_CLIENT = '''\
"""Call the demo bank through ledgergate with the official MCP Python SDK.

    export ALICE_TOKEN=...        # printed by `ledgergate demo`
    python {path}
"""
import asyncio
import os

import httpx
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

URL = "{url}"


async def main() -> None:
    token = os.environ["ALICE_TOKEN"]
    auth = {{"Authorization": f"Bearer {{token}}"}}
    async with httpx.AsyncClient(headers=auth, timeout=60) as http:
        transport = streamable_http_client(URL, http_client=http)
        async with Client(transport, mode="auto") as client:
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
    return (f"curl -s {url} -H \"Authorization: Bearer ${env_var}\" "
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
    """The gateway is served exactly as `ledgergate serve` serves it; the issuer plainly."""
    import uvicorn

    from ledgergate.app import uvicorn_config

    class EmbeddedServer(uvicorn.Server):
        # Both servers share one loop; run_demo owns SIGINT/SIGTERM and stops them in order.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    host, port = sock.getsockname()[:2]
    if gateway:
        return EmbeddedServer(uvicorn_config(app, host, port, limits))
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
    port = config.settings.port
    url = f"http://{HOST}:{port}/mcp/{SERVER}"
    cfg = config.path
    p = console.print
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
    p(f"  Data           {data_dir}", soft_wrap=True)
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
    p(f"  {cli_command()} approvals list --config {cfg}", soft_wrap=True, highlight=False, markup=False)
    p(f"  {cli_command()} approvals approve APPROVAL_ID --reason \"checked with the customer\" --by bob "
      f"--config {cfg}", soft_wrap=True, highlight=False, markup=False)
    p(f"  curl -s -X POST {api}/APPROVAL_ID/approve -H \"Authorization: Bearer $BOB_TOKEN\" "
      "-H 'Content-Type: application/json' -d '{\"reason\": \"checked with the customer\"}'",
      soft_wrap=True, highlight=False, markup=False)
    p(f"  [dim]pending approvals: curl -s {api}?status=pending -H \"Authorization: Bearer $BOB_TOKEN\"[/dim]",
      soft_wrap=True)
    p()
    p("[bold]Tokens[/bold] — paste into your shell:")
    for u in USERS:
        p(f"export {u.env_var}={tokens[u.name]}", soft_wrap=True, highlight=False, markup=False)
    p(f"[dim](also in {data_dir / 'tokens.json'})[/dim]", soft_wrap=True)
    p()
    p(f"[bold]Python SDK[/bold] — {example} (run it with ALICE_TOKEN exported, with this interpreter, which "
      f"has the SDK: {shlex.quote(sys.executable)} {example}):", soft_wrap=True, highlight=False)
    p(Syntax(example.read_text(encoding="utf-8").split('"""', 2)[2].lstrip("\n"), "python",
             theme="ansi_dark", background_color="default"))
    p("[bold]curl[/bold] — one stateless (2026-07-28) request:")
    p(curl_line(url, "ALICE_TOKEN"), soft_wrap=True, highlight=False, markup=False)
    p()
    p(f"[bold]Audit ledger[/bold]  {data_dir / 'ledgergate.db'} (signing key {data_dir / 'ledger.key'}, "
      f"witness {data_dir / 'witness.log'})", soft_wrap=True)
    cli = cli_command()
    p(f"  {cli} audit verify --config {cfg}", soft_wrap=True, highlight=False, markup=False)
    p(f"  {cli} policy check --config {cfg} --subject carol --groups contractors --server bank "
      "--tool export_customers", soft_wrap=True, highlight=False, markup=False)
    p(f"  curl -s http://{HOST}:{port}/api/v1/audit/checkpoint -H \"Authorization: Bearer "
      f"${next(u for u in USERS if u.name == AUDITOR).env_var}\"   [dim]# {AUDITOR} is in 'auditors'[/dim]",
      soft_wrap=True, highlight=False)
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


async def _serve(port: int, data_dir: Path, console: Console) -> None:
    from ledgergate.app import Gateway

    gateway_sock = _bind_gateway(port)
    issuer_sock = _bind_issuer(port)
    issuer_port = issuer_sock.getsockname()[1]
    issuer = DevIdentityProvider(f"http://{HOST}:{issuer_port}", max_lifetime=TOKEN_LIFETIME,
                                 users={u.name: DevUser(u.groups, u.kind) for u in USERS})
    try:
        config = write_config(data_dir, port, issuer)
    except ConfigError as exc:  # a bug in the demo's own config; say so plainly
        raise DemoError(f"the generated config is invalid: {exc}") from None
    gateway = Gateway(config)

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
    try:
        await _wait_started(idp_server, idp_task, "development issuer")
        gw_task = asyncio.create_task(gw_server.serve(sockets=[gateway_sock]))
        await _wait_started(gw_server, gw_task, "gateway")

        tokens = {u.name: issuer.mint(u.name, u.groups, kind=u.kind, lifetime=TOKEN_LIFETIME, name=u.name)
                  for u in USERS}
        tokens_path = data_dir / "tokens.json"
        tokens_path.write_text(json.dumps(tokens, indent=2) + "\n", encoding="utf-8")
        tokens_path.chmod(0o600)
        example = data_dir / "example_client.py"
        example.write_text(EXAMPLE_CLIENT.format(path=example, url=f"http://{HOST}:{port}/mcp/{SERVER}"),
                           encoding="utf-8")
        _print_banner(console, config, issuer, tokens, data_dir, example)

        await gw_task  # returns once should_exit is set (signal) or the server fails
    finally:
        if gw_task is not None and not gw_task.done():
            gw_server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await gw_task
        idp_server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await idp_task
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for sock in (gateway_sock, issuer_sock):
            sock.close()
    console.print(f"stopped; the ledger stays in {data_dir} — "
                  f"{cli_command()} audit verify --config {config.path}", soft_wrap=True, highlight=False,
                  markup=False)


def run_demo(port: int = 8080, data_dir: Path | None = None) -> None:
    """Run the gateway, the demo bank server and the development issuer until Ctrl-C / SIGTERM."""
    console = make_console()
    _configure_logging(make_console(stderr=True))
    data_dir = (data_dir or default_data_dir()).expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        make_console(stderr=True).print(f"[red]error[/red] cannot create {escape(str(data_dir))}: {exc.strerror}",
                                        soft_wrap=True)
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
        make_console(stderr=True).print(f"[red]error[/red] {exc}", soft_wrap=True, highlight=False)
        raise SystemExit(1) from None
