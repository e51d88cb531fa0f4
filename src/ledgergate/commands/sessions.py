"""`ledgergate sessions list|show|replay|export`: who did what in a session, from the ledger alone.

Everything shown is read from record bytes that hash to their stored leaf
and say their own place, parsed from their canonical JSON; the store's index
columns are not trusted. A record that fails those checks stops the command
(exit 1) naming it: run `ledgergate audit verify`.

Looking is recorded: `replay` writes `session.replayed` and `export` writes
`session.exported` (who, which session) in the CLI's own log
(`<replica>-cli`) before anything is shown or a bundle appears under its name
(`export` writes it to a temporary file first: a failed write records
nothing); if that record cannot be made, nothing is shown (exit 3).

Counts (`list`, `show`, `replay`): calls are the client requests the gateway
decided (forwarded, held for an approval, or refused), once per request id;
denials are those refused by policy or by an approver, once per call (a denial
is also a call); approvals are the approvals those calls asked for. One call
has several records (a denied approval writes four): `records` counts those.

Exit status: 0 done; 1 unknown session or a record that does not verify;
2 usage or config; 3 the ledger cannot record the look.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ledgergate.api.ledger_reader import RecordProblem, load_sessions
from ledgergate.audit.bundle import ExportRefused, Filter, dump_bundle, export_bundle, normalize_time
from ledgergate.audit.sessions import Session, SessionFilter, replay, select
from ledgergate.commands.audit import check_output
from ledgergate.commands.common import EXIT_USAGE, ConfigOption, load_or_exit, os_user, record_cli
from ledgergate.commands.ledger_files import open_store, verifier_of
from ledgergate.config import LoadedConfig
from ledgergate.errors import LedgerUnavailable
from ledgergate.store.ledger_store import StoreError
from ledgergate.terminal import console
from ledgergate.ui.visible import shown

app = typer.Typer(no_args_is_help=True, help="List, show, replay and export sessions from the audit ledger.")
out = console()
err = console(stderr=True)

EXIT_REFUSED, EXIT_UNAVAILABLE = 1, 3
JsonOption = typer.Option(False, "--json", help="Machine-readable output.")
ByOption = typer.Option(None, "--by", help="Who is looking (recorded); default the OS user.")


def _show(text: str) -> str:
    """Recorded text (a subject, a tool name, arguments: chosen by callers) for the terminal: hidden
    characters (a bidi override, an escape sequence) made visible (`ui/visible.py`), then escaped
    from Rich's markup, as `approvals` shows them."""
    return escape(shown(text))


def _sessions(loaded: LoadedConfig) -> dict[str, Session]:
    store = open_store(loaded)
    try:
        return load_sessions(store)
    except RecordProblem as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}; run `ledgergate audit verify`", highlight=False)
        raise typer.Exit(EXIT_REFUSED) from None
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    finally:
        store.close()


def _one(loaded: LoadedConfig, session_id: str) -> Session:
    found = _sessions(loaded).get(session_id)
    if found is None:
        err.print(f"[red]error[/red] no session {_show(session_id[:80])} in the ledger", highlight=False)
        raise typer.Exit(EXIT_REFUSED)
    return found


