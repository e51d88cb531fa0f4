"""`ledgergate apikeys create|list|revoke`: manage last-resort API keys in the configured store.

The key is printed exactly once, by `create`; afterwards only its hash exists.
`list` shows last-used times so keys of people who left are easy to spot.
Issuing and revoking a credential are recorded in the ledger (the CLI's log, `<replica>-cli`): who
did it from which account, the key's id, name and groups, never the key. A key whose record cannot
be written is revoked at once and not shown; a revocation stands even if its record cannot be written
(the safe direction), and the command says so and fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ledgergate.commands.common import (
    EXIT_USAGE,
    ConfigOption,
    check_creatable,
    load_or_exit,
    os_user,
    record_cli,
    require_store,
    shown,
)
from ledgergate.config import LoadedConfig
from ledgergate.durations import parse_duration
from ledgergate.errors import LedgerUnavailable
from ledgergate.identity.apikeys import create_key, revoke_key, subject_for
from ledgergate.store.apikeys_store import ApiKeyRecord, ApiKeyStore
from ledgergate.store.db import StoreURL
from ledgergate.terminal import console

app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys (hashed, expiring, revocable).")
out = console()
err = console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Machine-readable output.")
EXIT_UNAVAILABLE = 3  # as the other verbs that write records: the ledger could not record it


def _existing_store(loaded: LoadedConfig) -> ApiKeyStore:
    """For `list` and `revoke`: the store the config names, never a new one (exit 2 when it is not there)."""
    require_store(loaded, "api_keys")
    return _store(loaded)


def _check_name(name: str) -> None:
    """The rule `create_key` applies, checked before anything is opened: a bad value is a usage error."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        err.print(f"[red]error[/red] --name: a key name is 1-100 characters without spaces "
                  f"(got {escape(shown(name))})", highlight=False)
        raise typer.Exit(EXIT_USAGE)


def _store(loaded: LoadedConfig) -> ApiKeyStore:
    try:
        store = ApiKeyStore(StoreURL.parse(loaded.settings.storage, loaded.base_dir))
        store.open()
    except Exception as exc:
        err.print(f"[red]error[/red] cannot open the store: {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    return store


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_json(record: ApiKeyRecord, now: float) -> dict[str, object]:
    return {
        "id": record.id, "name": record.name, "subject": subject_for(record.name),
        "groups": list(record.groups), "created_at": _when(record.created_at),
        "expires_at": _when(record.expires_at) if record.expires_at else None,
        "revoked_at": _when(record.revoked_at) if record.revoked_at else None,
        "last_used_at": _when(record.last_used_at) if record.last_used_at else None,
        "state": record.state(now),
    }


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Who or what uses the key (unique among active keys)."),
    groups: str = typer.Option("", "--groups", help="Comma-separated groups for policy, e.g. ci,readers."),
    expires: str = typer.Option("90d", "--expires", help="Lifetime with a unit: 30d, 12h, 10m or 45s (s, m, h, d, "
                                "as durations are written in the config), or 'never'. A bare number is refused."),
    config: Path = ConfigOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a key and print it once; only its SHA-256 is stored."""
    _check_name(name)
    loaded = load_or_exit(config)
    if not loaded.settings.identity.api_keys:
        err.print("[yellow]warning[/yellow] identity.api_keys is false: the gateway will not accept this key")
    try:
        if re.fullmatch(r"\s*[0-9]+(?:\.[0-9]*)?\s*", expires):
            # the config's parser reads a bare number as seconds: `--expires 5` made a key that died in 5 s
            raise ValueError(f"{expires.strip()!r} has no unit; write it with one: s, m, h or d "
                             "(e.g. 30d, 12h, 10m, 45s), or 'never'")
        lifetime = None if expires.strip().lower() == "never" else parse_duration(expires)
        if lifetime is not None and lifetime <= 0:
            raise ValueError("--expires must be positive")
    except ValueError as exc:
        err.print(f"[red]error[/red] --expires: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    check_creatable(loaded)
    store = _store(loaded)
    try:
        created = create_key(store, name, groups.split(","), lifetime)
        record = created.record
        try:
            asyncio.run(record_cli(loaded, "apikey.created", {**_evidence(record), "by": _operator()}))
        except LedgerUnavailable as exc:
            revoke_key(store, record.id)  # an unrecorded credential is never handed out
            err.print(f"[red]error[/red] {escape(exc.message)}; the key was revoked and not shown", highlight=False)
            raise typer.Exit(EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps({**_as_json(record, time.time()), "key": created.key}))
        return
    out.print(f"created API key [bold]{record.id}[/bold] for {record.name} "
              f"(subject {subject_for(record.name)}, groups {','.join(record.groups) or '-'}, "
              f"expires {_when(record.expires_at) if record.expires_at else 'never'})", highlight=False)
    out.print("The key is shown only now; store it in a secret manager:", highlight=False)
    print(created.key)


@app.command("list")
def list_keys(config: Path = ConfigOption, as_json: bool = JsonOption) -> None:
    """List keys (never the keys themselves) with state, expiry and last use."""
    store = _existing_store(load_or_exit(config))
    try:
        records = store.all()
    finally:
        store.close()
    now = time.time()
    if as_json:
        print(json.dumps([_as_json(r, now) for r in records]))
        return
    table = Table("name", "groups", "state", "created", "expires", "last used")
    table.add_column("id", no_wrap=True, min_width=15)
    for r in records:
        table.add_row(r.name, ",".join(r.groups), r.state(now), _when(r.created_at),
                      _when(r.expires_at), _when(r.last_used_at), r.id)
    out.print(table)


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., metavar="ID", help="Key id (or its name)."),
           config: Path = ConfigOption) -> None:
    """Revoke a key; the gateway refuses it on its next request."""
    loaded = load_or_exit(config)
    store = _existing_store(loaded)
    try:
        record = revoke_key(store, key_id)
    except LookupError as exc:
        err.print(f"[red]error[/red] {exc.args[0]}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.close()
    out.print(f"revoked API key {record.id} ({record.name}) at {_when(record.revoked_at)}", highlight=False)
    try:
        asyncio.run(record_cli(loaded, "apikey.revoked", {**_evidence(record), "by": _operator()}))
    except LedgerUnavailable as exc:
        err.print(f"[red]error[/red] the key is revoked, but {escape(exc.message)}: the revocation is not in "
                  "the ledger", highlight=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from None


def _evidence(record: ApiKeyRecord) -> dict[str, object]:
    """What the ledger keeps of a key: enough to tell two keys of one name apart, never the key."""
    return {"key_id": record.id, "name": record.name, "subject": subject_for(record.name),
            "groups": list(record.groups), "expires": _when(record.expires_at) if record.expires_at else None,
            "via": "cli"}


def _operator() -> dict[str, str]:
    return {"issuer": "ledgergate-cli", "subject": os_user(), "kind": "human"}
