"""`ledgergate tools list|accept`: review and accept changed tool definitions (drift).

Exit status: 0 ok; 1 nothing to accept (unknown tool, no pending change, or
the pending fingerprint is not the one given with --fingerprint); 2 bad config.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import time
from pathlib import Path

import typer
from rich.markup import escape

from ledgergate.commands.common import ConfigOption, load_or_exit, require_store
from ledgergate.config import LoadedConfig
from ledgergate.store.fingerprints_store import (
    FingerprintRecord,
    FingerprintStore,
    NothingToAccept,
)
from ledgergate.terminal import console

app = typer.Typer(no_args_is_help=True, help="Tool definitions seen on upstream servers (drift control).")
out = console()
err = console(stderr=True)


def _store(loaded: LoadedConfig) -> FingerprintStore:
    """The store the config names; never a new one: both verbs read, or change only a tool seen there."""
    require_store(loaded, "tool_fingerprints")
    try:
        return FingerprintStore.open(loaded.settings.storage, loaded.base_dir)
    except Exception as exc:  # a bad URL or an unreachable database: say which
        err.print(f"[red]error[/red] storage {escape(loaded.settings.storage)}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_json(r: FingerprintRecord) -> dict[str, object]:
    return {
        "server": r.server, "tool": r.tool, "status": r.status,
        "accepted_fingerprint": r.accepted_fp, "accepted_at": _when(r.accepted_at), "accepted_by": r.accepted_by,
        "pending_fingerprint": r.pending_fp, "pending_seen_at": _when(r.pending_seen_at),
        "changed_fields": r.changed_fields,
    }


@app.command("list")
def list_tools(
    config: Path = ConfigOption,
    server: str | None = typer.Option(None, "--server", help="Only this server."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List every tool seen per server, its accepted fingerprint and any pending (changed) definition."""
    loaded = load_or_exit(config)
    with _store(loaded) as store:
        records = store.list(server)
    if as_json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return
    if not records:
        out.print("no tools seen yet (the gateway records them on the first tools/list)")
        return
    for r in records:
        line = (f"{escape(r.server)}/{escape(r.tool)}  accepted {r.accepted_fp[:16]} "
                f"({escape(r.accepted_by)}, {_when(r.accepted_at)})")
        if r.pending_fp:
            line += (f"  [red]changed[/]: pending {r.pending_fp[:16]} ({_when(r.pending_seen_at)}), "
                     f"fields {', '.join(r.changed_fields)}")
        out.print(line, highlight=False)


@app.command("accept")
def accept(
    server: str = typer.Argument(..., help="Server name as in the config."),
    tool: str = typer.Argument(..., help="Tool name."),
    config: Path = ConfigOption,
    fingerprint: str | None = typer.Option(
        None, "--fingerprint", help="Accept only if the pending fingerprint starts with this (as shown by list)."
    ),
    by: str | None = typer.Option(None, "--by", help="Who accepts (recorded); default the OS user."),
) -> None:
    """Accept a tool's changed (pending) definition: calls to it are no longer blocked."""
    loaded = load_or_exit(config)
    who = by or _os_user()
    with _store(loaded) as store:
        try:
            record = store.accept(server, tool, time.time(), who, expected_fp=fingerprint)
        except NothingToAccept as exc:
            err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
    out.print(f"accepted {escape(server)}/{escape(tool)}: fingerprint {record.accepted_fp} (by {escape(who)})",
              highlight=False)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "cli"