def record_look(loaded: LoadedConfig, event: str, by: str | None, fields: dict[str, Any]) -> None:
    """Record who looked at what, or exit 3 with nothing shown."""
    who = {"issuer": "ledgergate-cli", "subject": by or os_user(), "kind": "human"}
    try:
        asyncio.run(record_cli(loaded, event, {"viewer": who, "via": "cli", **fields}))
    except LedgerUnavailable as exc:
        err.print(f"[red]error[/red] {escape(exc.message)}; nothing was shown", highlight=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from None


def _time(value: str | None, option: str) -> str | None:
    try:
        return normalize_time(value)
    except (ValueError, OverflowError):  # OverflowError: a time UTC cannot hold (0001-01-01T00:00:00+01:00)
        err.print(f"[red]error[/red] {option} must be an ISO 8601 time such as 2026-01-31T09:00:00Z", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


@app.command("list")
def list_sessions(
    config: Path = ConfigOption,
    principal: str | None = typer.Option(None, "--principal", help="Subject, or issuer#subject."),
    server: str | None = typer.Option(None, "--server"),
    tool: str | None = typer.Option(None, "--tool", help="Sessions that called this tool."),
    decision: str | None = typer.Option(None, "--decision", help="allow, deny or approve: sessions with such a decision."),
    since: str | None = typer.Option(None, "--since", help="Active at or after this ISO 8601 time."),
    until: str | None = typer.Option(None, "--until", help="Started at or before this ISO 8601 time."),
    limit: int = typer.Option(100, "--limit", min=1, max=100000),
    as_json: bool = JsonOption,
) -> None:
    """Sessions, newest first: principal, server, start, calls, denials, approvals.

    calls: client requests the gateway decided (forwarded, held or refused), once per request id;
    denials: those refused by policy or by an approver, once per call; approvals: approvals they asked for."""
    if decision is not None and decision not in ("allow", "deny", "approve"):
        err.print("[red]error[/red] --decision must be allow, deny or approve", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    flt = SessionFilter(principal, server, tool, decision, _time(since, "--since"), _time(until, "--until"))
    loaded = load_or_exit(config)
    found = select(_sessions(loaded), flt)[:limit]
    if as_json:
        print(json.dumps([s.summary() for s in found], ensure_ascii=False))
        return
    if not found:
        out.print("no sessions")
        return
    table = Table("session", "principal", "server", "start", "calls", "denials", "approvals")
    for s in found:
        table.add_row(_show(s.id), _show(s.subject), _show(s.server or ""), _show(str(s.start)), str(s.calls),
                      str(s.denials), str(s.approvals))
    out.print(table)
    out.print("[dim]calls: client requests decided, once per request id; denials: calls refused by policy or "
              "an approver; approvals: approvals the calls asked for[/dim]", highlight=False)


@app.command("show")
def show(session_id: str = typer.Argument(..., metavar="ID"), config: Path = ConfigOption,
         as_json: bool = JsonOption) -> None:
    """One session's summary: who, where, when, how many calls, denials and approvals, which tools.

    calls: client requests the gateway decided (forwarded, held or refused), once per request id;
    denials: those refused by policy or by an approver, once per call; approvals: approvals they asked for."""
    loaded = load_or_exit(config)
    s = _one(loaded, session_id)
    marks = _signed(loaded, [(e.log_id, e.index) for e in s.entries])
    if as_json:
        print(json.dumps({**s.summary(), "signed": _tally(marks)}, ensure_ascii=False))
        _fail_on(marks)
        return
    out.print(f"[bold]{_show(s.id)}[/bold]", highlight=False)
    out.print(f"  principal  {_show(s.subject)} ({_show(str(s.principal.get('issuer')))})", highlight=False)
    out.print(f"  server     {_show(s.server or '')}", highlight=False)
    out.print(f"  from       {_show(str(s.start))}  to {_show(str(s.end))}", highlight=False)
    out.print(f"  calls {s.calls}, denials {s.denials}, approvals {s.approvals}; {len(s.entries)} records",
              highlight=False)
    if s.tools:
        out.print(f"  tools      {_show(', '.join(sorted(s.tools)))}", highlight=False)
    _say_signed(marks)


def _line(st: dict[str, Any]) -> str:
    offset = st.get("offset_ms")
    parts = [f"+{offset / 1000:.3f}s".rjust(10) if isinstance(offset, (int, float)) else "?".rjust(10), st["event"]]
    what = st.get("target") or st.get("method")
    if what:
        parts.append(str(what))
    if st.get("decision"):
        parts.append(f"decision={st['decision']}")
    if st.get("rule"):
        parts.append(f"rule={st['rule']}")
    if st.get("approval"):
        parts.append(f"approval={st['approval']}")
    if st.get("approver"):
        parts.append(f"by={st['approver']}")
    if st.get("verdict"):
        parts.append(f"verdict={st['verdict']}")
    if st.get("reason"):
        parts.append(f"reason={json.dumps(st['reason'], ensure_ascii=False)}")
    if st.get("latency_ms") is not None:
        parts.append(f"latency={st['latency_ms']}ms")
    if "payload" in st:
        parts.append(f"{st['payload_kind']}={json.dumps(st['payload'], ensure_ascii=False, separators=(',', ':'))}")
    parts.append(f"[{st['log']}#{st['index']}]")
    return "  ".join(parts)


@app.command("replay")
def replay_session(session_id: str = typer.Argument(..., metavar="ID"), config: Path = ConfigOption,
                   by: str | None = ByOption, as_json: bool = JsonOption) -> None:
    """Every record of a session in order: timing, masked payloads, decision and rule, approvals, latency.
    Recorded as `session.replayed` before it is shown."""
    loaded = load_or_exit(config)
    s = _one(loaded, session_id)
    record_look(loaded, "session.replayed", by, {"replayed_session": s.id, "records": len(s.entries)})
    doc = replay(s)
    marks = _signed(loaded, [(st["log"], st["index"]) for st in doc["timeline"]])
    for st in doc["timeline"]:
        st["signed"], st["signed_why"] = marks[(st["log"], st["index"])]
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
        _fail_on(marks)
        return
    out.print(f"[bold]session {_show(s.id)}[/bold]  {_show(s.subject)} on {_show(s.server or '')}, "
              f"{_show(str(s.start))} .. {_show(str(s.end))}; {s.calls} calls, {s.denials} denials, {s.approvals} approvals", highlight=False)
    for st in doc["timeline"]:
        flag = "" if st["signed"] == "yes" else " [not yet signed]" if st["signed"] == "pending" else \
            " [FAILS its signed checkpoint]"
        out.print(_show(_line(st)) + flag, highlight=False, soft_wrap=True)
    _say_signed(marks)


#: a record shown by `show` and `replay`: in its log's latest signed checkpoint ("yes"), newer than it
#: ("pending": the next checkpoint covers it), or in it by place but not by bytes ("no": altered after signing)
Mark = tuple[str, str]


def _signed(loaded: LoadedConfig, places: list[tuple[str, int]]) -> dict[tuple[str, int], Mark]:
    """Each record checked against its log's latest signed checkpoint, by making and verifying its inclusion
    proof, as the console's replay does. The records were read from bytes that hash to their stored leaf
    hashes, and whoever rewrites a record can rewrite its leaf hash too: only the signed root tells."""
    from ledgergate.audit.proof import ProofError
    from ledgergate.audit.prover import LogProver

    verifier = verifier_of(loaded)
    store = open_store(loaded)
    out: dict[tuple[str, int], Mark] = {}
    provers: dict[str, LogProver] = {}
    try:
        for log_id, index in places:
            prover = provers.get(log_id)
            if prover is None:
                prover = provers[log_id] = LogProver.open(store, log_id, verifier)
            if not prover.covers(index):
                out[(log_id, index)] = ("pending", f"newer than log {log_id}'s latest signed checkpoint "
                                                   f"(size {prover.size})")
                continue
            try:
                prover.prove(index)
                out[(log_id, index)] = ("yes", f"in the signed checkpoint of size {prover.size}")
            except ProofError as exc:
                out[(log_id, index)] = ("no", str(exc))
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.close()
    return out


def _tally(marks: dict[tuple[str, int], Mark]) -> dict[str, int]:
    return {kind: sum(1 for k, _ in marks.values() if k == kind) for kind in ("yes", "pending", "no")}


def _say_signed(marks: dict[tuple[str, int], Mark]) -> None:
    t = _tally(marks)
    out.print(f"  signed     {t['yes']} records in their logs' signed checkpoints"
              + (f", {t['pending']} newer (the next checkpoint covers them)" if t["pending"] else ""), highlight=False)
    _fail_on(marks)


def _fail_on(marks: dict[tuple[str, int], Mark]) -> None:
    """Exit 1 when a record shown is not the one its signed checkpoint covers."""
    bad = [(place, why) for place, (kind, why) in marks.items() if kind == "no"]
    if not bad:
        return
    for (log_id, index), why in bad[:5]:
        err.print(f"[red]FAIL[/red] record {index} of log {_show(log_id)}: {_show(why)}", highlight=False)
    err.print(f"[red]FAIL[/red] {len(bad)} record(s) shown do not match their signed checkpoint: what is shown there "
              "was changed after it was signed; run `ledgergate audit verify`", highlight=False)
    raise typer.Exit(1)


@app.command("export")
def export_session(session_id: str = typer.Argument(..., metavar="ID"), config: Path = ConfigOption,
                   output: Path = typer.Option(..., "-o", "--output", help="Bundle file to write."),
                   by: str | None = ByOption) -> None:
    """An evidence bundle of one session (its records with inclusion proofs; `audit verify-bundle` checks it).
    Recorded as `session.exported` before the bundle appears under its name: it is written to a temporary
    file beside it, then the record is made, then the file is renamed into place. A write that fails records
    nothing; a record that cannot be made leaves no file."""
    check_output(output)
    loaded = load_or_exit(config)
    s = _one(loaded, session_id)
    verifier = verifier_of(loaded)
    store = open_store(loaded)
    try:
        doc = export_bundle(store, verifier, Filter(session=s.id))
    except ExportRefused as exc:  # the store's content does not verify: no bundle, and nothing recorded
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_REFUSED) from None
    except StoreError as exc:
        err.print(f"[red]error[/red] storage: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    finally:
        store.close()
    held = sum(len(entry.get("records", [])) for entry in doc["logs"])
    own = sum(1 for e in s.entries if e.doc.get("session") == s.id)  # the bundle selects by the record's session
    tmp = _write_temporary(output, dump_bundle(doc))
    try:
        record_look(loaded, "session.exported", by, {"exported_session": s.id})
        os.replace(tmp, output)
    except OSError as exc:
        err.print(f"[red]error[/red] -o/--output: cannot write {escape(str(output))}: "
                  f"{escape(exc.strerror or str(exc))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    finally:
        tmp.unlink(missing_ok=True)  # gone already once renamed
    out.print(f"wrote {escape(str(output))}: {held} records of session {_show(s.id)} from {len(doc['logs'])} log(s)"
              + ("" if held >= own else f" ({own - held} newer records are not in a signed checkpoint yet)"),
              highlight=False)


def _write_temporary(output: Path, data: bytes) -> Path:
    """`data` in a new file beside `output` (same folder, so the rename into place is atomic), durable;
    exit 2 naming the option, with no file left, when it cannot be written."""
    fd = -1
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        err.print(f"[red]error[/red] -o/--output: cannot write {escape(str(output))}: "
                  f"{escape(exc.strerror or str(exc))}; nothing was recorded", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
