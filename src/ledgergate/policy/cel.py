"""CEL conditions (`when:`) for policy rules.

We use `common-expression-language` (the Python binding of the Rust `cel`
interpreter): it evaluates a compiled condition in ~0.2-3 µs where cel-python
needs ~110 µs, and it keeps CEL's type rules for JSON values (a JSON `true` is
not the number 1). See docs/policy.md for the measurements.

Expressions are compiled once when the engine is built; a syntax error, an
unknown variable or an unknown function is a load-time error naming the rule. At evaluation every
problem (missing key, type mismatch, overflow, non-boolean result, too deeply
nested input) raises `CelEvaluationError`; the engine decides what an error
means for each effect (fail closed, see engine.py).

The variables a condition can see:

- `principal`: map {issuer, subject, kind, groups (list), claims (map)}
- `server`, `method`: strings
- `tool`, `resource`, `prompt`: the request's target, or null
- `args`: the call's arguments (map; `{}` when the request carries none)
- `time`: the decision time, a CEL timestamp (UTC)
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel as _cel

from ledgergate.principal import Principal

VARIABLES: frozenset[str] = frozenset({"principal", "server", "method", "tool", "args", "resource", "prompt", "time"})

MAX_VALUE_DEPTH = 64
"""Deeper `args`/`claims` are refused before they reach the interpreter.

The Rust binding converts Python values recursively; around 10,000 levels it
overflows the native stack and kills the process. A caller controls `args`, so
a depth cap is a denial-of-service guard, not a nicety. Refusal is an
evaluation error, which the engine treats fail-closed.
"""

FUNCTIONS: frozenset[str] = frozenset({
    # strings, lists, maps
    "contains", "endsWith", "matches", "size", "startsWith",
    # conversions and types
    "bytes", "double", "duration", "dyn", "int", "string", "timestamp", "type", "uint",
    # timestamp fields (in UTC)
    "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getHours",
    "getMilliseconds", "getMinutes", "getSeconds", "getMonth",
})
"""The named functions the interpreter defines (tests/unit/test_cel_functions.py evaluates each, so
an upgrade that drops one fails there). The macros (`has`, `all`, `exists`, `exists_one`, `map`,
`filter`) are expanded by the parser and never show up as functions; operators show up under names
such as `_+_`, `!_`, `@in` and are always accepted. A name outside this set (a typo, `startwith`, or a
cel-go extension such as `lowerAscii`) would only fail when evaluated, so it is refused at load."""


def _is_operator(name: str) -> bool:
    """`_+_`, `_[_]`, `!_`, `-_`, `@in`, `@not_strictly_false`: not a name anyone typed as a call."""
    return name.startswith("@") or not name.replace("_", "a").isalnum()


_SYNTAX_AT = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


def _one_line_message(message: str) -> str:
    """The binding's error on one line: `Failed to parse … ERROR: <input>:1:14: Syntax error: …` followed
    by the expression and a caret line becomes `column 14: Syntax error: …` (or `line 2, column 3: …`
    for a condition written over several lines)."""
    at = _SYNTAX_AT.search(message)  # the expression quoted before it may itself span lines
    if at is None:
        first = message.strip().splitlines()[0] if message.strip() else "unknown error"
        return " ".join(first.split())[:300]
    line, column, what = int(at.group(1)), at.group(2), " ".join(at.group(3).split())
    where = f"column {column}" if line == 1 else f"line {line} of the condition, column {column}"
    return f"{where}: {what}"[:300]


_MACRO_BINDING = r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*{name}\s*,"
"""Names bound by comprehension macros are not free variables. (`cel.bind` is not
supported by the interpreter; its `cel` shows up as an unknown variable.)"""


class CelError(ValueError):
    """A CEL problem, phrased for an operator."""


class CelCompileError(CelError):
    pass


class CelEvaluationError(CelError):
    pass


_SCALARS = (str, int, float, type(None))


def _too_deep(value: Any, limit: int = MAX_VALUE_DEPTH) -> bool:
    """True when a JSON-like value has containers nested `limit` or more levels deep.

    Breadth-first, level by level (no recursion to exhaust), pushing only
    containers: this runs on every argument map a condition reads, so the
    common flat map must cost well under a microsecond.
    """
    level = [value]
    depth = 0
    while level:
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children: Iterable[Any] = item.values()
            elif isinstance(item, (list, tuple)):
                children = item
            elif isinstance(item, Mapping):
                children = item.values()
            else:
                continue
            if depth >= limit:
                return True
            nxt.extend(c for c in children if not isinstance(c, _SCALARS))
        level = nxt
        depth += 1
    return False


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled `when` expression."""

    source: str
    variables: frozenset[str]  # which of VARIABLES it reads
    program: Any

    @property
    def uses_args(self) -> bool:
        """Whether the result can depend on the call's arguments (decides list filtering)."""
        return "args" in self.variables

    @classmethod
    def compile(cls, source: str) -> Condition:
        """Compile once at load; raises CelCompileError (one line) for syntax errors, unknown variables
        and unknown functions.

        Unknown variables are checked here because at run time they would only
        show up as an evaluation error: an allow rule with a typo (`arg.a`)
        would silently never match and a deny rule would always fire.
        """
        if not isinstance(source, str) or not source.strip():
            raise CelCompileError("the condition is empty")
        try:
            program = _cel.compile(source)
            names = set(program.variables())
            functions = set(program.functions())
        except Exception as exc:  # the binding raises ValueError, but be certain
            raise CelCompileError(f"invalid CEL: {_one_line_message(str(exc))}") from None
        unknown = sorted(
            n for n in names - VARIABLES if not re.search(_MACRO_BINDING.format(name=re.escape(n)), source)
        )
        if unknown:
            raise CelCompileError(
                f"unknown variable(s) {', '.join(unknown)}; a condition can use {', '.join(sorted(VARIABLES))}"
            )
        undefined = sorted(f for f in functions - FUNCTIONS if not _is_operator(f))
        if undefined:
            shown = ", ".join(repr(f[:60]) for f in undefined[:5])
            raise CelCompileError(
                f"unknown function(s) {shown}; the functions a condition can call are "
                f"{', '.join(sorted(FUNCTIONS))} (and the macros has, all, exists, exists_one, map, filter)"
            )
        return cls(source=source, variables=frozenset(names & VARIABLES), program=program)

    def evaluate(self, activation: Activation) -> bool:
        """True/False, or CelEvaluationError for anything that is not a clean boolean."""
        try:
            result = self.program.execute(activation.context_for(self.variables))
        except CelEvaluationError:
            raise
        except Exception as exc:
            raise CelEvaluationError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        if result is True or result is False:
            return result
        raise CelEvaluationError(f"the condition returned {type(result).__name__}, not a boolean")


