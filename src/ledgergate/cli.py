"""The `ledgergate` command. Each verb group lives in `ledgergate.commands.*`;
a verb is registered here only once it works."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ledgergate.commands.common import ConfigOption, check_creatable, load_or_exit
from ledgergate.terminal import console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Identity-aware, audited gateway for MCP servers.",
                  epilog="A verb whose output is closed before it is all written (`… | head -1`) exits 141 "
                         "(128 + SIGPIPE, as the shell reports a process a closed pipe stopped), silently: "
                         "never 1, which `policy check` uses for deny.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
app.add_typer(config_app, name="config")

err = console(stderr=True)
out = console()





@config_app.command("validate")
def config_validate(config: Path = ConfigOption) -> None:
    """Load and validate a config file; exit 2 naming the key and line of each problem."""
    loaded = load_or_exit(config)
    s = loaded.settings
    # Compile what `serve` compiles (CEL conditions, masking profiles), so a config that validates starts.
    from ledgergate.masking.engine import Masker
    from ledgergate.policy.engine import PolicyEngine

    try:
        engine = PolicyEngine.from_settings(s.policies, set(Masker.from_settings(s.masking).profiles))
    except ValueError as exc:
        err.print(f"[red]error[/red] {config}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    from ledgergate.commands.policy import known_tools, tool_name_warnings
    from ledgergate.config import command_warnings
    from ledgergate.policy.toolnames import named_tools

    warnings = list(command_warnings(loaded))  # not a failure: the command may exist only where it is deployed
    if not s.servers:  # valid (a gateway may be set up before its servers), but it protects nothing yet
        warnings.append("no servers are configured: every /mcp/NAME answers 404 until one is added under 'servers'")
    elif not any(rule.effect == "allow" for rule in s.policies):
        warnings.append("no policy rule allows anything: every call is denied (default deny) until an 'allow' "
                        "rule is added under 'policies'")
    if named_tools(engine.rules, s.servers):  # a rule naming a tool no server lists (as far as the store knows)
        known = known_tools(loaded)
        for server in sorted(s.servers):
            warnings += [w for w in tool_name_warnings(config, loaded, engine, server, known) if w not in warnings]
    for warning in warnings:
        err.print(f"[yellow]warning[/yellow] {config}: {escape(warning)}", highlight=False)
    out.print(
        f"[green]ok[/green] {config}: {len(s.servers)} server(s), {len(s.policies)} policy rule(s), "
        f"{len(s.identity.oidc)} OIDC issuer(s)",
        highlight=False,
    )


class _StartupFailureOnce(logging.Filter):
    """A failed start, said once. The gateway logs `startup failed: WHY`; uvicorn then logs WHY again and
    `Application startup failed. Exiting.`: the same failure three times. uvicorn's two are dropped once
    the gateway's line has been let through (only then: a failure the gateway did not log stays visible)."""

    _UVICORN_EXIT = "Application startup failed. Exiting."

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        text = record.getMessage()
        if record.name == "ledgergate" and text.startswith("startup failed: "):
            self._said.add(text.removeprefix("startup failed: "))
            return True
        return not (record.name == "uvicorn.error" and self._said
                    and (text in self._said or text == self._UVICORN_EXIT))


@app.command()
def serve(config: Path = ConfigOption) -> None:
    """Run the gateway from a config file."""
    from ledgergate.app import run

    loaded = load_or_exit(config)
    check_creatable(loaded)  # a file where a folder of the store or key should be: named, not "File exists"
    once = _StartupFailureOnce()
    for name in ("ledgergate", "uvicorn.error"):  # a logger's filters stay when its handlers are replaced
        logging.getLogger(name).addFilter(once)
    run(loaded)


