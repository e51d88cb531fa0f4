"""The `servers` section of the config: the protected MCP servers and how to reach them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ledgergate.durations import Duration
from ledgergate.upstream.unix import is_unix_url, parse_unix_url

#: a host name as the upstream clients connect to it: letters, digits, '-', '_' and '.' (no spaces, no '%')
_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")


def http_url_problem(url: str) -> str | None:
    """Why `url` cannot be an upstream http(s) URL the gateway connects to, or None. The message never
    quotes the URL: its user name, password or query may be secrets (`${ENV}` substituted)."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https:// (or unix:// for a Unix socket)"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        text = str(exc)
        if "Port" in text or "port" in text:
            return "the port must be a number from 1 to 65535"
        return "is not a valid URL (a host in [brackets] must be an IPv6 address, its brackets closed)"
    host = parts.hostname
    if not host:
        return "needs a host (http://HOST[:PORT]/PATH)"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    if parts.fragment or "#" in url:
        return "must not have a fragment (#…): it is never sent to a server"
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return "the host in [brackets] must be an IPv6 address"
    elif not _HOST.match(host):
        return "the host must be a host name or an IP address"
    return None


#: `servers.<name>.max_processes` when not given
DEFAULT_MAX_PROCESSES = 32
#: `servers.<name>.max_processes_per_principal` when not given is `max_processes` divided by this (at
#: least 1; `ServerSettings.principal_process_cap`)
PRINCIPAL_SHARE_OF_PROCESSES = 4


def default_principal_process_cap(max_processes: int) -> int:
    """One identity's share of a stdio server's children when the config names none: a quarter, so by
    default at least four identities fit before the server is full and no one identity can fill it (8 of
    the default 32, well under `max_sessions_per_principal`'s 64). Derived, not a fixed number, so that a
    config lowering `max_processes` below it stays valid and still keeps a share for others; at least 1,
    or no session could open (with `max_processes` 1 the one child is necessarily one identity's)."""
    return max(1, max_processes // PRINCIPAL_SHARE_OF_PROCESSES)


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
    #: the most child processes of this (stdio) server running at once, across every identity and session:
    #: each session starts one, and without a bound across identities many of them (or one identity's
    #: `max_sessions_per_principal` sessions) could start hundreds of a large server and exhaust the host
    max_processes: int = DEFAULT_MAX_PROCESSES
    #: the most of those children one identity's sessions run at once (None: `default_principal_process_cap`):
    #: without it one identity's sessions could hold every slot of `max_processes`, and every other identity
    #: would be refused the server until they ended
    max_processes_per_principal: int | None = None

    @field_validator("max_processes", "max_processes_per_principal")
    @classmethod
    def _process_cap(cls, value: int | None, info: ValidationInfo) -> int | None:
        # run only when the key is given (not for the default); on the field, so the error names
        # `servers.<name>.<key>` and its own line. `url` is declared first, so it is in `info.data`.
        if info.data.get("url") is not None:
            raise ValueError("applies only to a stdio server (one with 'command'): the gateway starts no "
                             "processes for a 'url' server, so the key would limit nothing; remove it")
        if value is None:
            raise ValueError("must be a whole number of at least 1; leave the key out for its default")
        if value < 1:
            raise ValueError("must be at least 1: below that no session of this server could ever open")
        # `max_processes` is declared first: in `info.data` if it is valid (its default included)
        total = info.data.get("max_processes")
        if info.field_name == "max_processes_per_principal" and isinstance(total, int) and value > total:
            raise ValueError(f"must be at most this server's max_processes ({total}): one identity can never "
                             "run more children than the server runs in all, so the key would limit nothing")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        # on the field, so the error names `servers.<name>.timeout` and its own line, not the server's
        if value <= 0:
            raise ValueError("must be a positive duration: with 0 every call would time out at once")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ServerSettings:
        if (self.url is None) == (self.command is None):
            raise ValueError("a server needs exactly one of 'url' or 'command'")
        if self.url is not None and is_unix_url(self.url):
            try:
                parse_unix_url(self.url)
            except ValueError as exc:
                raise ValueError(f"'url': {exc}") from None
        elif self.url is not None and (problem := http_url_problem(self.url)) is not None:
            raise ValueError(f"'url' {problem}")
        return self

    @property
    def principal_process_cap(self) -> int:
        """The most children of this server one identity's sessions may run at once."""
        if self.max_processes_per_principal is not None:
            return self.max_processes_per_principal
        return default_principal_process_cap(self.max_processes)

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
