"""The README's commands work as a newcomer reads them: a command that runs the tests says,
in the same paragraph, what installs what they need (the demo's install has no test extras)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _paragraphs() -> list[str]:
    return [p for p in re.split(r"\n\s*\n", README.read_text(encoding="utf-8")) if p.strip()]


def test_every_test_command_says_what_it_needs_first() -> None:
    runs = [p for p in _paragraphs() if "-m pytest" in p]
    assert runs, "the README names no test command"
    for paragraph in runs:
        before = paragraph[:paragraph.index("-m pytest")]
        assert "bash .ci/run" in before or ".[test]" in before, paragraph


def test_the_ci_script_installs_the_test_extras_and_peers_the_readme_names() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -q -e ".[test]"' in ci and "npm ci --prefix tests/peers" in ci
    text = README.read_text(encoding="utf-8")
    assert "pip install -e '.[test]'" in text and "npm ci --prefix tests/peers" in text


def _cli_synopsis() -> list[str]:
    """The README's CLI synopsis, one entry per command (continuation lines joined, comments dropped)."""
    block = README.read_text(encoding="utf-8").split("## CLI", 1)[1].split("```", 2)[1]
    entries: list[str] = []
    for raw in block.splitlines()[1:]:
        body = "" if raw.lstrip().startswith("#") else raw.split("  #", 1)[0].rstrip()
        if body.startswith("ledgergate "):
            entries.append(body)
        elif body.strip():
            entries[-1] += " " + body.strip()
    return entries


def _split_brackets(text: str) -> tuple[str, str]:
    """(what is outside [ ], what is inside)."""
    outside, inside, depth = [], [], 0
    for ch in text:
        depth += ch == "["
        (inside if depth else outside).append(ch)
        depth -= ch == "]"
    return "".join(outside), "".join(inside)


def test_the_cli_synopsis_brackets_exactly_the_optional_options() -> None:
    """`apikeys create --expires 30d|never` read as required (it defaults to 90d), and so did
    `--groups` there and `--groups`, `--tool`, `--args` of `policy check`: an option written outside
    brackets is one the command requires, one inside brackets one it does not."""
    import typer

    from ledgergate.cli import app

    root = typer.main.get_command(app)
    option = re.compile(r"(?<![\w-])--[a-z][\w-]*")
    wrong: list[str] = []
    entries = _cli_synopsis()
    assert len(entries) > 15, entries
    for entry in entries:
        outside, inside = _split_brackets(entry)
        words = outside.split()
        group = root.commands[words[1]]  # type: ignore[attr-defined]
        names = [words[2]] + [words[i + 1] for i, w in enumerate(words[:-1]) if w == "|"] \
            if hasattr(group, "commands") else []
        commands = [group.commands[n] for n in names] if names else [group]  # type: ignore[attr-defined]
        for command in commands:
            params = {opt: p for p in command.params for opt in p.opts}
            wrong += [f"{entry}: {o} is optional" for o in set(option.findall(outside))
                      if o in params and not params[o].required]
            wrong += [f"{entry}: {o} is required" for o in set(option.findall(inside))
                      if o in params and params[o].required]
    assert not wrong, "\n".join(wrong)


def test_the_synopsis_gives_the_default_of_apikeys_expires() -> None:
    import typer

    from ledgergate.cli import app

    create = typer.main.get_command(app).commands["apikeys"].commands["create"]  # type: ignore[attr-defined]
    default = next(p.default for p in create.params if "--expires" in p.opts)
    text = README.read_text(encoding="utf-8").split("## CLI", 1)[1]
    entry = text[text.index("ledgergate apikeys create"):].split("\nledgergate ", 1)[0]
    assert "[--expires 30d|never]" in entry and f"defaults to {default}" in entry, entry


def test_commands_to_paste_run_from_a_shell_without_the_venv() -> None:
    """The README's install never activates the venv, so a command to paste names `.venv/bin/ledgergate`:
    `EVERYTHING_KEY=dev-key ledgergate config validate …` answered `ledgergate: command not found`."""
    import subprocess

    text = README.read_text(encoding="utf-8")
    pasted = [m for m in re.findall(r"`([A-Z_]+=\S+ [^`]*ledgergate [^`]*)`", text)]
    assert pasted, "the README names no command with an environment variable"
    for command in pasted:
        assert " .venv/bin/ledgergate " in f" {command} ", command
        run = subprocess.run(["bash", "-c", command], cwd=README.parent, capture_output=True, text=True,
                             timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False)
        assert run.returncode == 0, (command, run.stdout, run.stderr)