class Activation:
    """The variables of one decision, converted to CEL lazily and at most once.

    Converting a Python map costs about a microsecond per key, so only the
    variables some evaluated condition reads are converted, and a second
    condition in the same decision reuses them.
    """

    __slots__ = ("principal", "server", "method", "tool", "resource", "prompt", "args", "now", "_ctx", "_have")

    def __init__(
        self,
        principal: Principal,
        server: str,
        method: str,
        *,
        tool: str | None = None,
        resource: str | None = None,
        prompt: str | None = None,
        args: Mapping[str, Any] | None = None,
        now: float = 0.0,
    ) -> None:
        self.principal = principal
        self.server = server
        self.method = method
        self.tool = tool
        self.resource = resource
        self.prompt = prompt
        self.args = args
        self.now = now
        self._ctx: Any = None
        self._have: set[str] = set()

    def _value(self, name: str) -> Any:
        if name == "args":
            args = {} if self.args is None else self.args
            if not isinstance(args, Mapping):
                raise CelEvaluationError("the arguments are not a JSON object")
            if _too_deep(args):
                raise CelEvaluationError(f"the arguments nest deeper than {MAX_VALUE_DEPTH} levels")
            return dict(args)
        if name == "principal":
            p = self.principal
            claims = dict(p.claims)
            if _too_deep(claims):
                raise CelEvaluationError(f"the principal's claims nest deeper than {MAX_VALUE_DEPTH} levels")
            return {
                "issuer": p.issuer,
                "subject": p.subject,
                "kind": p.kind,
                "groups": sorted(p.groups),
                "claims": claims,
            }
        if name == "time":
            return _dt.datetime.fromtimestamp(self.now, _dt.timezone.utc)
        return getattr(self, name)  # server, method, tool, resource, prompt

    def context_for(self, names: Iterable[str]) -> Any:
        if self._ctx is None:
            self._ctx = _cel.Context()
        for name in names:
            if name not in self._have:
                self._ctx.add_variable(name, self._value(name))
                self._have.add(name)
        return self._ctx
