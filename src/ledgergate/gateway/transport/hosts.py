"""Which `Host` and `Origin` values name this gateway: the MCP transport spec's defence against
DNS rebinding. Checked before anything else runs, for every path."""

from __future__ import annotations

from urllib.parse import urlsplit

from ledgergate.numbers import parse_uint


class HostPolicy:
    """Which `Host` and `Origin` values name this gateway (MCP transport spec: DNS rebinding)."""

    def __init__(self, listen_host: str, port: int, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        names = {listen_host.strip("[]").lower(), "localhost", "127.0.0.1", "::1"}
        if listen_host in ("0.0.0.0", "::"):
            names.discard(listen_host)
        self.port = port
        self.hostnames = names | {h.lower() for h in allowed_hosts if ":" not in h.strip("[]") or h.startswith("[")}
        self.hostports = {h.lower() for h in allowed_hosts}
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}
        self._verdicts: dict[str, bool] = {}

    @staticmethod
    def _split(hostport: str) -> tuple[str, str | None]:
        if hostport.startswith("["):
            host, close, rest = hostport[1:].partition("]")
            if not close or (rest and not rest.startswith(":")):
                return hostport, None  # not an IP literal ("[::1", "[::1]x"): it names nothing
            return host, rest[1:] if rest else None
        host, sep, port = hostport.rpartition(":")
        return (host, port) if sep and parse_uint(port, 5) is not None else (hostport, None)

    def host_ok(self, value: str | None) -> bool:
        if not value:
            return False
        known = self._verdicts.get(value)
        if known is not None:
            return known
        verdict = self._host_ok(value)
        if len(self._verdicts) < 256:  # bounded: Host values are attacker-chosen
            self._verdicts[value] = verdict
        return verdict

    def _host_ok(self, value: str) -> bool:
        value = value.lower()
        if value in self.hostports:
            return True
        host, port = self._split(value)
        return host in self.hostnames and (port is None or parse_uint(port, 5) == self.port or value in self.hostports)

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:  # e.g. "http://[x" (an unclosed IPv6 literal): any page can send it
            return False
        return parts.scheme in ("http", "https") and bool(parts.netloc) and self.host_ok(parts.netloc)
