"""What CLI verbs that read the ledger share: the store, the verifier key and the file witnesses' notes
named by a config, each failing with one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ledgergate.audit.checkpoint import (
    NoteError,
    Verifier,
    verifier_path,
)
from ledgergate.audit.witness import FileWitness, file_witness_path
from ledgergate.commands.common import input_error, read_text_input
from ledgergate.config import LoadedConfig
from ledgergate.store.ledger_store import (
    LedgerStore,
    StoreError,
    open_existing_ledger_store,
)
from ledgergate.terminal import console

_err = console(stderr=True)


#: a verifier key is one line; a file larger than this is not one (and /dev/zero is not read whole)
KEY_LIMIT = 64 * 1024


def read_verifier(path: Path, label: str = "verifier key") -> Verifier:
    """The verifier key in `path`, or exit 2 with one line naming `label` (`--public-key`), the file
    and what is wrong with it."""
    text = read_text_input(path, label, "a verifier key file", KEY_LIMIT)
    try:
        return Verifier.parse(text)
    except (NoteError, ValueError) as exc:
        input_error(label, path, f"{path} does not hold a verifier key: {exc}")


def verifier_of(loaded: LoadedConfig, public_key: Path | None = None) -> Verifier:
    """`--public-key` when given, else the config's `<audit.signing_key>.pub`."""
    if public_key is not None:
        return read_verifier(public_key, "--public-key")
    return read_verifier(verifier_path(loaded.resolve(loaded.settings.audit.signing_key)))


def open_store(loaded: LoadedConfig) -> LedgerStore:
    try:
        return open_existing_ledger_store(loaded.settings.storage, loaded.base_dir)
    except (StoreError, ValueError) as exc:
        _err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def witness_notes(loaded: LoadedConfig) -> list[str]:
    """Every note the file witnesses hold (HTTP witnesses cannot be read back from here)."""
    notes: list[str] = []
    for spec in loaded.settings.audit.witnesses:
        path = file_witness_path(spec, loaded.base_dir)
        if path is not None:
            notes.extend(FileWitness(path).read_notes())
    return notes
