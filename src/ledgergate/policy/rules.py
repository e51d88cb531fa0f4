"""Policy rules: compile `policies` settings into matchers, and classify MCP methods.

Two matchers with one meaning:

- `CompiledRule.static_match` answers, for one rule, "does every given match
  field accept this request, and if not, which one refused?" It is the
  definition (used by `policy check` to explain, and by tests as the oracle).
- `RuleIndex` answers the same question for all rules at once with bitmasks
  (one bit per rule, rule order = bit order), so a decision over 100 rules costs
  a handful of dict lookups instead of 100 × 8 glob matches.

How methods are governed (see docs/policy.md):

- target methods: `tools/call` (tool), `resources/read|subscribe|unsubscribe`
  (resource), `prompts/get` (prompt), `completion/complete` (the prompt or
  resource it completes for). A rule with `tools`/`resources`/`prompts`
  matches only these, unless `methods` is given.
- housekeeping: `initialize`, `ping`, `server/discover`, `logging/setLevel`,
  `subscriptions/listen`, `notifications/*` (as notifications: a request so
  named is decided like any other method), `tasks/*` and the list methods.
  The engine allows them to a principal that some allow rule lets use the
  server, unless a deny rule matches them.
- server-to-client: `sampling/createMessage`, `elicitation/create`,
  `roots/list` are matched only by a rule whose `methods` names them (a
  pattern such as `*` does not count), so they are refused by default.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from ledgergate.invisible import first_hidden
from ledgergate.principal import Principal
from ledgergate.policy.cel import CelCompileError, Condition
from ledgergate.policy.decision import ApproverSpec, Effect
from ledgergate.policy.settings import PolicyRuleSettings

TargetKind = Literal["tool", "resource", "prompt"]

TARGET_KIND: dict[str, TargetKind] = {
    "tools/call": "tool",
    "resources/read": "resource",
    "resources/subscribe": "resource",
    "resources/unsubscribe": "resource",
    "prompts/get": "prompt",
}
COMPLETION_METHOD = "completion/complete"
COMPLETION_PROMPT_PREFIX = "ref/prompt:"
COMPLETION_RESOURCE_PREFIX = "ref/resource:"

LIST_METHODS: dict[str, str] = {
    "tools/list": "tools/call",
    "resources/list": "resources/read",
    "resources/templates/list": "resources/read",
    "prompts/list": "prompts/get",
}
"""A list method and the method whose decision governs each listed item."""

LIST_ITEM_KEY: dict[str, str] = {
    "tools/list": "name",
    "resources/list": "uri",
    "resources/templates/list": "uriTemplate",
    "prompts/list": "name",
}

HOUSEKEEPING_METHODS: frozenset[str] = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "logging/setLevel",
        "subscriptions/listen",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        *LIST_METHODS,
    }
)
SERVER_TO_CLIENT_METHODS: frozenset[str] = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})
#: every request method of MCP (both eras) a rule's `methods` can name; notifications are `notifications/…`
KNOWN_METHODS: frozenset[str] = frozenset(
    {*HOUSEKEEPING_METHODS, *TARGET_KIND, COMPLETION_METHOD, *SERVER_TO_CLIENT_METHODS})


def names_a_method(pattern: str) -> bool:
    """Whether a `methods` entry can match anything: a known method, a notification, or a glob over them."""
    return pattern.startswith("notifications/") or any(fnmatchcase(m, pattern) for m in KNOWN_METHODS) \
        or fnmatchcase("notifications/message", pattern)

_IMPLIED_METHODS: dict[str, frozenset[str]] = {
    "tools": frozenset({"tools/call"}),
    "resources": frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe", COMPLETION_METHOD}),
    "prompts": frozenset({"prompts/get", COMPLETION_METHOD}),
}
_FIELD_OF_KIND: dict[TargetKind, str] = {"tool": "tools", "resource": "resources", "prompt": "prompts"}
_GLOB_CHARS = frozenset("*?[")


def is_housekeeping(method: str, notification: bool = False) -> bool:
    """Protocol plumbing a client needs to use a server at all (see module docstring). `notifications/*`
    only when the message is one (no `id`): a request so named is no notification of MCP, and was allowed
    to anyone with any allow rule on the server, unrecorded as to its target, and forwarded; it is decided
    like any other method (by default, denied). Fails closed: a caller that does not say it holds a
    notification gets the request's answer."""
    return method in HOUSEKEEPING_METHODS or (notification and method.startswith("notifications/"))


