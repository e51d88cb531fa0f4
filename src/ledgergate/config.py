"""Loading and validating the one YAML config file.

Errors must name the key and the line, because the person reading them is an
operator with the file open in an editor. We compose the YAML node tree once to
learn where each key lives, substitute `${ENV}` references in scalar values,
then validate with pydantic and translate its error locations back to lines.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ledgergate.approvals.settings import ApprovalsSettings
from ledgergate.audit.settings import AuditSettings
from ledgergate.durations import Duration
from ledgergate.identity.settings import IdentitySettings
from ledgergate.masking.names import LEDGER_PROFILE
from ledgergate.masking.settings import MaskingSettings
from ledgergate.numbers import parse_uint
from ledgergate.policy.settings import (
    BudgetsSettings,
    PolicyRuleSettings,
    ToolDriftSettings,
)
from ledgergate.upstream.settings import ServerSettings

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: a DNS host name (RFC 1123 labels), as `listen` may name one
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
#: what `log_level` may say (any case), the levels Python's logging knows by name
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: the largest config file read; a bigger one (or /dev/zero) is refused before it is read whole
MAX_CONFIG_BYTES = 1024 * 1024


class _At(ValueError):
    """A problem a model validator found at `path` below its model (a key, a list index): the loader
    reports the line of that key rather than the model's."""

    def __init__(self, message: str, *path: str | int) -> None:
        super().__init__(message)
        self.path = path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsSettings(_Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: JSON values (objects, arrays, strings, numbers, literals) one message may hold, counted from the body's
    #: text before it is parsed (an empty object or array counts twice); one with more is answered 413,
    #: unparsed. Through the pipeline a value took up to 300 bytes (a 4 MiB body of one-key objects took the
    #: gateway up 300 MB), so this bounds one message to ~150 MB where the body size alone did not. Real
    #: payloads hold far fewer: a 3 MiB base64 file a handful, 5,000 records of ten fields 55,000, the
    #: 100,000-record message of tests/integration/test_large_messages.py 300,000. At least 65,536: a body
    #: under 64 KiB is not counted, and cannot hold more
    max_json_values: int = Field(default=500_000, ge=64 * 1024)
    #: JSON values of the large messages (bodies of 64 KiB or more) being processed at once, across the
    #: gateway; one that would go past it waits up to 10 s for others to end, then is answered 503 with
    #: `Retry-After`. 1.5 x `max_json_values`: one message at the cap and half as much besides (eight such
    #: messages at once took the gateway up 200-250 MB, measured), while a message of a few values (a large
    #: string) takes almost none of it. At least `max_json_values`, or a message at the cap would never fit
    json_values_in_flight: int = Field(default=750_000, ge=64 * 1024)
    #: a handshake session unused this long is closed ("30s", "1h", or seconds)
    session_idle_timeout: Duration = Field(default=3600.0, gt=0)
    #: open connections to each upstream server (an open event stream holds one); beyond it, calls wait
    upstream_connections: int = Field(default=100, ge=1)
    #: how long a call waits for a free upstream connection before it fails unsent
    upstream_pool_timeout: Duration = Field(default=30.0, gt=0)
    #: idle keep-alive upstream connections close after this (below the usual 5 s server default)
    upstream_keepalive_expiry: Duration = Field(default=4.0, gt=0)
    #: open handshake sessions one identity may hold (each may be a stdio child process)
    max_sessions_per_principal: int = Field(default=64, ge=1)
    #: a client's request head must be in within this of connecting (or of its first byte)
    client_header_timeout: Duration = Field(default=10.0, gt=0)
    #: a request body must be in within this of its head
    client_body_timeout: Duration = Field(default=60.0, gt=0)
    #: an idle kept-alive client connection is closed after this
    client_keepalive_timeout: Duration = Field(default=5.0, gt=0)
    #: clients connected at once; one more is answered 503 and closed
    max_client_connections: int = Field(default=1000, ge=1)
    #: a request's line and headers together; a longer head is answered 431 and closed
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    #: on SIGTERM, how long the calls in flight may take to finish (no new ones are taken meanwhile, and
    #: /readyz says not ready); those still running then are cut off, each answered with an error and
    #: recorded. Longer than approvals.hold (50s), so a held call ends as its hold does; the Kubernetes
    #: manifests' terminationGracePeriodSeconds (90) is this plus app.SHUTDOWN_MARGIN (docs/kubernetes.md §7)
    drain_timeout: Duration = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _one_message_fits_in_flight(self) -> LimitsSettings:
        if self.json_values_in_flight < self.max_json_values:
            # a message at the cap could never be admitted: it would wait and be refused 503 every time
            raise _At(f"must be at least limits.max_json_values ({self.max_json_values}): a message at that "
                      "cap would never fit", "json_values_in_flight")
        return self


class ConsoleRoles(_Strict):
    """Which IdP groups hold which console role (a person may hold several)."""

    approver: list[str] = Field(default_factory=lambda: ["approvers"])
    auditor: list[str] = Field(default_factory=lambda: ["auditors"])
    admin: list[str] = Field(default_factory=lambda: ["admins"])


class ConsoleSettings(_Strict):
    """The web console at /ui/: OIDC login (authorization code + PKCE) against `issuer`."""

    issuer: str | None = None  # default: the first identity.oidc issuer
    client_id: str = "ledgergate-console"
    client_secret: str | None = None  # for a confidential client: ${ENV}
    scopes: str = "openid profile"
    roles: ConsoleRoles = Field(default_factory=ConsoleRoles)
    session_ttl: Duration = Field(default=8 * 3600.0, gt=0)
    http_timeout: Duration = Field(default=10.0, gt=0)


class TelemetrySettings(_Strict):
    """OpenTelemetry traces over OTLP/HTTP, off unless `otlp_endpoint` is set (then the `otel` extra
    must be installed: `pip install 'ledgergate[otel]'`)."""

    #: the collector's base URL, e.g. http://otel-collector:4318 (spans go to <endpoint>/v1/traces)
    otlp_endpoint: str | None = None
    service_name: str = Field(default="ledgergate", min_length=1)
    #: headers sent to the collector (`${ENV}` for credentials)
    headers: dict[str, str] = Field(default_factory=dict)
    #: the share of requests traced (parent-less root spans), 0..1
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    #: how long one export to the collector may take
    timeout: Duration = Field(default=10.0, gt=0)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("'otlp_endpoint' must be an http:// or https:// URL (OTLP over HTTP)")
        return value


class Settings(_Strict):
    listen: str = "127.0.0.1:8080"
    data_dir: str = "./data"
    storage: str = "sqlite:///./data/ledgergate.db"
    public_url: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    servers: dict[str, ServerSettings] = Field(default_factory=dict)
    policies: list[PolicyRuleSettings] = Field(default_factory=list)
    masking: MaskingSettings = Field(default_factory=MaskingSettings)
    approvals: ApprovalsSettings = Field(default_factory=ApprovalsSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    budgets: BudgetsSettings = Field(default_factory=BudgetsSettings)
    tool_drift: ToolDriftSettings = Field(default_factory=ToolDriftSettings)
    console: ConsoleSettings | None = None  # absent: no web console
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    log_level: str = "info"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        number = parse_uint(port, 5)
        if not sep or not host or number is None or not 0 < number < 65536:
            raise ValueError("'listen' must be host:port, e.g. 127.0.0.1:8080")
        if not _listen_host_ok(host):
            raise ValueError("'listen' must be host:port with a host name, an IPv4 address or a bracketed IPv6 "
                             "address ([::1]:8080), e.g. 127.0.0.1:8080")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"'log_level' must be one of {', '.join(LOG_LEVELS)}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        # never echoed: a PostgreSQL URL may carry a password
        if value.startswith("sqlite:///"):
            path = value[len("sqlite:///"):]
            if not path or path.endswith(("/", "\\")) or "\x00" in path:
                raise ValueError("'storage': sqlite:/// needs the database file's path (sqlite:///./data/ledgergate.db)")
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return value
        raise ValueError("'storage' must be sqlite:///PATH or postgresql://user@host:port/db")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = _absolute_url_problem(value)
        if problem:
            raise ValueError(f"'public_url' must be the absolute http(s) URL clients reach the gateway at "
                             f"(https://gateway.example.com): {problem}")
        return value

    @field_validator("servers")
    @classmethod
    def _server_names(cls, value: dict[str, ServerSettings]) -> dict[str, ServerSettings]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"server name {name!r} must be letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Settings:
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.policies):
            if rule.name in seen:
                raise _At(f"policy rule name {rule.name!r} is used twice (first by policies[{seen[rule.name]}])",
                          "policies", i, "name")
            seen[rule.name] = i
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in self.tool_drift.servers:
            if name not in self.servers:
                known = ", ".join(sorted(self.servers)) or "none are configured"
                raise _At(f"{name!r} names no configured server (servers: {known})", "tool_drift", "servers", name)
        if self.audit.checkpoint_interval <= 0:
            # 0 is how a CLI command's ledger is opened (no checkpoints of its own); a gateway with it would
            # never sign a checkpoint, so no record would ever be covered by a signature or reach a witness
            raise _At("must be greater than 0: with 0 no checkpoint is ever signed, so no record is covered by a "
                      "signature or a witness", "audit", "checkpoint_interval")
        a = self.approvals
        if a.timeout <= a.hold:
            # an approval would expire while its call is still held: the hold never ends in "send the
            # identical call again once approved", every held call is simply refused as expired
            raise _At(f"approvals.timeout ({a.timeout:g}s) must be longer than approvals.hold ({a.hold:g}s): "
                      "every approval would expire while its call is still held", "approvals", "timeout")
        return self

    @property
    def host(self) -> str:
        """The listen address's host, an IPv6 address without its brackets (as a socket takes it)."""
        host = self.listen.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") and host.endswith("]") else host

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _listen_host_ok(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    try:
        ipaddress.ip_address(host)  # 0.0.0.0, 127.0.0.1, or a bare IPv6 address such as `::`
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def _absolute_url_problem(url: str) -> str | None:
    """Why `url` is not an absolute http(s) URL with a host (and a port in range), or None. Says
    nothing of the URL itself, which may carry credentials."""
    if not url.startswith(("http://", "https://")):
        return "it does not start with http:// or https://"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "it contains a space or a control character"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"it does not parse ({exc})"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "port 0 is not a port"
    if parts.username is not None or parts.password is not None:
        return "it must not carry a user name or password"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "it must not have a query (?…) or fragment (#…)"
    return None


class ConfigError(Exception):
    """A config problem, already phrased for the operator (key, line, what is wrong)."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {p}" for p in self.problems)


@dataclass
class LoadedConfig:
    settings: Settings
    path: Path | None
    base_dir: Path

    def resolve(self, relative: str) -> Path:
        """Paths in the config are relative to the config file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else (self.base_dir / p)


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _substitute_env(value: Any, path: tuple[Any, ...], env: dict[str, str], missing: list[tuple[Any, ...]]) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((*path, name))
            return ""

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, (*path, k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, (*path, i), env, missing) for i, v in enumerate(value)]
    return value


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_for(path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


#: what an empty document is told (a blank file, only comments, `null`)
EMPTY_CONFIG = ("line 1: the config is empty (no YAML document: the file is blank, holds only comments, or is "
                "`null`); nothing was loaded. A config names at least how callers are identified (identity) and the "
                "servers to protect (servers)")
#: nesting levels a config may use (the deepest real one uses about ten)
MAX_DEPTH = 64
#: values a config may expand to once aliases are followed ("billion laughs" stays a refusal, not a hang)
MAX_VALUES = 100_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _shape_problem(root: yaml.Node) -> str | None:
    """Why the composed document cannot be a config, or None: an alias that contains itself, nesting
    deeper than MAX_DEPTH, or more than MAX_VALUES values once aliases are expanded. Iterative, so
    neither a cycle nor a deep alias chain can exhaust the stack of what reads the document later."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    expanding: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if finished:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            expanding.discard(key)
            if height[key] > MAX_DEPTH:
                return f"line {line}: nested more than {MAX_DEPTH} levels deep"
            if size[key] > MAX_VALUES:
                return f"line {line}: the document expands to more than {MAX_VALUES} values (through aliases)"
            continue
        if key in size:
            continue
        expanding.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode) and (twice := _duplicate_key(node)) is not None:
            return twice
        for kid in _children(node):
            if id(kid) in expanding:
                return f"line {kid.start_mark.line + 1}: an alias refers to a value that contains it"
            stack.append((kid, False))
    return None


def _duplicate_key(mapping: yaml.MappingNode) -> str | None:
    """A key written twice in one mapping, or None. YAML's loaders keep the last copy silently, so a
    second `audit:` block (a paste, a merge gone wrong) would drop the first one's signing key or
    witnesses without a word; a config is refused instead. `<<` (a merge key) may repeat."""
    seen: dict[tuple[str, str], int] = {}
    for key, _ in mapping.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        first = seen.get((key.tag, key.value))
        if first is not None:
            return (f"line {line}: key {key.value[:80]!r} appears twice in one mapping (first on line {first}); "
                    "YAML would keep only the second")
        seen[(key.tag, key.value)] = line
    return None


def _flow_too_deep(text: str) -> int | None:
    """The line where `[`/`{` nesting outside quotes passes MAX_DEPTH, or None. Checked before the
    YAML parser runs, because PyYAML's scanner slows down with each open flow level (seconds for a
    few thousand) before it fails on the recursion limit."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        quote = ""
        for char in line:
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#":
                break
            elif char in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    return number
            elif char in "]}":
                depth = max(0, depth - 1)
    return None


