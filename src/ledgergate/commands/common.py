"""What every CLI verb shares: the `--config` option and loading a config with operator-ready errors."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ledgergate.config import ConfigError, LoadedConfig, load_config
from ledgergate.terminal import console

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