@app.command()
def demo(
    port: int = typer.Option(8080, min=1, max=65535,
                             help="Gateway port on 127.0.0.1 (1-65535); the identity provider takes PORT+1 "
                                  "(or any free port)."),
    data_dir: Path | None = typer.Option(
        None, help="Where the demo keeps its database, signing key and tokens "
                   "(default: ~/.local/state/ledgergate/demo, or under $XDG_STATE_HOME).",
        show_default=False),
) -> None:
    """Gateway + demo bank MCP server + development identity provider, all embedded."""
    from ledgergate.demo.run import run_demo

    run_demo(port=port, data_dir=data_dir)


def _register_optional() -> None:
    """Verb groups written by other modules; each registers itself only when present."""
    import importlib

    for module_name, group in (
        ("ledgergate.commands.audit", "audit"),
        ("ledgergate.commands.policy", "policy"),
        ("ledgergate.commands.apikeys", "apikeys"),
        ("ledgergate.commands.tools", "tools"),
        ("ledgergate.commands.sessions", "sessions"),
        ("ledgergate.commands.approvals", "approvals"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        app.add_typer(module.app, name=group)
        if group == "audit":
            # `audit siem` lives in its own module, beside the group's other verbs
            from ledgergate.commands.siem import siem

            module.app.command("siem")(siem)
            # one record's offline proof (C2SP tlog-proof): its own module too
            from ledgergate.commands.proofs import prove, verify_proof

            module.app.command("verify-proof")(verify_proof)
            module.app.command("prove")(prove)


_register_optional()


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


#: the exit status when the reader of our output went away (`… | head -1`): 128 + SIGPIPE, what a shell
#: reports for a process a closed pipe stopped; not 1, which `policy check` uses for "deny"
EXIT_CLOSED_PIPE = 141


def _closed_pipe() -> None:
    """Exit quietly: nobody reads what is left. stdout goes to /dev/null first, so the interpreter's
    final flush of what was buffered does not fail again ("Exception ignored … BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(EXIT_CLOSED_PIPE)


def _pipe_pacified() -> bool:
    """Whether typer (click) met a closed stdout: it then wraps stdout in its `PacifyFlushWrapper`."""
    return type(sys.stdout).__name__ == "PacifyFlushWrapper"


def _rich_broken_pipe(self: Any) -> None:
    """Rich's own answer to a closed pipe is `SystemExit(1)`, which `policy check` would mean as deny."""
    self.quiet = True
    _closed_pipe()


def main() -> None:
    """Run a verb. Whatever goes wrong is one line on stderr and a non-zero exit: usage errors
    exit 2 naming the option and the help command; a failure nobody foresaw exits 1 naming the
    error's type (LEDGERGATE_DEBUG=1 shows the traceback instead)."""
    from rich.console import Console

    Console.on_broken_pipe = _rich_broken_pipe  # type: ignore[method-assign]
    try:
        code = app(standalone_mode=False, prog_name="ledgergate")
        sys.stdout.flush()  # a closed pipe is found here, not at exit, where it would be reported as an error
    except BrokenPipeError:
        _closed_pipe()
    except SystemExit:
        # typer's own answer to a closed pipe inside a verb (a `print` of JSON lines to `| head -1`) is to wrap
        # stdout and exit 1, which `policy check` would mean as deny: every verb exits 141 instead
        if _pipe_pacified():
            _closed_pipe()
        raise
    except typer.Abort:
        err.print("[red]error[/red] aborted", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        # Usage errors are click's exceptions, which typer may vendor: known by their interface.
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]  # a verb group without a verb: its help
            sys.exit(2)
        exit_code = getattr(exc, "exit_code", None)
        if hasattr(exc, "format_message") and isinstance(exit_code, int):
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err.print(f"[red]error[/red] {escape(_one_line(exc.format_message()))}{escape(hint)}", highlight=False)
            sys.exit(exit_code)
        if os.environ.get("LEDGERGATE_DEBUG"):
            raise
        err.print(f"[red]error[/red] unexpected {type(exc).__name__}: {escape(_one_line(str(exc), 200))} "
                  "(this is a bug; LEDGERGATE_DEBUG=1 shows where)", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
