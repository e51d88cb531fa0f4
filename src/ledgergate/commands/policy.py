"""`ledgergate policy check`: ask the policy what it would decide, and why.

Exit status: 0 allow, 1 deny, 3 approve (needs a human), 2 bad config or
arguments — so a script can `case $?` on it.

It also warns (on stderr, without changing the exit status) of a rule naming an exact tool the server never
listed, when the store holds the server's tools (recorded by the gateway's drift guard): a typo such as
`transfer_fund` makes the rule match nothing, which the decision alone does not show.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from pathlib import Path
from typing import Any

import orjson
import typer
import yaml
from rich.markup import escape

from ledgergate.commands.common import load_or_exit, shown
from ledgergate.config import LoadedConfig
from ledgergate.policy.engine import PolicyEngine
from ledgergate.policy.toolnames import covering, named_tools, unlisted
from ledgergate.principal import Principal
from ledgergate.terminal import console
from ledgergate.wire import jsonrpc

app = typer.Typer(no_args_is_help=True, help="Inspect and test the access policy.")
out = console()
err = console(stderr=True)

EXIT_ALLOW, EXIT_DENY, EXIT_USAGE, EXIT_APPROVE = 0, 1, 2, 3
_EXIT = {"allow": EXIT_ALLOW, "deny": EXIT_DENY, "approve": EXIT_APPROVE}


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error[/red] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_USAGE)


_EPOCH = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def _parse_time(value: str | None) -> float:
    if value is None:
        return time.time()
    if _EPOCH.fullmatch(value):  # ASCII digits only: float() would also take '١٢' or 'inf'
        return float(value)
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"--at: expected epoch seconds or an ISO 8601 time, got {shown(value)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


#: how deep a call's arguments may nest: the gateway refuses a message nested deeper than
#: `jsonrpc.MAX_DEPTH` levels, and the arguments sit two levels down (message, params)
ARGS_MAX_DEPTH = jsonrpc.MAX_DEPTH - 2


def _syntax_error(value: str, exc: orjson.JSONDecodeError) -> str:
    """Where and what, in Python's json words where it also refuses the text (its messages name what it
    expected: "Expecting value"), else in orjson's (`NaN`, which only Python's json takes)."""
    try:
        json.loads(value)
    except json.JSONDecodeError as py:
        return f"{py.msg} at column {py.colno}"
    except (ValueError, RecursionError):
        pass
    return f"{exc.msg.split(',')[0]} at column {exc.colno}"


def _parse_json_object(option: str, value: str, max_depth: int = jsonrpc.MAX_DEPTH) -> dict[str, Any]:
    """A JSON object read as the gateway reads a message (`jsonrpc.parse`: orjson's rules, integers kept
    exact), so the decision is the one the gateway would make. Whatever cannot be read is a usage error
    (exit 2), never a crash: exit 1 is "deny", and a gate must not take a crash for a decision."""
    try:
        parsed = jsonrpc.parse(value)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg:
            raise _fail(f"{option}: nested too deep (the gateway refuses a message nested deeper than "
                        f"{jsonrpc.MAX_DEPTH} levels)") from None
        if "infinity" in exc.msg:
            raise _fail(f"{option}: a number is too large (beyond a double's range the gateway refuses the "
                        "message as not valid JSON)") from None
        if "UTF-8" in exc.msg:
            raise _fail(f"{option}: not valid UTF-8 text") from None
        raise _fail(f"{option}: not valid JSON ({_syntax_error(value, exc)})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # whatever else a parser may raise: still usage
        raise _fail(f"{option}: cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(parsed, dict):
        raise _fail(f"{option}: must be a JSON object, e.g. '{{\"a\": 1}}'")
    if jsonrpc.deeper_than(parsed, max_depth):
        raise _fail(f"{option}: nested too deep (more than {max_depth} levels; the gateway refuses a message "
                    f"nested deeper than {jsonrpc.MAX_DEPTH})")
    return parsed


def known_tools(loaded: LoadedConfig) -> tuple[dict[str, frozenset[str]], str | None]:
    """server → every tool name the gateway's drift guard recorded for it, and why none could be read (None
    when the store was read or there is none). A missing store is not created and is no problem: no tools
    have been seen yet."""
    from ledgergate.store.db import StoreUnreachable, StoreURL, store_absence
    from ledgergate.store.fingerprints_store import FingerprintStore

    try:
        url = StoreURL.parse(loaded.settings.storage, loaded.base_dir)
        if store_absence(url, ("tool_fingerprints",)) is not None:
            return {}, None
        with FingerprintStore(url) as store:
            records = store.list()
    except StoreUnreachable as exc:  # its words are the ones `tools list` prints (no credentials)
        return {}, " ".join(str(exc).split())
    except Exception as exc:  # noqa: BLE001 - a warning aid must never turn a decision into a crash
        # a driver's own message may quote the connection string: the kind of failure only
        return {}, f"the store could not be read ({type(exc).__name__})"
    known: dict[str, set[str]] = {}
    for record in records:
        known.setdefault(record.server, set()).add(record.tool)
    return {server: frozenset(names) for server, names in known.items()}, None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node
    return None


def _tool_entry_lines(path: Path) -> dict[tuple[int, int], int]:
    """(rule index, `tools` entry index) → its line in the file, for a warning an editor can jump to. The
    file has just loaded, so only an unreadable one (changed meanwhile) gives none: the warning then goes
    without lines."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return {}
    lines: dict[tuple[int, int], int] = {}
    policies = _child(node, "policies")
    if isinstance(policies, yaml.SequenceNode):
        for i, rule in enumerate(policies.value):
            tools = _child(_child(rule, "match"), "tools")
            if isinstance(tools, yaml.SequenceNode):
                for j, item in enumerate(tools.value):
                    lines[(i, j)] = item.start_mark.line + 1
    return lines


