"""`ledgergate audit ...`: verify the ledger, export and verify evidence bundles, tail records, seal a
log's unsigned tail.

Exit codes: 0 verified, 1 verification failed (the first problem is printed,
naming the log and record), 2 usage or config error.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import typer
from rich.markup import escape

from ledgergate.audit import seals, stored
from ledgergate.audit.bundle import (
    ExportRefused,
    Filter,
    describe,
    dump_bundle,
    export_bundle,
    normalize_time,
    verify_bundle,
)
from ledgergate.audit.checkpoint import Verifier
from ledgergate.audit.ledger import (
    hmac_key_path,
    hmac_key_problem,
    origin_for,
    read_hmac_key,
)
from ledgergate.audit.verify import WitnessNote, verify_store
from ledgergate.audit.witness import FileWitness, file_witness_path, witness_label
from ledgergate.commands.common import (
    EXIT_USAGE,
    ConfigOption,
    input_error,
    load_or_exit,
    read_text_input,
    shown,
)
from ledgergate.commands.ledger_files import read_verifier, verifier_of
from ledgergate.config import LoadedConfig
from ledgergate.invisible import escaped, json_visible
from ledgergate.store.claims import ClaimRefused, LogClaim, describe_holder
from ledgergate.store.db import StoreURL
from ledgergate.store.ledger_store import (
    LedgerStore,
    StoreError,
    open_existing_ledger_store,
)
from ledgergate.terminal import console

app = typer.Typer(no_args_is_help=True, help="Verify the tamper-evident audit ledger and export evidence.")
out = console()
err = console(stderr=True)

KeyOption = typer.Option(None, "--public-key", help="Verifier key file (default: <signing_key>.pub from the config).")




def _verifier(loaded: LoadedConfig, public_key: Path | None) -> Verifier:
    return verifier_of(loaded, public_key)


def output_problem(path: Path) -> str | None:
    """Why a file cannot be written at `path` (checked before any work is done), or None."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist" if not path.parent.exists() else f"{path.parent} is not a folder"
    return None


def check_output(path: Path, option: str = "-o/--output") -> None:
    """Exit 2 naming the option when `path` cannot be written."""
    problem = output_problem(path)
    if problem is not None:
        err.print(f"[red]error[/red] {option}: {escape(problem)}", highlight=False)
        raise typer.Exit(EXIT_USAGE)


