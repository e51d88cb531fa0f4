"""A stdio MCP server for tests, written with the official SDK, whose calls go wrong the ways a real
server's do without it exiting: a handler that never returns, an answer under another request's id,
an answer with a byte that is not UTF-8, and a slow call that reports its progress.

Tools: `echo` (answers at once), `hang` (never answers), `wrong_id` (answers under another id, then
never), `bad_utf8` (answers with a 0xFF byte in its text), `slow` (reports progress every 0.3 s for
`seconds`, then answers).

Environment: `STALL_PID_FILE` — where the process writes its pid at start; `STALL_BEFORE_INIT=1` —
never read stdin at all (a server stuck while starting: `initialize` is never answered).

Run::

    python tests/servers/stalling_stdio_server.py
"""

import asyncio
import json
import os
import time

# Before the SDK is imported (1.7 s on a slow machine, longer than the tests' 1 s timeout): the pid is
# written, and a server stuck while starting is stuck, as soon as the process runs.
if os.environ.get("STALL_PID_FILE"):
    with open(os.environ["STALL_PID_FILE"], "a") as pid_file:
        pid_file.write(f"{os.getpid()}\n")
if os.environ.get("STALL_BEFORE_INIT"):
    time.sleep(3600)

from mcp.server.mcpserver import Context, MCPServer  # after the pid, see above

server = MCPServer(name="stalling", version="1.0.0", log_level="WARNING")
#: the pipe to the client, kept before the SDK diverts descriptor 1 (to stderr) while it serves
WIRE = os.dup(1)


def _raw_answer(request_id: object, text: bytes) -> None:
    """Write a tools/call answer straight to the pipe, as a server with its own framing would (one
    write of one whole line: the SDK's own writer is idle while the tool runs)."""
    head = b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode() + b',"result":{"content":[{"type":"text","text":"'
    os.write(WIRE, head + text + b'"}],"isError":false}}\n')


@server.tool()
def echo(text: str) -> str:
    """Answer at once."""
    return f"echo: {text}"


@server.tool()
async def hang() -> str:
    """Never answer (the process stays up and keeps serving other calls)."""
    await asyncio.Event().wait()
    return "never"


@server.tool()
async def wrong_id(ctx: Context) -> str:
    """Answer under an id nobody asked with, then never under the right one."""
    request_id = ctx.request_context.request_id
    _raw_answer(request_id + 1000 if isinstance(request_id, int) else f"{request_id}-other", b"misaddressed")
    await asyncio.Event().wait()
    return "never"


@server.tool()
async def bad_utf8(ctx: Context) -> str:
    """Answer with a byte that is not UTF-8 in the text (then never again: the answer is that line)."""
    _raw_answer(ctx.request_context.request_id, b"bad \xff byte")
    await asyncio.Event().wait()
    return "never"


@server.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Report progress every 0.3 s for `seconds`, then answer."""
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < seconds:
        step += 1
        await ctx.report_progress(step, None, f"step {step}")
        await asyncio.sleep(0.3)
    return f"done after {step} steps"


if __name__ == "__main__":
    server.run("stdio")
