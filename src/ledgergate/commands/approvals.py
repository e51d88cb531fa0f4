"""`ledgergate approvals list|show|approve|deny`: decide held calls from a terminal.

The CLI acts as an operator identity named by `--by` (default: the OS user).
That name is a label, not a checked identity: whoever can run this command
against the store decides as anyone not the requester, approver group or not
(docs/security.md §3). Every view of the decision says so: "NAME (CLI
operator, unverified)" in `approvals show`, `sessions replay` and the console;
the record has `operator: true` and the issuer `ledgergate-cli`.
It reads the configured store directly, so it sees every approval; its
decisions follow the same rules as everyone's (never the requester's own
call, one person counts once, a reason always) and are recorded in the
ledger before they take effect — in the CLI's own log (`<replica>-cli`), so it
never writes into a running gateway's log. On PostgreSQL the gateway holding
the call wakes at once (NOTIFY); on SQLite it notices within a second.

Exit status: 0 done; 1 refused (unknown id, not pending, not allowed, bad
reason); 2 bad config or usage; 3 the store or the ledger could not record it
(nothing was applied).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ledgergate.approvals import model
from ledgergate.approvals.service import AppendFn, ApprovalService, open_store
from ledgergate.audit.sessions import CLI_OPERATOR, decider_label, is_cli_decision
from ledgergate.commands.common import (
    EXIT_USAGE,
    ConfigOption,
    load_or_exit,
    open_cli_ledger,
    os_user,
    require_store,
)
from ledgergate.config import LoadedConfig
from ledgergate.errors import GatewayError, LedgerUnavailable
from ledgergate.store.approvals_store import ApprovalStore
from ledgergate.ui.visible import shown

app = typer.Typer(no_args_is_help=True, help="List, show, approve and deny held calls (just-in-time approvals).")
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_REFUSED, EXIT_UNAVAILABLE = 1, 3
JsonOption = typer.Option(False, "--json", help="Machine-readable output.")
ByOption = typer.Option(None, "--by", help="Who decides: an operator label, recorded as given and not verified "
                                           "(shown as 'NAME (CLI operator, unverified)'); default the OS user. "
                                           "`issuer#subject` names an IdP identity exactly.")
ReasonOption = typer.Option(..., "--reason", help="Why (recorded in the ledger and shown to the requester).")


def _store(loaded: LoadedConfig) -> ApprovalStore[model.Approval]:
    try:
        return open_store(loaded.settings.storage, loaded.base_dir)
    except ValueError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None


def _fail(exc: GatewayError) -> typer.Exit:
    err.print(f"[red]error[/red] {escape(exc.message)}")
    unavailable = isinstance(exc, (LedgerUnavailable, model.ApprovalUnavailable))
    return typer.Exit(EXIT_UNAVAILABLE if unavailable else EXIT_REFUSED)


async def _no_ledger(event: str, fields: Any) -> None:
    raise LedgerUnavailable("the CLI reads approvals without writing records")


async def _with_service(loaded: LoadedConfig, fn: Any, *, write: bool) -> Any:
    """Run `fn(service)` with the store open (and, to write, the CLI's own ledger log)."""
    s = loaded.settings
    ledger = None
    append: AppendFn = _no_ledger
    if write:
        try:
            ledger = await open_cli_ledger(loaded)
        except LedgerUnavailable as exc:
            raise LedgerUnavailable(f"{exc.message}; nothing was decided") from None
        append = ledger.append
    service = ApprovalService(_store(loaded), append, s.approvals, listen=False)
    try:
        await service.start(background=False)
        return await fn(service)
    finally:
        await service.close()
        if ledger is not None:
            await ledger.close()


def _run(loaded: LoadedConfig, fn: Any, *, write: bool = False) -> Any:
    # every verb reads or decides approvals that are there already: a store that is not is named, never made
    require_store(loaded, "approvals", unavailable=EXIT_UNAVAILABLE)
    try:
        return asyncio.run(_with_service(loaded, fn, write=write))
    except GatewayError as exc:
        raise _fail(exc) from None


def _show(text: str) -> str:
    """Outside text for the terminal: hidden characters (a bidi override in an argument, an escape
    sequence in a token's subject) made visible (`ui/visible.py`), then escaped from Rich's markup."""
    return escape(shown(text))


def _print(approval: model.Approval) -> None:
    p = approval.public()
    out.print(f"[bold]{p['id']}[/bold]  {p['status']}")
    out.print(f"  requester  {_show(str(p['requester'].get('subject')))} ({_show(str(p['requester'].get('issuer')))})")
    out.print(f"  call       {_show(p['server'])} {_show(p['method'])} {_show(str(p['target'] or ''))}")
    out.print(f"  arguments  {_show(json.dumps(p['arguments'], ensure_ascii=False))}  (masked)")
    out.print(f"  rule       {_show(p['rule'])} (policy {_show(p['policy_version'])})")
    out.print(f"  approvers  {_show(model.describe_approvers(approval.approvers))}; {p['approvals']} so far")
    if p["justification"]:
        out.print(f"  why        {_show(p['justification'])}")
    out.print(f"  created    {p['created']}   expires {p['expires']}")
    for d in p["decisions"]:
        who = decider_label(_show(str(d["approver"])), is_cli_decision(d.get("operator"), d.get("approver_key")))
        out.print(f"  {d['verdict']:<9}  {who} at {d['time']}: {_show(d['reason'])}")
    if p["granted_until"]:
        out.print(f"  granted until {p['granted_until']}")
    if p["executed_at"]:
        out.print(f"  executed   {p['executed_at']} (request {_show(str(p['executed_request_id']))})")
    if p["close_reason"]:
        out.print(f"  closed     {_show(p['close_reason'])}")


@app.command("list")
def list_approvals(
    config: Path = ConfigOption,
    status: str = typer.Option("pending", "--status", help=f"One of {', '.join(model.STATUSES)}, or 'all'."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    as_json: bool = JsonOption,
) -> None:
    """List approvals, newest first (default: the pending ones)."""
    if status != "all" and status not in model.STATUSES:
        err.print(f"[red]error[/red] --status must be one of {', '.join(model.STATUSES)} or all")
        raise typer.Exit(EXIT_USAGE)
    loaded = load_or_exit(config)
    found: list[model.Approval] = _run(loaded, lambda svc: svc.list(None if status == "all" else status, limit))
    if as_json:
        print(json.dumps([a.public() for a in found], ensure_ascii=False))
        return
    if not found:
        out.print(f"no {'' if status == 'all' else status + ' '}approvals")
        return
    table = Table()
    # the id is what the next command needs (`approvals approve ID`): never cut, whatever the terminal's width
    table.add_column("id", no_wrap=True, min_width=max(len(a.id) for a in found))
    for heading in ("status", "requester", "call", "rule", "approvals", "expires"):
        table.add_column(heading)
    for a in found:
        p = a.public()
        table.add_row(a.id, a.status, _show(str(p["requester"].get("subject"))),
                      _show(f"{p['server']} {p['target'] or p['method']}"), _show(p["rule"]),
                      f"{a.approvals}/{a.approvers.count}", str(p["expires"]))
    out.print(table)


@app.command("show")
def show(approval_id: str = typer.Argument(..., metavar="ID"), config: Path = ConfigOption,
         as_json: bool = JsonOption) -> None:
    """Show one approval: the call (arguments masked), who may decide, decisions so far."""
    loaded = load_or_exit(config)
    approval: model.Approval = _run(loaded, lambda svc: svc.get(approval_id))
    if as_json:
        print(json.dumps(approval.public(), ensure_ascii=False))
    else:
        _print(approval)


def _decide(verdict: str, approval_id: str, reason: str, config: Path, by: str | None, as_json: bool) -> None:
    loaded = load_or_exit(config)
    who = model.operator_principal(by or os_user())
    if not who.subject:
        err.print("[red]error[/red] --by must name someone")
        raise typer.Exit(EXIT_USAGE)
    approval: model.Approval = _run(loaded, lambda svc: svc.decide(approval_id, who, verdict, reason), write=True)
    if as_json:
        print(json.dumps(approval.public(), ensure_ascii=False))
        return
    out.print(f"{'approved' if verdict == 'approve' else 'denied'} {approval.id} as {escape(who.subject)} ({CLI_OPERATOR}): "
              f"now {approval.status} ({approval.approvals}/{approval.approvers.count} approvals)")


@app.command("approve")
def approve(approval_id: str = typer.Argument(..., metavar="ID"), reason: str = ReasonOption,
            config: Path = ConfigOption, by: str | None = ByOption, as_json: bool = JsonOption) -> None:
    """Approve a pending call (never your own)."""
    _decide("approve", approval_id, reason, config, by, as_json)


@app.command("deny")
def deny(approval_id: str = typer.Argument(..., metavar="ID"), reason: str = ReasonOption,
         config: Path = ConfigOption, by: str | None = ByOption, as_json: bool = JsonOption) -> None:
    """Deny a pending call; one deny ends it."""
    _decide("deny", approval_id, reason, config, by, as_json)