def write_output(path: Path, data: bytes, option: str = "-o/--output") -> None:
    """The file written, or exit 2 naming the option and why not (a full disk, no permission)."""
    try:
        path.write_bytes(data)
    except BrokenPipeError:
        raise  # `-o /dev/stdout | head -1`: the reader went away; the entry point exits 141 silently
    except OSError as exc:
        err.print(f"[red]error[/red] {option}: cannot write {escape(str(path))}: {escape(exc.strerror or str(exc))}",
                  highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def parse_time(value: str | None, option: str) -> str | None:
    """An ISO 8601 time in the ledger's form, or exit 2 naming the option (a date the UTC conversion
    takes out of range, such as 0001-01-01T00:00:00+01:00, included)."""
    try:
        return normalize_time(value)
    except (ValueError, OverflowError):
        err.print(f"[red]error[/red] {option} must be an ISO 8601 time such as 2026-01-31T09:00:00Z "
                  f"(got {escape(shown(str(value)))})", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def check_interval(value: float, option: str = "--interval") -> None:
    """A poll interval time.sleep takes: finite, above zero, at most a day."""
    if not (0 < value <= 86400):  # also false for NaN
        err.print(f"[red]error[/red] {option} must be a number of seconds above 0 and at most 86400", highlight=False)
        raise typer.Exit(EXIT_USAGE)


def _store(loaded: LoadedConfig) -> LedgerStore:
    try:
        return open_existing_ledger_store(loaded.settings.storage, loaded.base_dir)
    except (StoreError, ValueError) as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def notes_expected(loaded: LoadedConfig) -> bool:
    """Whether a file witness is configured, whose notes `verify` reads back."""
    return any(file_witness_path(spec, loaded.base_dir) is not None for spec in loaded.settings.audit.witnesses)


WitnessNotesOption = typer.Option(
    [], "--witness-notes", metavar="FILE",
    help="Signed checkpoints a witness holds, as you obtained them from it (one note after another, as a file "
         "witness keeps them); repeatable. Compared like a file witness: a log the store lacks, a cut tail or "
         "records rewritten under a witnessed checkpoint fail. How an http(s) witness is checked.")


def _given_notes(paths: list[Path]) -> list[WitnessNote]:
    """The notes of each `--witness-notes` file; a file that holds none is a usage error (exit 2): an
    auditor who named a witness's copy must not get an "ok" that never looked at it."""
    notes: list[WitnessNote] = []
    for path in paths:
        witness = FileWitness(path)
        problem = witness.problem()
        if problem is not None:
            err.print(f"[red]error[/red] --witness-notes {escape(str(path))}: {escape(problem)}", highlight=False)
            raise typer.Exit(2)
        notes.extend(WitnessNote(f"{path} note {i + 1}", note) for i, note in enumerate(witness.read_notes()))
    return notes


def _said(text: str, limit: int = 300) -> str:
    """Text from the store (a log's id, a problem quoting a record) as `verify` prints it. Whoever holds the
    database is who `verify` checks, so what it wrote is never markup (a log named `[green]ok[/green]…` would
    print a pass), never a terminal control sequence, and never long enough to bury the verdict."""
    return escape(escaped(text, limit))


@app.command()
def verify(config: Path = ConfigOption, public_key: Path | None = KeyOption,
           witness_notes: list[Path] = WitnessNotesOption) -> None:
    """Recompute every log and check every checkpoint and witness copy; exit 1 naming the first bad record."""
    loaded = load_or_exit(config)
    verifier = _verifier(loaded, public_key)
    notes: list[WitnessNote] = _given_notes(witness_notes)
    unusable: list[str] = []  # configured file witnesses that hold nothing to compare against
    unread: list[str] = []  # configured witnesses this command cannot read back (http(s))
    for spec in loaded.settings.audit.witnesses:
        path = file_witness_path(spec, loaded.base_dir)
        if path is None:
            unread.append(witness_label(spec))
            continue
        witness = FileWitness(path)
        problem = witness.problem()
        if problem is not None:
            unusable.append(f"witness {witness_label(spec)}: {problem}")
            continue
        for i, note in enumerate(witness.read_notes()):
            notes.append(WitnessNote(f"{witness_label(spec)} note {i + 1}", note))
    store = _store(loaded)
    started = time.perf_counter()
    try:
        reports = verify_store(store, verifier, notes)
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    failed = False
    if not reports:
        out.print("no logs in the store")
    signed = sum(r.checkpoints for r in reports)
    for problem in unusable:
        # with checkpoints in the store, a witness holding none is how a truncated tail would pass
        if signed:
            failed = True
            out.print(f"[red]FAIL[/red] {escape(problem)}", highlight=False)
        else:
            out.print(f"note: {escape(problem)} (the store holds no checkpoint yet)", highlight=False)
    if unread and not witness_notes:
        # an http(s) witness is the one outside the database's reach, and the only thing that catches a
        # rewrite by whoever holds the database but not the signing key (checkpoints deleted, records
        # rewritten): without its copy, "ok" says the store is consistent with itself, nothing more
        out.print(f"[yellow]warning[/yellow] witness {_said(', '.join(unread))} cannot be read back from here, so the logs "
                  "are checked against the database's own checkpoints only; pass the checkpoints that witness "
                  "holds with --witness-notes FILE to rule out a rewrite by the database's administrator",
                  highlight=False)
    for rep in reports:
        if rep.ok and rep.size and not rep.checkpoints:
            # the gateway signs every few seconds and on every clean stop: records nothing vouches for are
            # checkpoints deleted, or a gateway that stopped before its first one (a start signs them)
            failed = True
            out.print(f"[red]FAIL[/red] log {_said(rep.log_id)}: {rep.size} records and no signed checkpoint, so nothing "
                      "vouches for them (checkpoints deleted, or the gateway stopped before its first checkpoint: "
                      "starting it once signs them)", highlight=False)
            continue
        if rep.ok and rep.checkpoints and notes_expected(loaded) and not rep.witnessed and not unusable:
            # not a failure: with several replicas, each may push to a witness only its own config names
            out.print(f"note: log {_said(rep.log_id)}: none of its {rep.checkpoints} checkpoints is at the file "
                      "witnesses configured here; its tail is checked against the database's checkpoints only",
                      highlight=False)
        if rep.ok:
            tail = rep.size - rep.covered
            out.print(f"[green]ok[/green] log {_said(rep.log_id)}: {rep.size} records, {rep.checkpoints} checkpoints, "
                      f"{rep.witnessed} witnessed; signed up to {rep.covered}"
                      + (f" ({tail} newer records not yet checkpointed)" if tail else ""), highlight=False)
        else:
            failed = True
            out.print(f"[red]FAIL[/red] log {_said(rep.log_id)}: {_said(rep.problems[0])}", highlight=False)
            for p in rep.problems[1:]:
                out.print(f"     also: {_said(p)}", highlight=False)
    total = sum(r.size for r in reports)
    out.print(f"{total} records verified in {elapsed:.2f}s")
    raise typer.Exit(1 if failed else 0)


@app.command()
def export(
    config: Path = ConfigOption,
    output: Path = typer.Option(..., "-o", "--output", help="Bundle file to write."),
    session: str | None = typer.Option(None, help="Only records of this session (with inclusion proofs)."),
    since: str | None = typer.Option(None, help="Only records at or after this ISO 8601 time."),
    until: str | None = typer.Option(None, help="Only records at or before this ISO 8601 time."),
    public_key: Path | None = KeyOption,
) -> None:
    """Write an evidence bundle: records, signed checkpoints, proofs and the verifier key."""
    flt = Filter(session, parse_time(since, "--since"), parse_time(until, "--until"))
    check_output(output)
    loaded = load_or_exit(config)
    verifier = _verifier(loaded, public_key)
    store = _store(loaded)
    try:
        doc = export_bundle(store, verifier, flt)
    except ExportRefused as exc:  # the store's content does not verify: no bundle, exit 1 as verify's FAIL
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    write_output(output, dump_bundle(doc))
    n = sum(len(entry["records"]) for entry in doc["logs"])
    out.print(f"wrote {output}: {len(doc['logs'])} log(s), {n} record(s) up to each log's latest checkpoint")


@app.command("verify-bundle")
def verify_bundle_cmd(
    bundle: Path = typer.Argument(..., help="Evidence bundle written by `audit export`."),
    public_key: Path = typer.Option(..., "--public-key", help="The ledger's verifier key file (<signing_key>.pub)."),
) -> None:
    """Check a bundle offline: signatures, proofs and every record; no database, no config."""
    verifier = read_verifier(public_key, "--public-key")
    data = read_text_input(bundle, "BUNDLE", "an evidence bundle")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        input_error("BUNDLE", bundle, f"{bundle} is not JSON ({exc.msg} at character {exc.pos}): not an evidence "
                                      "bundle")
    problems = verify_bundle(doc, verifier)
    if problems:
        for p in problems:
            out.print(f"[red]FAIL[/red] {escape(p)}", highlight=False)  # a bundle's words are never markup
        raise typer.Exit(1)
    n = sum(len(entry["records"]) for entry in doc["logs"])
    out.print(f"[green]ok[/green] {bundle}: {len(doc['logs'])} log(s), {n} record(s) verified against {verifier.name}+{verifier.id.hex()}")
    for line in describe(doc):
        out.print(f"  {escape(line)}", highlight=False)


@app.command()
def tail(
    config: Path = ConfigOption,
    lines: int = typer.Option(10, "-n", "--lines", min=0, help="How many of the newest records per log."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new records."),
    interval: float = typer.Option(1.0, help="Poll interval with --follow, seconds."),
) -> None:
    """Print the newest records (canonical JSON, one a line)."""
    check_interval(interval)
    loaded = load_or_exit(config)
    store = _store(loaded)
    try:
        pos: dict[str, int] = {}
        for log_id, _ in store.logs():
            size = store.size(log_id)
            for row in store.rows(log_id, max(0, size - lines), size):
                out.print(json_visible(row.record.decode()), markup=False, emoji=False, highlight=False, soft_wrap=True)
            pos[log_id] = size
        while follow:
            time.sleep(interval)
            for log_id, _ in store.logs():
                start = pos.get(log_id, 0)
                rows = store.rows(log_id, start, start + 10000)
                for row in rows:
                    out.print(json_visible(row.record.decode()), markup=False, emoji=False, highlight=False,
                              soft_wrap=True)
                pos[log_id] = start + len(rows)
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()


def _offenders(what: str, found: seals.Offenders) -> str:
    """One line about tail records of one kind: how many, their seqs and their events (escaped, at most
    eight named): never their contents."""
    common = found.events.most_common(8)
    events = ", ".join(f"{_said(name, 60)} ×{n}" for name, n in common)
    more = sum(found.events.values()) - sum(n for _, n in common)
    span = f"seq {found.first}" if found.first == found.last else f"seq {found.first}..{found.last}"
    return f"{found.count} record(s) {what}: {span}; events {events}" + (f" and {more} more" if more else "")


@app.command("seal-tail")
def seal_tail(
    config: Path = ConfigOption,
    log_id: str = typer.Option(..., "--log", help="The log (its audit.replica id) whose unsigned tail to check."),
    yes: bool = typer.Option(False, "--yes", help="Seal the records that carry no seal (never a wrong one)."),
    public_key: Path | None = KeyOption,
) -> None:
    """List the records after a log's latest signed checkpoint that the gateway refuses to start on; with --yes,
    seal the ones that carry no seal. Exit 0 when the gateway can start on the log, 1 when it cannot.

    A record without a seal after the checkpoint was put there by hand, or by a gateway from before record
    seals that stopped without its final checkpoint: check them first (`audit tail`), then seal them so the
    next checkpoint signs them. A record with a seal that does not verify is not sealed over. With --yes the
    command holds the log's claim (store/claims.py) while it writes, so it refuses while a gateway runs on
    the log, and a gateway does not start while it writes."""
    loaded = load_or_exit(config)
    verifier = _verifier(loaded, public_key)
    store = _store(loaded)  # first: a `storage` that names no store is named as such, and nothing is created
    claim: LogClaim | None = None
    try:
        key_path = hmac_key_path(loaded.settings.audit, loaded.base_dir)
        try:
            key = read_hmac_key(key_path)
        except (OSError, ValueError) as exc:
            err.print(f"[red]error[/red] audit.hmac_key: the key {escape(str(key_path))} cannot be used: "
                      f"{escape(hmac_key_problem(key_path, exc))}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        if log_id not in {name for name, _ in store.logs()}:
            err.print(f"[red]error[/red] --log: the store holds no log {escape(shown(log_id))}", highlight=False)
            raise typer.Exit(EXIT_USAGE)
        if yes:
            try:
                claim = LogClaim(StoreURL.parse(loaded.settings.storage, loaded.base_dir), log_id,
                                 f"`ledgergate audit seal-tail`, {describe_holder()}")
            except ClaimRefused as exc:
                out.print(f"[red]refused[/red] {escape(str(exc))}: stop that gateway first; a running gateway "
                          "seals what it writes and signs its tail itself", highlight=False)
                raise typer.Exit(1) from None
        try:
            state = seals.open_log(store, log_id, origin_for(log_id), verifier, seals.Sealer(key, log_id), keep=yes)
        except (seals.Refused, stored.HashesBeyondRecords, ValueError, LookupError) as exc:
            out.print(f"[red]FAIL[/red] {_said(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        tail = state.tail
        where = f"after its latest signed checkpoint (size {tail.start})" if state.signed else "(no signed checkpoint)"
        out.print(f"log {_said(log_id)}: {tail.end - tail.start} record(s) {where}", highlight=False)
        if tail.wrong.count:
            what = "with a seal that does not verify, or bytes that do not hash to their leaf hash"
            out.print(f"[red]FAIL[/red] {_offenders(what, tail.wrong)}: inserted or edited in the store (or the audit "
                      "HMAC key changed since they were written)", highlight=False)
        if tail.problem:
            out.print(f"[red]FAIL[/red] {_said(tail.problem)}", highlight=False)
        if tail.unsealed.count:
            out.print(f"[yellow]unsealed[/yellow] {_offenders('with no seal', tail.unsealed)}", highlight=False)
        if not tail.refused:
            out.print("[green]ok[/green] every record after the checkpoint carries the gateway's seal", highlight=False)
            return
        if tail.wrong.count or tail.problem:
            out.print("nothing sealed: records the gateway did not write (or that were changed) are never sealed "
                      "over; remove the rows the gateway did not write, or run `ledgergate audit verify`",
                      highlight=False)
            raise typer.Exit(1)
        if not yes:
            out.print("check these records (`ledgergate audit tail`, `ledgergate audit verify`); if they are the "
                      f"gateway's, run `ledgergate audit seal-tail --log {_said(log_id)} --yes` to seal them, so "
                      "the gateway starts and signs them at its next checkpoint", highlight=False)
            raise typer.Exit(1)
        sealer = seals.Sealer(key, log_id)
        done = store.add_seals(log_id, [(seq, h, sealer.seal(seq, h)) for seq, h in tail.to_seal])
        if done != len(tail.to_seal):
            out.print(f"[red]FAIL[/red] sealed {done} of {len(tail.to_seal)} record(s): the others changed while "
                      "this command ran; run it again", highlight=False)
            raise typer.Exit(1)
        out.print(f"[green]sealed[/green] {done} record(s) of log {_said(log_id)}; the gateway starts on it and "
                  "signs them at its next checkpoint", highlight=False)
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
        if claim is not None:
            claim.release()