def _deep_line(text: str) -> int:
    """The first line whose indentation passes MAX_DEPTH levels (best effort), else 1."""
    for number, line in enumerate(text.splitlines(), 1):
        if (len(line) - len(line.lstrip(" "))) // 2 > MAX_DEPTH:
            return number
    return _flow_too_deep(text) or 1


def parse_config(text: str, source: str = "config", env: dict[str, str] | None = None) -> Settings:
    """Validate config text; raises ConfigError naming key and line for every problem."""
    env = dict(os.environ) if env is None else env
    try:
        deep = _flow_too_deep(text)
        if deep is not None:
            raise ConfigError([f"line {deep}: nested more than {MAX_DEPTH} levels deep"], source)
        node = yaml.compose(text)
        shape_problem = _shape_problem(node) if node is not None else None
        if shape_problem:
            raise ConfigError([shape_problem], source)
        raw = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, most C0/C1 controls)
        at = text.count("\n", 0, max(0, exc.position)) + 1
        raise ConfigError([f"line {at}: invalid YAML: character U+{exc.character:04X} is not allowed"
                           if isinstance(exc.character, int) else f"line {at}: invalid YAML: {exc.reason}"],
                          source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else "line 1: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], source) from None
    except RecursionError:  # the YAML parser itself recurses once per nesting level
        raise ConfigError([f"line {_deep_line(text)}: nested more than {MAX_DEPTH} levels deep"], source) from None
    if raw is None:
        # An empty file (0 bytes, only comments or blank lines, `null`, `~`) would otherwise run with every
        # default: no issuer, no server, no policy. A truncated save, a `> file` typo or a ConfigMap caught
        # empty must not turn a gateway into one that refuses everyone, nor be taken by a reload.
        raise ConfigError([EMPTY_CONFIG], source)
    if not isinstance(raw, dict):
        raise ConfigError(["line 1: the config must be a mapping of keys (listen, servers, policies, ...)"], source)
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    missing: list[tuple[Any, ...]] = []
    raw = _substitute_env(raw, (), env, missing)
    if missing:
        raise ConfigError(
            [
                f"line {_line_for(p[:-1], lines)}: {_dotted(p[:-1])}: environment variable {p[-1]} is not set"
                for p in missing
            ],
            source,
        )
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-")))
            line = _line_for(loc, lines)
            located = (err.get("ctx") or {}).get("error")
            if isinstance(located, _At):
                loc = (*loc, *located.path)
                line = _line_for(loc, lines)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"line {line}: {_dotted(loc)}: {msg}")
        raise ConfigError(problems, source) from None
    inert = _inert_rule_problems(settings, lines) + _rule_problems(settings, lines)
    if inert:
        raise ConfigError(inert, source)
    nobody = no_identity_problem(settings)
    if nobody:
        raise ConfigError([f"line {_line_for(('identity',), lines)}: {nobody}"], source)
    return settings


