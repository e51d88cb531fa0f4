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


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_STRING_PREFIXES = frozenset({"r", "b", "rb", "br"})


def _string_end(source: str, start: int, raw: bool) -> int:
    """The index just past the string literal opening at `start` (CEL: '…', "…", triple-quoted, raw)."""
    quote = source[start:start + 3] if source[start:start + 3] in ("'''", '"""') else source[start]
    i = start + len(quote)
    while i < len(source):
        if not raw and source[i] == "\\":
            i += 2
            continue
        if source.startswith(quote, i):
            return i + len(quote)
        i += 1
    return len(source)


def _skip_space(source: str, i: int) -> int:
    while i < len(source) and source[i].isspace():
        i += 1
    return i


def args_fields(source: str) -> frozenset[str] | None:
    """The top-level fields of `args` a condition reads, or None when it may read more than named fields.

    Every reference to the variable `args` (the identifier, not after a `.`, outside strings and comments)
    must be a field selection, `args.name` (not a method or macro call: `args.exists(…)`) or `args["name"]`
    with a plain string literal; anything else (`size(args)`, `'k' in args`, `args[k]`, a quoted identifier)
    gives None, and the condition is given every field. A macro variable that shadows `args`
    (`xs.exists(args, args.b)`) only adds fields, never hides a read of the real one."""
    fields: set[str] = set()
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in "'\"":
            i = _string_end(source, i, raw=False)
            continue
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        number = _NUMBER.match(source, i)
        if number is not None:  # `1.5e3`, `0x1F`, `3u`: no identifier starts inside one
            i = number.end()
            continue
        match = _IDENT.match(source, i)
        if match is None:
            i += 1
            continue
        word, i = match.group(), match.end()
        if word.lower() in _STRING_PREFIXES and i < n and source[i] in "'\"":
            i = _string_end(source, i, raw="r" in word.lower())
            continue
        before = _skip_space_back(source, match.start() - 1)
        if word != "args" or (before >= 0 and source[before] == "."):
            continue
        j = _skip_space(source, i)
        if j < n and source[j] == ".":
            field = _IDENT.match(source, _skip_space(source, j + 1))
            if field is None:
                return None
            after = _skip_space(source, field.end())
            if after < n and source[after] == "(":  # a method or macro on the whole map
                return None
            fields.add(field.group())
            i = field.end()
        elif j < n and source[j] == "[":
            k = _skip_space(source, j + 1)
            if k >= n or source[k] not in "'\"":
                return None
            end = _string_end(source, k, raw=False)
            literal = source[k + 1:end - 1]
            close = _skip_space(source, end)
            if "\\" in literal or source[k:k + 3] in ("'''", '"""') or close >= n or source[close] != "]":
                return None
            fields.add(literal)
            i = close + 1
        else:
            return None
    return frozenset(fields)


def _skip_space_back(source: str, i: int) -> int:
    while i >= 0 and source[i].isspace():
        i -= 1
    return i


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled `when` expression."""

    source: str
    variables: frozenset[str]  # which of VARIABLES it reads
    program: Any
    #: the top-level argument fields it reads (`args.amount`, `args["to"]`), or None when it reads `args` as a
    #: whole (`size(args)`, `args.exists(...)`, `'k' in args`): only those fields are handed to the interpreter
    arg_fields: frozenset[str] | None = None

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
        return cls(source=source, variables=frozenset(names & VARIABLES), program=program,
                   arg_fields=args_fields(source))

    def evaluate(self, activation: Activation) -> bool:
        """True/False, or CelEvaluationError for anything that is not a clean boolean."""
        try:
            result = self.program.execute(activation.context_for(self.variables, self.arg_fields))
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

    __slots__ = ("principal", "server", "method", "tool", "resource", "prompt", "args", "now", "_ctx", "_have",
                 "_arg_fields")

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
        #: the argument fields handed to the interpreter so far (None: all of them)
        self._arg_fields: frozenset[str] | None = frozenset()

    def _value(self, name: str, arg_fields: frozenset[str] | None = None) -> Any:
        if name == "args":
            args = {} if self.args is None else self.args
            if not isinstance(args, Mapping):
                raise CelEvaluationError("the arguments are not a JSON object")
            if arg_fields is not None:
                args = {k: args[k] for k in arg_fields if k in args}
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

    def context_for(self, names: Iterable[str], arg_fields: frozenset[str] | None = None) -> Any:
        """The interpreter's variables for a condition reading `names` (and of `args`, `arg_fields`).

        The interpreter copies a map whole when it is added (about 3.5 µs a value, holding the interpreter
        lock): a 4 MB argument of small objects took a second, during which no other call moved. A condition
        reading `args.amount` needs the one field, so only the fields the conditions so far read are added."""
        if self._ctx is None:
            self._ctx = _cel.Context()
        for name in names:
            if name == "args":
                have = self._arg_fields
                if have is None or (arg_fields is not None and arg_fields <= have):
                    continue
                wanted = None if arg_fields is None else have | arg_fields
                self._ctx.add_variable(name, self._value(name, wanted))
                self._arg_fields = wanted
            elif name not in self._have:
                self._ctx.add_variable(name, self._value(name))
                self._have.add(name)
        return self._ctx