def tool_name_warnings(config: Path, loaded: LoadedConfig, engine: PolicyEngine, server: str,
                       known: tuple[dict[str, frozenset[str]], str | None] | None = None) -> list[str]:
    """One line per rule covering `server` that names an exact tool no server it covers has listed, as far
    as the store knows (`policy/toolnames.py`). Nothing when no listing is known: the common case before the
    gateway first ran, where a note on every check would be noise that teaches readers to skip stderr. The
    store is asked only when some rule names an exact tool on this server, and not at all when `known` (what
    `known_tools` read) is given: `config validate` asks once for every server, not once each."""
    named = covering(named_tools(engine.rules, loaded.settings.servers), server)
    if not named:
        return []
    listings, problem = known if known is not None else known_tools(loaded)
    if problem is not None:
        return [f"tool names in rules were not checked against the server's tools: storage: {problem}"]
    lines = _tool_entry_lines(config)
    out = []
    for finding in unlisted(named, listings):
        n = finding.named
        line = lines.get((n.rule_index, n.entry))
        at = f"line {line}: " if line is not None else ""
        out.append(f"{at}{n.location}: {finding.describe()}")
    return out


@app.command("check")
def check(
    config: Path = typer.Option(..., "--config", "-c", help="Path to the YAML config file."),
    subject: str = typer.Option(..., "--subject", help="The caller's subject (token 'sub')."),
    groups: str = typer.Option("", "--groups", help="Comma-separated groups, e.g. staff,approvers."),
    kind: str = typer.Option("human", "--kind", help="Principal kind: human or service."),
    issuer: str = typer.Option("cli", "--issuer", help="The caller's issuer (only matters to conditions)."),
    claims: str = typer.Option("{}", "--claims", help="Extra token claims as a JSON object (for conditions)."),
    server: str = typer.Option(..., "--server", help="Server name as in the config's 'servers'."),
    tool: str | None = typer.Option(None, "--tool", help="Tool name (implies --method tools/call)."),
    resource: str | None = typer.Option(None, "--resource", help="Resource URI (implies resources/read)."),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt name (implies prompts/get)."),
    method: str | None = typer.Option(None, "--method", help="JSON-RPC method, e.g. tools/call, tools/list."),
    args: str = typer.Option("{}", "--args", help="Call arguments as a JSON object."),
    at: str | None = typer.Option(None, "--at", help="Decision time (epoch or ISO 8601); default now."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Print the decision (allow/deny/approve), the rules that matched and why.

    Exit status: 0 allow, 1 deny, 3 approve, 2 config or usage error.
    """
    loaded = load_or_exit(config)
    settings = loaded.settings
    if kind not in ("human", "service"):
        raise _fail("--kind must be human or service")
    targets = [(t, m) for t, m in ((tool, "tools/call"), (resource, "resources/read"), (prompt, "prompts/get")) if t]
    if len(targets) > 1:
        raise _fail("give at most one of --tool, --resource, --prompt")
    target = targets[0][0] if targets else None
    if method is None:
        if not targets:
            raise _fail("give --tool, --resource, --prompt or --method")
        method = targets[0][1]
    if target is not None:
        # the gateway decides on the URI's normal form and refuses ambiguous names and URIs before policy
        # (gateway/stages/target.py): judging the raw string answered another question than the gateway's
        from ledgergate.policy.rules import name_problem
        from ledgergate.policy.uri import UriRefused, normalize_uri

        if resource is not None:
            try:
                target = normalize_uri(resource)
            except UriRefused as exc:
                raise _fail(f"--resource: the gateway refuses this URI before policy: {exc}") from None
        elif (problem := name_problem(target)) is not None:
            raise _fail(f"the gateway refuses this name before policy: {problem}")
    arguments = _parse_json_object("--args", args, ARGS_MAX_DEPTH)
    claim_map = _parse_json_object("--claims", claims)
    now = _parse_time(at)
    try:
        engine = PolicyEngine.from_settings(settings.policies, set(settings.masking.profiles))
    except ValueError as exc:
        raise _fail(f"{config}: {exc}") from None
    if server not in settings.servers:
        # a typo would otherwise be judged like an unknown server and print "deny": a wrong answer, not an error
        known = ", ".join(sorted(settings.servers)) or "none"
        raise _fail(f"--server {server!r} is not in the config's servers (configured: {known})")
    warnings = tool_name_warnings(config, loaded, engine, server)
    for warning in warnings:  # stderr: stdout stays the decision (and one JSON object with --json)
        err.print(f"[yellow]warning[/yellow] {escape(str(config))}: {escape(warning)}", highlight=False)
    principal = Principal(
        issuer=issuer,
        subject=subject,
        kind=kind,  # type: ignore[arg-type]
        groups=frozenset(g.strip() for g in groups.split(",") if g.strip()),
        claims=claim_map,
    )
    # `--method notifications/…` asks about what clients send under that name: a notification
    explanation = engine.explain(principal, server, method, target, arguments, now,
                                 notification=method.startswith("notifications/"))
    d = explanation.decision
    if as_json:
        doc = {
            "decision": d.effect,
            "rule": d.rule,
            "mask": d.mask,
            "approvers": None if d.approvers is None else {
                "groups": list(d.approvers.groups), "subjects": list(d.approvers.subjects), "count": d.approvers.count,
                "justification": d.approvers.justification,
            },
            "reason": d.reason,
            "matched": list(d.matched),
            "condition_errors": list(d.condition_errors),
            "rules": [{"name": t.rule, "effect": t.effect, "status": t.status, "detail": t.detail}
                      for t in explanation.traces],
            "request": {"principal": principal.summary(), "server": server, "method": method,
                        "target": target, "args": arguments, "time": now},
            "warnings": warnings,
        }
        print(json.dumps(doc, indent=2, sort_keys=False))
    else:
        colour = {"allow": "green", "deny": "red", "approve": "yellow"}[d.effect]
        by = f" (rule {escape(d.rule)})" if d.rule else ""
        out.print(f"decision: [bold {colour}]{d.effect}[/]{by}", highlight=False)
        out.print(f"reason:   {escape(d.reason)}", highlight=False)
        if d.mask:
            out.print(f"mask:     {escape(d.mask)}", highlight=False)
        if d.approvers is not None:
            who = ", ".join([f"group {g}" for g in d.approvers.groups] + [f"subject {s}" for s in d.approvers.subjects])
            out.print(f"approvers: {d.approvers.count} of {escape(who)} (never the requester)", highlight=False)
        out.print("rules:", highlight=False)
        marks = {"matched": "[green]✓[/]", "condition-error": "[red]![/]", "condition-false": "·", "no-match": "·"}
        for t in explanation.traces:
            out.print(f"  {marks[t.status]} {escape(t.rule)} ({t.effect}): {escape(t.detail)}", highlight=False)
        if not explanation.traces:
            out.print("  (no rules configured)", highlight=False)
    raise typer.Exit(_EXIT[d.effect])
