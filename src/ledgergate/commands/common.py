"""What every CLI verb shares: the `--config` option, loading a config with operator-ready errors, and
the CLI's own ledger log for what an operator does from a terminal."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from ledgergate.config import ConfigError, LoadedConfig, load_config
from ledgergate.errors import LedgerUnavailable
from ledgergate.terminal import console

if TYPE_CHECKING:
    from ledgergate.audit.ledger import Ledger

ConfigOption = typer.Option(..., "--config", "-c", help="Path to the YAML config file.")
EXIT_USAGE = 2

_err = console(stderr=True)


def load_or_exit(path: Path) -> LoadedConfig:
    """The config, or each problem (key and line) on stderr and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            _err.print(f"[red]error[/red] {escape(exc.source)}: {escape(problem)}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def shown(value: str, limit: int = 40) -> str:
    """A caller's value quoted in an error, cut short: an error names the problem, it does not echo."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "…'"


def os_user() -> str:
    """Who runs the CLI, as the operating system names them."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return "operator"


async def open_cli_ledger(loaded: LoadedConfig) -> Ledger:
    """The CLI's own log in the configured ledger (`<replica>-cli`: a log of its own, so a terminal
    never contends with a running gateway for the gateway's log); LedgerUnavailable if it cannot open."""
    from ledgergate.audit.ledger import Ledger

    s = loaded.settings
    replica = f"{s.audit.replica or socket.gethostname()}-cli"
    audit = s.audit.model_copy(update={"replica": replica, "checkpoint_interval": 0})
    try:
        return await Ledger.open(audit, s.storage, loaded.base_dir)
    except LedgerUnavailable:
        raise
    except Exception as exc:  # a key that cannot be read or made: nothing can be recorded
        raise LedgerUnavailable(f"the audit ledger cannot be opened ({type(exc).__name__}: {exc})") from None


async def record_cli(loaded: LoadedConfig, event: str, fields: dict[str, Any]) -> int:
    """One durable record in the CLI's log."""
    ledger = await open_cli_ledger(loaded)
    try:
        return await ledger.append(event, fields)
    finally:
        await ledger.close()
