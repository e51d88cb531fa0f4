"""The `servers` section of the config: the protected MCP servers and how to reach them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ledgergate.durations import Duration
from ledgergate.upstream.unix import is_unix_url, parse_unix_url


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Strict):
    """One protected MCP server: either `url` (Streamable HTTP or legacy SSE) or `command` (stdio)."""

    url: str | None = None
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    command: str | list[str] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    #: how long a call or an opening may go without a message from the server ("30s", "5m", or seconds)
    timeout: Duration = 300.0

    @model_validator(mode="after")
    def _one_kind(self) -> ServerSettings:
        if self.timeout <= 0:
            raise ValueError("'timeout' must be a positive duration")
        if (self.url is None) == (self.command is None):
            raise ValueError("a server needs exactly one of 'url' or 'command'")
        if self.url is not None and is_unix_url(self.url):
            try:
                parse_unix_url(self.url)
            except ValueError as exc:
                raise ValueError(f"'url': {exc}") from None
        elif self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("'url' must start with http:// or https:// (or unix:// for a Unix socket)")
        return self

    @property
    def argv(self) -> list[str]:
        if self.command is None:
            return []
        base = [self.command] if isinstance(self.command, str) else list(self.command)
        return base + list(self.args)


@dataclass(frozen=True)
class PoolLimits:
    """How many connections one upstream may hold, how long a caller waits for one, when idle ones close."""

    connections: int = 100
    keepalive_expiry: float = 4.0
    pool_timeout: float = 30.0
