"""Consoles for everything the CLI prints.

Rich wraps at the terminal's width, and at 80 columns when the output is not a
terminal. A pipe has no width: scripts that read `audit verify` or `config
validate` must get each sentence on one line whatever the length of the paths
in it, so a console that does not write to a terminal never wraps, never pads
and never colours. On a terminal rich's layout stays as it is.
"""

from __future__ import annotations

from rich.console import Console

# Wide enough that tables and panels size to their content, not to a guessed width.
_PIPE_WIDTH = 1 << 15


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that wraps only on a terminal."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=_PIPE_WIDTH,
                   no_color=True, emoji=False)