def no_identity_problem(settings: Settings) -> str | None:
    """Why no caller could ever be authenticated under `settings`, or None. Every identity is an
    `identity.oidc` issuer (people and agents from the IdP, Kubernetes service accounts, GitHub Actions)
    or an API key; with no issuer and API keys off, every request would be refused 401."""
    if settings.identity.oidc or settings.identity.api_keys:
        return None
    return ("identity: no caller could ever be authenticated: identity.oidc lists no issuer and "
            "identity.api_keys is false, so every request would be refused (401). Add your IdP (Kubernetes "
            "service accounts and GitHub Actions are issuers too) to identity.oidc, or set identity.api_keys: true")


def _inert_rule_problems(settings: Settings, lines: dict[tuple[Any, ...], int]) -> list[str]:
    """`match` entries that can never match anything: a near miss of a configured server (`Bank`, `bnak`), a method
    MCP does not have (`tool/call`), a subject written `issuer#subject` (subjects are matched alone, from
    any issuer). A deny rule written so is silently inert — the call it was meant to stop goes through —
    so, as an off-boarding entry that could never match, it is refused with its line."""
    import difflib
    from fnmatch import fnmatchcase

    from ledgergate.policy.rules import names_a_method

    problems: list[str] = []

    def problem(loc: tuple[Any, ...], text: str) -> None:
        problems.append(f"line {_line_for(loc, lines)}: {_dotted(loc)}: {text}")

    servers = list(settings.servers)
    for i, rule in enumerate(settings.policies):
        match = rule.match
        for j, pattern in enumerate(match.servers or []):
            if not servers or any(fnmatchcase(name, pattern) for name in servers):
                continue
            # one policy may serve gateways with different servers, so a name configured elsewhere is fine;
            # one that is a near miss of a server configured here (`Bank`, `bnak`, `banks`) is a typo
            near = difflib.get_close_matches(pattern.lower(), [n.lower() for n in servers], n=1, cutoff=0.75)
            if near:
                problem(("policies", i, "match", "servers", j),
                        f"{pattern!r} names no configured server (did you mean {near[0]!r}?): rule {rule.name!r} "
                        "could never match")
        for j, pattern in enumerate(match.methods or []):
            if not names_a_method(pattern):
                problem(("policies", i, "match", "methods", j),
                        f"{pattern!r} names no MCP method (e.g. tools/call, resources/read, prompts/get, "
                        f"sampling/createMessage, notifications/…): rule {rule.name!r} could never match")
        for j, pattern in enumerate(match.subjects or []):
            issuer, sep, subject = pattern.rpartition("#")
            if sep and "://" in issuer:
                problem(("policies", i, "match", "subjects", j),
                        f"{pattern!r}: subjects are matched alone (a token's `sub`, from any configured issuer), "
                        f"so an issuer#subject entry never matches; write {subject!r}")
    return problems


