"""What every CLI verb shares: the `--config` option, loading a config with operator-ready errors, and
the CLI's own ledger log for what an operator does from a terminal."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.markup import escape

from ledgergate.config import ConfigError, LoadedConfig, load_config
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.db import (
    StoreUnreachable,
    StoreURL,
    parent_problem,
    shown_url,
    store_absence,
)
from ledgergate.store.ledger_store import no_store_message
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


def store_url(loaded: LoadedConfig) -> StoreURL:
    """The config's `storage` parsed, or exit 2 naming it."""
    try:
        return StoreURL.parse(loaded.settings.storage, loaded.base_dir)
    except ValueError as exc:
        _err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def require_store(loaded: LoadedConfig, table: str, unavailable: int = EXIT_USAGE) -> None:
    """For a verb that reads, or changes only what is there already: exit 2 in one line when the
    config's `storage` holds no ledgergate store (no file, a folder, a database without its tables), so
    a mistyped path is named, not created and then reported empty. A store is one with the ledger's
    tables or the verb's own `table`. Exit `unavailable` when the database cannot be asked."""
    url = store_url(loaded)
    try:
        absent = store_absence(url, ("ledger_logs", table))
    except StoreUnreachable as exc:
        _err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(unavailable) from None
    if absent is not None:
        _err.print(f"[red]error[/red] storage: {escape(no_store_message('store', url, absent))}", highlight=False)
        raise typer.Exit(EXIT_USAGE)


def check_creatable(loaded: LoadedConfig) -> None:
    """For a verb that may create the store and the signing key (`serve`, `apikeys create`): exit 2
    naming the key and the file that stands where a folder of the SQLite path or of the key should be
    (the system's own words for it are "File exists")."""
    url = store_url(loaded)
    if url.kind == "sqlite":
        target = Path(url.target)
        problem = f"{target} is a folder, not a database" if target.is_dir() else parent_problem(target)
        if problem is not None:
            _err.print(f"[red]error[/red] storage: cannot create a store at {escape(shown_url(url))}: "
                       f"{escape(problem)}; check `storage` in the config", highlight=False)
            raise typer.Exit(EXIT_USAGE)
    key = loaded.resolve(loaded.settings.audit.signing_key)
    problem = parent_problem(key)
    if problem is not None:
        _err.print(f"[red]error[/red] audit.signing_key: cannot create {escape(str(key))}: {escape(problem)}",
                   highlight=False)
        raise typer.Exit(EXIT_USAGE)


def file_problem(path: Path, exc: OSError) -> str:
    """What is wrong with a file the command was told to read, in plain words (as `audit verify
    --witness-notes` says it), never Python's `[Errno 2] …`."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return parent_problem(path) or f"{path} does not exist"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a directory, not a file"
    if isinstance(exc, PermissionError):
        return f"{path} cannot be read: permission denied"
    return f"{path} cannot be read: {exc.strerror or exc}"


def read_input(path: Path, label: str, what: str, limit: int | None = None) -> bytes:
    """The bytes of a file named on the command line, or exit 2 with one line naming the argument
    (`label`: `--public-key`, `BUNDLE`), the file and what is wrong with it. `limit` bounds what is
    read of a file that should be small (a key: not all of /dev/zero)."""
    try:
        with path.open("rb") as fh:
            data = fh.read() if limit is None else fh.read(limit + 1)
    except OSError as exc:
        input_error(label, path, file_problem(path, exc))
    if limit is not None and len(data) > limit:
        input_error(label, path, f"{path} is larger than {limit} bytes: not {what}")
    if not data:
        input_error(label, path, f"{path} is empty: not {what}")
    return data


def read_text_input(path: Path, label: str, what: str, limit: int | None = None) -> str:
    """As `read_input`, decoded as UTF-8 (exit 2 naming the first byte that is not)."""
    data = read_input(path, label, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        input_error(label, path, f"{path} is not UTF-8 text (byte {exc.start}): not {what}")


def input_error(label: str, path: Path, problem: str) -> NoReturn:
    _err.print(f"[red]error[/red] {escape(label)} {escape(str(path))}: {escape(problem)}", highlight=False)
    raise typer.Exit(EXIT_USAGE)


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
