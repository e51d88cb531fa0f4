"""`ledgergate audit verify-proof PROOF --public-key FILE` and `audit prove LOG INDEX -o PROOF`.

verify-proof needs no config and no database: the proof (C2SP tlog-proof, the
record in its `extra` line) and the log's verifier key are all it reads.
Exit status: 0 the proof verifies; 1 it does not (the reason is printed: the
signature, the record's place, or the inclusion path); 2 the files cannot be
read (usage).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ledgergate.audit import proof
from ledgergate.commands.common import EXIT_USAGE, read_input, shown
from ledgergate.commands.ledger_files import read_verifier
from ledgergate.invisible import escaped
from ledgergate.store.ledger_store import LedgerStore
from ledgergate.terminal import console

out = console()
err = console(stderr=True)

MAX_INDEX = (1 << 63) - 1  # a record's index is a BIGINT in the store


def verify_proof(
    proof_file: Path = typer.Argument(..., metavar="PROOF", help="A .tlog-proof file."),
    public_key: Path = typer.Option(..., "--public-key", help="The log's verifier key (<signing_key>.pub)."),
    record: Path | None = typer.Option(None, "--record", help="The record's exact bytes, if the proof does not "
                                                               "carry it (or to check it is this one)."),
) -> None:
    """Check one record's offline proof (C2SP tlog-proof): signed checkpoint, record place, inclusion path."""
    verifier = read_verifier(public_key, "--public-key")
    raw = read_input(proof_file, "PROOF", "a proof")
    data = read_input(record, "--record", "a record") if record is not None else None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        out.print(f"[red]invalid[/red] {escape(str(proof_file))}: not UTF-8 text", highlight=False)
        raise typer.Exit(1) from None
    try:
        ok = proof.verify(text, verifier, data)
    except proof.ProofError as exc:  # its words quote the proof file: a key name is anyone's text
        out.print(f"[red]invalid[/red] {escape(str(proof_file))}: {escape(escaped(str(exc), _SAID))}", highlight=False)
        raise typer.Exit(1) from None
    witnesses = ""
    if ok.other_signers:
        named = [escaped(name, _NAME) for name in ok.other_signers[:_NAMES]]
        more = f" and {len(ok.other_signers) - _NAMES} more" if len(ok.other_signers) > _NAMES else ""
        witnesses = f"; other signatures present, not checked: {', '.join(named)}{more}"
    out.print(f"[green]ok[/green] record {ok.index} of log {escape(escaped(ok.log_id, _NAME))} "
              f"({escape(escaped(str(ok.event), _NAME))} at {escape(escaped(str(ok.time), _NAME))}) is in the checkpoint "
              f"of size {ok.tree_size} signed by {escape(escaped(ok.key_name, _NAME))}{escape(witnesses)}",
              highlight=False)


#: how much of what a proof file says is shown: a key name, a field, an error's words, and how many other signers.
#: A proof comes from outside (that is its point), and a C1 control, a bidi override or a megabyte in a key name
#: could draw a green "ok" over a failure or bury the verdict (`invisible.escaped`, as `verify-bundle` does).
_NAME, _SAID, _NAMES = 80, 400, 10


def prove(
    log_id: str = typer.Argument(..., metavar="LOG", help="The log id (the gateway's replica, or <replica>-cli)."),
    index: int = typer.Argument(..., metavar="INDEX", min=0, max=MAX_INDEX, help="The record's index in that log."),
    config: Path = typer.Option(..., "--config", "-c", help="Path to the YAML config file."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the .tlog-proof."),
) -> None:
    """Write one record's offline proof against its log's latest signed checkpoint (verified before it is written)."""
    from ledgergate.audit.prover import prove_record
    from ledgergate.commands.audit import check_output, write_output
    from ledgergate.commands.common import load_or_exit
    from ledgergate.commands.ledger_files import open_store, verifier_of, witness_notes
    from ledgergate.store.ledger_store import StoreError

    check_output(output)
    loaded = load_or_exit(config)
    verifier = verifier_of(loaded)
    store = open_store(loaded)
    try:
        _check_exists(store, log_id, index)
        text = prove_record(store, log_id, index, verifier, witness_notes(loaded))
    except proof.ProofError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(3) from None
    finally:
        store.close()
    write_output(output, text.encode("utf-8"))
    out.print(f"wrote {escape(str(output))}: record {index} of log {escape(log_id)}", highlight=False)


def _check_exists(store: LedgerStore, log_id: str, index: int) -> None:
    """Exit 2 for a log the store does not have or an index beyond the log's records (wrong input,
    not a proof that failed); exit 1 for a record that should be there and is not (a gap)."""
    logs = [name for name, _ in store.logs()]
    if log_id not in logs:
        listed = ", ".join(logs[:10]) + (", …" if len(logs) > 10 else "") if logs else "none"
        err.print(f"[red]error[/red] LOG: no log {escape(shown(log_id))} in the store (its logs: {escape(listed)})",
                  highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if store.next_seq(log_id, index) == index:  # (index + 1 may be past what the store's integers hold)
        return
    size = store.size(log_id)
    if index >= size:
        held = f"its records are 0..{size - 1}" if size else "it holds no records"
        err.print(f"[red]error[/red] INDEX: record {index} does not exist in log {escape(log_id)}: it is beyond "
                  f"the log's size ({held}; run `ledgergate audit verify` if it existed before)", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    err.print(f"[red]error[/red] record {index} of log {escape(log_id)} does not exist in the store, though the "
              f"log runs to {size - 1} (records deleted); run `ledgergate audit verify`", highlight=False)
    raise typer.Exit(1)