def is_server_to_client(method: str) -> bool:
    return method in SERVER_TO_CLIENT_METHODS


def name_problem(name: str) -> str | None:
    """Why a tool or prompt name cannot be decided on as written, or None. Rules match names exactly
    (or by glob), so a name with a trailing space, a tab, a NUL or a zero-width character passes a rule
    that denies the plain name, and an upstream that trims or stops at such a character runs the denied
    tool. No legitimate name holds them (MCP's naming guidance: letters, digits, `_`, `-`, `.`, `/`)."""
    if not name:
        return "the name is empty"
    if name != name.strip():
        return "the name starts or ends with white space"
    # the characters a reader does not see are the console's and the CLI's too (`ledgergate.invisible`): a
    # name holding a variation selector or a Hangul filler reads as the plain name on every screen
    if (char := first_hidden(name)) is not None:
        return f"the name holds the invisible or control character U+{ord(char):04X}"
    if name.isascii():
        return None  # the common case costs nothing more: ASCII neither folds, nor combines, nor mixes scripts
    return _lookalike_problem(name)


#: scripts with letters drawn like Latin ones (Unicode's confusables: Cyrillic а е о р с ѕ і, Greek ο ν ι,
#: Armenian օ ս, Cherokee Ꭺ Ꮯ …), by the first word of a letter's Unicode name
_LOOKALIKE_SCRIPTS = frozenset({"CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"})


def _lookalike_problem(name: str) -> str | None:
    """Why a non-ASCII name could read as another name, or None. Rules match names exactly or by glob, so
    `export_customerｓ` (a full-width s), `export_customers` + U+0301 or `export_customerѕ` (Cyrillic dze)
    passes an `export_*` allow and misses an `export_customers` deny, and an upstream that folds names
    (NFKC, or a font) runs the denied tool. A name written in one script (`読む`, `Ελληνικά`, Devanagari
    with its vowel signs) passes."""
    if not unicodedata.is_normalized("NFKC", name):
        return (f"the name is not in Unicode normal form NFKC (it folds to "
                f"{unicodedata.normalize('NFKC', name)!r})")
    latin = lookalike = False
    base_is_latin = False  # whether the last character that is not a mark is ASCII or a Latin letter
    for ch in name:
        if ch.isascii():
            latin = latin or ch.isalpha()
            base_is_latin = True
            continue
        category = unicodedata.category(ch)
        script = unicodedata.name(ch, "").partition(" ")[0]
        if category[0] == "M":
            # a mark of the script it belongs to (a Devanagari vowel sign on a Devanagari letter) is part of the
            # word; a generic diacritic ("COMBINING …"), or any mark on a Latin letter, draws another name's look
            if base_is_latin or script == "COMBINING":
                return f"the name holds the combining mark U+{ord(ch):04X}"
            continue
        base_is_latin = script == "LATIN"
        if category[0] == "L":
            latin = latin or base_is_latin
            lookalike = lookalike or script in _LOOKALIKE_SCRIPTS
    if latin and lookalike:
        return "the name mixes Latin letters with Cyrillic, Greek, Armenian or Cherokee ones, which look alike"
    return None


def request_target(method: str, params: Any) -> str | None:
    """The `target` to pass to `PolicyEngine.decide` for a request's params.

    tools/call → tool name; resources/read|subscribe|unsubscribe → uri;
    prompts/get → prompt name; completion/complete → `ref/prompt:NAME` or
    `ref/resource:URI` (so one string says which kind it is); else None.
    """
    if not isinstance(params, dict):
        return None
    kind = TARGET_KIND.get(method)
    value: Any
    if kind == "resource":
        value = params.get("uri")
    elif kind is not None:
        value = params.get("name")
    elif method == COMPLETION_METHOD:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            return None
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            return COMPLETION_PROMPT_PREFIX + ref["name"]
        if ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            return COMPLETION_RESOURCE_PREFIX + ref["uri"]
        return None
    else:
        return None
    return value if isinstance(value, str) else None


def split_target(method: str, target: str | None) -> tuple[TargetKind | None, str | None]:
    """(kind, bare target): what a target string names for this method."""
    if target is None:
        return None, None
    kind = TARGET_KIND.get(method)
    if kind is not None:
        return kind, target
    if method == COMPLETION_METHOD:
        if target.startswith(COMPLETION_PROMPT_PREFIX):
            return "prompt", target[len(COMPLETION_PROMPT_PREFIX):]
        if target.startswith(COMPLETION_RESOURCE_PREFIX):
            return "resource", target[len(COMPLETION_RESOURCE_PREFIX):]
    return None, target