def _rule_problems(settings: Settings, lines: dict[tuple[Any, ...], int]) -> list[str]:
    """What building the policy engine would refuse (a bad or unknown CEL function, an unknown mask
    profile, approvers missing or misplaced), every rule at once, each with its line."""
    from ledgergate.policy.engine import PolicyEngine

    known = {*settings.masking.profiles, LEDGER_PROFILE}  # what `Masker.from_settings` will hold
    out = []
    for i, key, message in PolicyEngine.rule_problems(settings.policies, known):
        loc: tuple[Any, ...] = ("policies", i) if key is None else ("policies", i, key)
        out.append(f"line {_line_for(loc, lines)}: {_dotted(loc)}: {message}")
    return out


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _read_config_file(p: Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_CONFIG_BYTES. Opened without blocking (a FIFO
    would wait for a writer forever) and checked on the open descriptor, so nothing swapped in between
    is read; /dev/zero, a pipe or a directory is refused before a byte is read."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], str(p)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError([f"cannot read the file: it is {_file_kind(mode)}, not a regular file"], str(p))
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], str(p)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"the file is larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the most a config may be"],
                          str(p))
    return data


def load_config(path: str | Path, env: dict[str, str] | None = None) -> LoadedConfig:
    p = Path(path)
    try:
        # newlines as text mode reads them (\r\n and \r become \n), as before the size cap
        text = _read_config_file(p).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], str(p)) from None
    settings = parse_config(text, str(p), env)
    return LoadedConfig(settings=settings, path=p.resolve(), base_dir=p.resolve().parent)


