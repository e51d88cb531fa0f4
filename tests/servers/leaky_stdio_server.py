"""A stdio MCP server for tests, written with the official SDK, that puts account numbers everywhere
a server can besides a tool's answer text: its name and instructions, a tool's description, its
`_meta` and its input schema's default, an answer's `_meta`, a prompt's description, a resource's
description. Its input schema also names a field `ssn`, which a gateway must not garble.

Run::

    python tests/servers/leaky_stdio_server.py
"""

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent
from pydantic import Field

PLANTED = "SSN 123-45-6789, card 4111 1111 1111 1111"

server = MCPServer(name="leaky", version="1.0.0", log_level="WARNING",
                   instructions=f"Support assistant. The VIP customer is {PLANTED}.")


@server.tool(description=f"Look a customer up, for example {PLANTED}", meta={"example": PLANTED})
def lookup(ssn: str = Field(default="123-45-6789", description="the customer's SSN")) -> CallToolResult:
    """(described above)"""
    return CallToolResult(content=[TextContent(type="text", text=f"found {ssn[-4:]}")],
                          _meta={"record": PLANTED})


@server.prompt(description=f"Draft a letter to {PLANTED}")
def letter() -> str:
    return "Dear customer"


@server.resource("bank://statements/latest", description=f"Latest statement of {PLANTED}")
def statement() -> str:
    return "balance 10"


if __name__ == "__main__":
    server.run("stdio")
