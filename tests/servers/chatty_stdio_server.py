"""A stdio MCP server for tests, written with the official SDK, that logs what it is asked to stderr,
as many real servers do ("lookup for customer ..."): one tool, `lookup`, whose argument it writes to
stderr together with an account number before it answers.

Run::

    python tests/servers/chatty_stdio_server.py
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="chatty", version="1.0.0", log_level="WARNING")


@server.tool()
def lookup(customer: str) -> str:
    """Look a customer up (and say so on stderr, account number included)."""
    print(f"lookup for {customer}: SSN 123-45-6789, card 4111 1111 1111 1111", file=sys.stderr, flush=True)
    return f"found {customer}"


if __name__ == "__main__":
    server.run("stdio")