def _is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


def _names_server_to_client(pattern: str, method: str) -> bool:
    """A `methods` entry allows a server-to-client method only when it names its family.

    `sampling/createMessage` and `sampling/*` do; `*` or `*/create` do not:
    these requests reach the human's client (an LLM call, a form), so a broad
    wildcard written for client requests must not open them.
    """
    family = pattern.split("/", 1)[0]
    return not _is_glob(family) and fnmatchcase(method, pattern)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    name: str
    effect: Effect
    groups: frozenset[str] | None
    subjects: tuple[str, ...] | None
    kinds: frozenset[str] | None
    servers: tuple[str, ...] | None
    methods: tuple[str, ...] | None
    tools: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    prompts: tuple[str, ...] | None
    condition: Condition | None
    mask: str | None
    approvers: ApproverSpec | None

    @property
    def has_target(self) -> bool:
        return self.tools is not None or self.resources is not None or self.prompts is not None

    @property
    def implied_methods(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for field in ("tools", "resources", "prompts"):
            if getattr(self, field) is not None:
                out |= _IMPLIED_METHODS[field]
        return out

    def matches_principal(self, principal: Principal) -> str | None:
        """None when the principal fields accept; else why not."""
        if self.groups is not None and self.groups.isdisjoint(principal.groups):
            return f"groups: needs one of {sorted(self.groups)}"
        if self.subjects is not None and not any(fnmatchcase(principal.subject, p) for p in self.subjects):
            return f"subjects: {principal.subject!r} matches none of {list(self.subjects)}"
        if self.kinds is not None and principal.kind not in self.kinds:
            return f"kinds: {principal.kind!r} is not one of {sorted(self.kinds)}"
        return None

    def matches_server(self, server: str) -> str | None:
        if self.servers is not None and not any(fnmatchcase(server, p) for p in self.servers):
            return f"servers: {server!r} matches none of {list(self.servers)}"
        return None

    def matches_method(self, method: str) -> str | None:
        if self.methods is not None:
            if is_server_to_client(method):
                if not any(_names_server_to_client(p, method) for p in self.methods):
                    return f"methods: server-to-client {method!r} must be named explicitly"
                return None
            if not any(fnmatchcase(method, p) for p in self.methods):
                return f"methods: {method!r} matches none of {list(self.methods)}"
            return None
        if is_server_to_client(method):
            return f"methods: server-to-client {method!r} is only matched by a rule that names it in 'methods'"
        if self.has_target and method not in self.implied_methods:
            return f"methods: a rule on {', '.join(self._target_fields())} covers {sorted(self.implied_methods)}, not {method!r}"
        return None

    def _target_fields(self) -> list[str]:
        return [f for f in ("tools", "resources", "prompts") if getattr(self, f) is not None]

    def matches_target(self, kind: TargetKind | None, target: str | None) -> str | None:
        if not self.has_target:
            return None
        if target is None:
            return f"{'/'.join(self._target_fields())}: the request names no target"
        if kind is not None:
            field = _FIELD_OF_KIND[kind]
            patterns: tuple[str, ...] | None = getattr(self, field)
            if patterns is None:
                return f"{'/'.join(self._target_fields())}: the request is for a {kind}"
            if not any(fnmatchcase(target, p) for p in patterns):
                return f"{field}: {target!r} matches none of {list(patterns)}"
            return None
        for field in self._target_fields():
            if any(fnmatchcase(target, p) for p in getattr(self, field)):
                return None
        return f"{'/'.join(self._target_fields())}: {target!r} matches none"

    def static_match(
        self, principal: Principal, server: str, method: str, kind: TargetKind | None, target: str | None
    ) -> str | None:
        """None if every given match field accepts the request (ignoring `when`); else the first refusal."""
        return (
            self.matches_principal(principal)
            or self.matches_server(server)
            or self.matches_method(method)
            or self.matches_target(kind, target)
        )


def compile_rule(index: int, settings: PolicyRuleSettings, known_profiles: set[str] | None) -> CompiledRule:
    """Check one rule's meaning; raises ValueError starting with the rule's name."""
    where = f"policy rule {settings.name!r}"
    condition = None
    if settings.when is not None:
        try:
            condition = Condition.compile(settings.when)
        except CelCompileError as exc:
            raise ValueError(f"{where}: when: {exc}") from None
    if settings.mask is not None and known_profiles is not None and settings.mask not in known_profiles:
        known = ", ".join(sorted(known_profiles)) or "none are defined"
        raise ValueError(f"{where}: mask: unknown masking profile {settings.mask!r} (known: {known})")
    if settings.mask is not None and settings.effect == "deny":
        raise ValueError(f"{where}: mask: a deny rule returns nothing to mask; remove 'mask'")
    approvers = None
    if settings.effect == "approve":
        a = settings.approvers
        if a is None or (not a.groups and not a.subjects):
            raise ValueError(f"{where}: approvers: an approve rule needs approvers (groups and/or subjects)")
        approvers = ApproverSpec(groups=tuple(a.groups), subjects=tuple(a.subjects), count=a.count,
                                 justification=a.justification)
    elif settings.approvers is not None:
        raise ValueError(f"{where}: approvers: only an approve rule takes approvers")
    m = settings.match

    def tup(values: list[str] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(values)

    return CompiledRule(
        index=index,
        name=settings.name,
        effect=settings.effect,
        groups=None if m.groups is None else frozenset(m.groups),
        subjects=tup(m.subjects),
        kinds=None if m.kinds is None else frozenset(m.kinds),
        servers=tup(m.servers),
        methods=tup(m.methods),
        tools=tup(m.tools),
        resources=tup(m.resources),
        prompts=tup(m.prompts),
        condition=condition,
        mask=settings.mask,
        approvers=approvers,
    )


def compile_rules(rules: Sequence[PolicyRuleSettings], known_profiles: set[str] | None = None) -> list[CompiledRule]:
    seen: set[str] = set()
    out = []
    for i, r in enumerate(rules):
        if r.name in seen:
            raise ValueError(f"policy rule {r.name!r}: the name is used twice")
        seen.add(r.name)
        out.append(compile_rule(i, r, known_profiles))
    return out


# --- the bitmask index ---------------------------------------------------------

_CACHE_MAX = 4096


class _GlobField:
    """Rules accepting a value for one glob field.

    Literal patterns are one dict lookup. Glob patterns are deduplicated (100
    rules sharing `read-*` cost one match) and bucketed by their literal
    prefix, so a value is only matched against globs whose prefix it starts
    with; globs starting with a wildcard are always tried.
    """

    __slots__ = ("unconstrained", "literal", "_globs", "_by_prefix", "_anywhere")

    def __init__(self) -> None:
        self.unconstrained = 0
        self.literal: dict[str, int] = {}
        self._globs: dict[str, int] = {}
        self._by_prefix: list[tuple[int, dict[str, list[tuple[Any, int]]]]] = []
        self._anywhere: list[tuple[Any, int]] = []

    def add(self, bit: int, patterns: Iterable[str] | None) -> None:
        if patterns is None:
            self.unconstrained |= bit
            return
        for p in patterns:
            if _is_glob(p):
                self._globs[p] = self._globs.get(p, 0) | bit
            else:
                self.literal[p] = self.literal.get(p, 0) | bit
        self._freeze()

    def _freeze(self) -> None:
        by_len: dict[int, dict[str, list[tuple[Any, int]]]] = {}
        anywhere = []
        for pattern, mask in self._globs.items():
            matcher = re.compile(fnmatch.translate(pattern)).match
            cut = min(i for i, ch in enumerate(pattern) if ch in _GLOB_CHARS)
            if cut == 0:
                anywhere.append((matcher, mask))
            else:
                by_len.setdefault(cut, {}).setdefault(pattern[:cut], []).append((matcher, mask))
        self._by_prefix = sorted(by_len.items())
        self._anywhere = anywhere

    def constrained_mask(self, value: str) -> int:
        m = self.literal.get(value, 0)
        for length, table in self._by_prefix:
            bucket = table.get(value[:length])
            if bucket is not None:
                for match, mask in bucket:
                    if match(value) is not None:
                        m |= mask
        for match, mask in self._anywhere:
            if match(value) is not None:
                m |= mask
        return m

    def mask(self, value: str) -> int:
        return self.unconstrained | self.constrained_mask(value)


class RuleIndex:
    """All rules' static match as bitmasks; `candidates()` equals filtering by `static_match`.

    Results are memoised per principal shape and per request shape in bounded
    dicts (cleared when full): the answer is a pure function of the key, so the
    cache changes speed, never meaning.
    """

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = list(rules)
        self.all = (1 << len(self.rules)) - 1
        self._groups_any = 0
        self._groups: dict[str, int] = {}
        self._subjects = _GlobField()
        self._kinds_any = 0
        self._kinds: dict[str, int] = {}
        self._servers = _GlobField()
        self._explicit_methods = _GlobField()  # rules with `methods`
        self._s2c: list[tuple[CompiledRule, int]] = []
        self._implied: dict[str, int] = {}  # method -> rules with target fields and no `methods`
        self._no_methods_no_target = 0
        self._no_target = 0
        self._targets: dict[str, _GlobField] = {"tools": _GlobField(), "resources": _GlobField(), "prompts": _GlobField()}
        self._any_target = _GlobField()
        self.allow = 0
        self.deny = 0
        for r in self.rules:
            bit = 1 << r.index
            if r.groups is None:
                self._groups_any |= bit
            else:
                for g in r.groups:
                    self._groups[g] = self._groups.get(g, 0) | bit
            self._subjects.add(bit, r.subjects)
            if r.kinds is None:
                self._kinds_any |= bit
            else:
                for k in r.kinds:
                    self._kinds[k] = self._kinds.get(k, 0) | bit
            self._servers.add(bit, r.servers)
            if r.methods is not None:
                self._explicit_methods.add(bit, r.methods)
                self._s2c.append((r, bit))
            elif r.has_target:
                for method in r.implied_methods:
                    self._implied[method] = self._implied.get(method, 0) | bit
            else:
                self._no_methods_no_target |= bit
            if r.has_target:
                for field in ("tools", "resources", "prompts"):
                    patterns = getattr(r, field)
                    if patterns is not None:
                        self._targets[field].add(bit, patterns)
                        self._any_target.add(bit, patterns)
            else:
                self._no_target |= bit
            if r.effect == "deny":
                self.deny |= bit
            elif r.effect == "allow":
                self.allow |= bit
        self._principal_cache: dict[tuple[str, str, frozenset[str]], int] = {}
        self._server_cache: dict[str, int] = {}
        self._request_cache: dict[tuple[str, str, str | None], int] = {}

    # principal side
    def principal_mask(self, principal: Principal) -> int:
        groups = principal.groups if isinstance(principal.groups, frozenset) else frozenset(principal.groups)
        key = (principal.subject, principal.kind, groups)
        m = self._principal_cache.get(key)
        if m is None:
            g = self._groups_any
            for group in groups:
                g |= self._groups.get(group, 0)
            m = g & self._subjects.mask(principal.subject) & (self._kinds_any | self._kinds.get(principal.kind, 0))
            if len(self._principal_cache) >= _CACHE_MAX:
                self._principal_cache.clear()
            self._principal_cache[key] = m
        return m

    # request side
    def server_mask(self, server: str) -> int:
        m = self._server_cache.get(server)
        if m is None:
            m = self._servers.mask(server)
            if len(self._server_cache) >= _CACHE_MAX:
                self._server_cache.clear()
            self._server_cache[server] = m
        return m

    def _method_mask(self, method: str) -> int:
        if is_server_to_client(method):
            m = 0
            for r, bit in self._s2c:
                if any(_names_server_to_client(p, method) for p in r.methods or ()):
                    m |= bit
            return m
        return (
            self._explicit_methods.constrained_mask(method) | self._implied.get(method, 0) | self._no_methods_no_target
        )

    def _target_mask(self, kind: TargetKind | None, target: str | None) -> int:
        if target is None:
            return self._no_target
        if kind is not None:
            return self._no_target | self._targets[_FIELD_OF_KIND[kind]].constrained_mask(target)
        return self._no_target | self._any_target.constrained_mask(target)

    def request_mask(self, server: str, method: str, target: str | None) -> int:
        key = (server, method, target)
        m = self._request_cache.get(key)
        if m is None:
            kind, bare = split_target(method, target)
            m = self.server_mask(server) & self._method_mask(method) & self._target_mask(kind, bare)
            if len(self._request_cache) >= _CACHE_MAX:
                self._request_cache.clear()
            self._request_cache[key] = m
        return m

    def candidates(self, principal: Principal, server: str, method: str, target: str | None) -> int:
        return self.principal_mask(principal) & self.request_mask(server, method, target)


def iter_bits(mask: int) -> Iterable[int]:
    """Indexes of set bits, lowest (first rule) first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
