"""What CLI verbs that read the ledger share: the store, the verifier key and the file witnesses' notes
named by a config, each failing with one line and exit 2."""

from __future__ import annotations

import typer
from rich.markup import escape

from ledgergate.audit.checkpoint import (
    NoteError,
    Verifier,
    load_verifier,
    verifier_path,
)
from ledgergate.audit.witness import FileWitness, file_witness_path
from ledgergate.config import LoadedConfig
from ledgergate.store.ledger_store import (
    LedgerStore,
    StoreError,
    open_existing_ledger_store,
)
from ledgergate.terminal import console

_err = console(stderr=True)


def verifier_of(loaded: LoadedConfig) -> Verifier:
    path = verifier_path(loaded.resolve(loaded.settings.audit.signing_key))
    try:
        return load_verifier(path)
    except (OSError, NoteError, UnicodeDecodeError) as exc:
        _err.print(f"[red]error[/red] verifier key {escape(str(path))}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


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