def command_warnings(loaded: LoadedConfig) -> list[str]:
    """What `config validate` warns of, without failing: a stdio server whose `command` is not found (on
    the PATH it would run with, or at its path from the server's `cwd`) or is not executable here. Only a
    warning: the command may exist only in the image the gateway is deployed in. Names the command's path
    only, never its arguments or environment (they may carry secrets)."""
    warnings: list[str] = []
    for name, server in loaded.settings.servers.items():
        argv = server.argv
        if not argv:
            continue
        program = argv[0]
        cwd = loaded.resolve(server.cwd) if server.cwd else loaded.base_dir
        if os.sep in program or (os.altsep and os.altsep in program):
            path = Path(program) if Path(program).is_absolute() else cwd / program
            if not path.is_file():
                problem = "does not exist" if not path.exists() else "is not a file"
            elif not os.access(path, os.X_OK):
                problem = "is not executable"
            else:
                continue
        else:
            search = server.env.get("PATH", os.environ.get("PATH", os.defpath))
            if shutil.which(program, path=search) is not None:
                continue
            problem = "is not found on PATH (or is not executable)"
        warnings.append(f"servers.{name}.command: {program!r} {problem} here; sessions of {name!r} will fail "
                        f"to start unless it exists where the gateway runs")
    return warnings


def config_from_settings(settings: Settings, base_dir: Path | None = None) -> LoadedConfig:
    return LoadedConfig(settings=settings, path=None, base_dir=(base_dir or Path.cwd()).resolve())
