"""Upstream URLs that name a Unix socket: `unix:///run/mcp/mcp.sock:/mcp`.

Why: in the Kubernetes sidecar layout the MCP server listens on a socket in an emptyDir shared
only with the gateway's container, so nothing else in the pod or the cluster can reach it (a
NetworkPolicy cannot stop traffic that never leaves the pod, and a loopback port can leak).

Syntax: `unix://` + the socket's absolute path + optionally `:` and the HTTP path (with query)
to request on it, default `/`. The socket path is everything up to the first `:`, so it may not
contain one. Requests go over the socket as plain HTTP/1.1 with `Host: localhost:80` (with the
port, because the MCP SDKs' DNS-rebinding guard admits `localhost:*` but not a bare `localhost`).

Pure: parsing only, no I/O (config validation and the upstream pool both use it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SCHEME = "unix://"
HOST = "localhost"
#: sun_path holds 108 bytes on Linux, including the terminating NUL
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class UnixURL:
    socket_path: str
    target: str  # the HTTP request target: path and query

    @property
    def http_url(self) -> str:
        """The same request as an http URL: what the HTTP client builds its requests from."""
        return f"http://{HOST}{self.target}"


def is_unix_url(url: str) -> bool:
    return url.startswith(SCHEME)


def parse_unix_url(url: str) -> UnixURL:
    """Split a unix:// URL; ValueError says precisely what is wrong, for the config's error message."""
    if not is_unix_url(url):
        raise ValueError(f"not a {SCHEME} URL")
    rest = url[len(SCHEME):]
    socket_path, sep, target = rest.partition(":")
    if not socket_path.startswith("/"):
        raise ValueError(f"{SCHEME} needs the socket's absolute path, e.g. unix:///run/mcp/mcp.sock:/mcp")
    if socket_path.endswith("/"):
        raise ValueError(f"the socket path {socket_path!r} names a folder, not a socket")
    if any(ch in socket_path for ch in "\x00\r\n\t ?#"):
        raise ValueError("the socket path may not contain spaces, control characters, '?' or '#'")
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"the socket path is longer than {MAX_SOCKET_PATH_BYTES} bytes (the limit of a Unix socket address)")
    if not sep:
        target = "/"
    elif not target.startswith("/"):
        raise ValueError("after the socket path, ':' must be followed by the HTTP path, e.g. ':/mcp'")
    if any(ch <= " " or ch == "#" for ch in target):
        raise ValueError("the HTTP path may not contain spaces, control characters or '#'")
    return UnixURL(socket_path, target)
