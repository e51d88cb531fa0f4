"""CEL conditions (`when:`) for policy rules.

We use `common-expression-language` (the Python binding of the Rust `cel`
interpreter): it evaluates a compiled condition in ~0.2-3 µs where cel-python
needs ~110 µs, and it keeps CEL's type rules for JSON values (a JSON `true` is
not the number 1). See docs/policy.md for the measurements.

Expressions are compiled once when the engine is built; a syntax error, an
unknown variable or an unknown function is a load-time error naming the rule, and so is a condition
that cannot work (a type error the gateway can see without the caller's values, a result that is
never a boolean, a literal that always fails) or whose work grows with the cube of the caller's
arguments (celcheck.py). At evaluation every problem (missing key, type mismatch that depends on the
caller's values, overflow, non-boolean result, too deeply nested or too large input) raises
`CelEvaluationError`; the engine decides what an error means for each effect (fail closed, see
engine.py).

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

from ledgergate.policy.celcheck import Refusal, analyse, string_end
from ledgergate.principal import Principal

VARIABLES: frozenset[str] = frozenset({"principal", "server", "method", "tool", "args", "resource", "prompt", "time"})

MAX_VALUE_DEPTH = 64
"""Deeper `args`/`claims` are refused before they reach the interpreter.

The Rust binding converts Python values recursively; around 10,000 levels it
overflows the native stack and kills the process. A caller controls `args`, so
a depth cap is a denial-of-service guard, not a nicety. Refusal is an
evaluation error, which the engine treats fail-closed.
"""

MAX_UNITS = 50_000
"""The most a condition is handed of what the caller controls, in units: one a JSON value (a list, a
map, a number, ...), plus one for every 64 bytes of a string or map key; for a quadratic condition the
target (`tool`, `resource`, `prompt`) and `method` strings count the same way. More fails the condition,
which the engine treats fail-closed.

The interpreter holds the interpreter lock while it converts and evaluates, so every other call waits.
Measured on 2 shared cores: 50,000 `{}` convert in 70-100 ms, a loop over 25,000 `{"a": 1}` takes
about 0.1 s, a regular expression scans 3 MiB (49,000 units) in 12 ms. Without the bound a 4 MiB body
of `{}`s held the gateway for 2-3 s under `size(args.l) > 0`, 2 million numbers for 1.8 s under
`args.l.exists(x, x == 1)`; the bound refuses them after one `len()`."""

MAX_UNITS_QUADRATIC = 500
"""The same bound for a condition whose work grows with the square of its input (celcheck.py `degree`
2: a loop over the arguments inside a loop over them, `map`/`filter` over them, `x in args.list` or a
string function of an argument inside such a loop): 500 numbers under `args.l.exists(a,
args.l.exists(b, a != b))` take 80-105 ms. Unbounded, `args.l.filter(x, true)` (1.8 s over 8,000
numbers) would hold the gateway for about a day over the 2 million of a 4 MiB body."""


def max_units(degree: int) -> int:
    """How much of the caller's data a condition of this cost degree may be handed."""
    return MAX_UNITS if degree <= 1 else MAX_UNITS_QUADRATIC


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


class _TooDeep(Exception):
    pass


_FLAT = frozenset({int, float, bool, type(None)})
_ABSENT = object()


def _is_container(value: Any) -> bool:
    return not isinstance(value, _SCALARS) and isinstance(value, (Mapping, list, tuple))


def _units(value: Any, limit: int, depth_limit: int) -> int:
    """`value`'s size in MAX_UNITS units, or `limit + 1` as soon as it is known to be more than `limit`;
    raises _TooDeep when containers nest `depth_limit` or more levels below it.

    Level by level like `_too_deep`, and a container's entries are counted before they are looked at,
    so a 2-million-item list costs one `len()`, not a pass over it. A scalar (the common `args.amount`)
    is one type test."""
    kind = type(value)
    if kind is str:
        return 1 + (len(value) >> 6)
    if kind is not dict and kind is not list and not _is_container(value):
        return 1
    total = 1
    level = [value]
    depth = 0
    while level:
        if depth >= depth_limit:
            raise _TooDeep
        nxt: list[Any] = []
        for item in level:
            total += len(item)
            if total > limit:
                return limit + 1
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if type(key) is str and len(key) >= 64:
                        total += len(key) >> 6
                    kind = type(child)
                    if kind is str:
                        total += len(child) >> 6
                    elif kind is dict or kind is list or _is_container(child):
                        nxt.append(child)
            else:
                for child in item:
                    kind = type(child)
                    if kind is str:
                        total += len(child) >> 6
                    elif kind is dict or kind is list or _is_container(child):
                        nxt.append(child)
            if total > limit:
                return limit + 1
        level = nxt
        depth += 1
    return total


_CALLER_STRINGS = ("tool", "resource", "prompt", "method")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_STRING_PREFIXES = frozenset({"r", "b", "rb", "br"})


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
            i = string_end(source, i, raw=False)
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
            i = string_end(source, i, raw="r" in word.lower())
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
            end = string_end(source, k, raw=False)
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
    #: how its work grows with the size of the caller's data (celcheck.py), and so how much of that data it
    #: may be handed (`max_units`)
    degree: int = 1
    max_units: int = MAX_UNITS

    @property
    def uses_args(self) -> bool:
        """Whether the result can depend on the call's arguments (decides list filtering)."""
        return "args" in self.variables

    @classmethod
    def compile(cls, source: str) -> Condition:
        """Compile once at load; raises CelCompileError (one line) for syntax errors, unknown variables,
        unknown functions, conditions that cannot work and conditions too costly to bound (celcheck.py).

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
        try:
            analysis = analyse(source)
        except Refusal as exc:
            raise CelCompileError(str(exc)) from None
        return cls(source=source, variables=frozenset(names & VARIABLES), program=program,
                   arg_fields=args_fields(source), degree=analysis.degree, max_units=max_units(analysis.degree))

    def evaluate(self, activation: Activation) -> bool:
        """True/False, or CelEvaluationError for anything that is not a clean boolean."""
        try:
            result = self.program.execute(activation.context_for(self.variables, self.arg_fields, self.max_units))
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
                 "_arg_fields", "_units")

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
        #: the size of each container argument field measured so far (`_units`, capped at MAX_UNITS + 1)
        self._units: dict[str, int] | None = None

    def _value(self, name: str, arg_fields: frozenset[str] | None = None) -> Any:
        if name == "args":
            args = {} if self.args is None else self.args
            if not isinstance(args, Mapping):
                raise CelEvaluationError("the arguments are not a JSON object")
            if arg_fields is not None:
                args = {k: args[k] for k in arg_fields if k in args}
            return dict(args)  # every field in it was measured (and its depth checked) by `_args_units`
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

    def _args_units(self, arg_fields: frozenset[str] | None) -> int:
        """The size of the argument fields `arg_fields` (None: all) in MAX_UNITS units, each container
        measured once per decision; raises CelEvaluationError for arguments that are not a map or nest
        deeper than MAX_VALUE_DEPTH. A number or a short string (the usual `args.amount`) is a type test."""
        args = {} if self.args is None else self.args
        if type(args) is not dict and not isinstance(args, Mapping):
            raise CelEvaluationError("the arguments are not a JSON object")
        total = 0
        for key in (args if arg_fields is None else arg_fields):
            value = args.get(key, _ABSENT)
            if value is _ABSENT:
                continue
            kind = type(value)
            if kind in _FLAT:
                total += 1
            elif kind is str:
                total += 1 + (len(value) >> 6)
            else:
                measured = self._units
                if measured is None:
                    measured = self._units = {}
                size = measured.get(key)
                if size is None:
                    try:  # the field sits one level below `args`, which is level 0 of MAX_VALUE_DEPTH
                        size = measured[key] = _units(value, MAX_UNITS, MAX_VALUE_DEPTH - 1)
                    except _TooDeep:
                        raise CelEvaluationError(
                            f"the arguments nest deeper than {MAX_VALUE_DEPTH} levels") from None
                total += size
            if arg_fields is None and (type(key) is not str or len(key) >= 64):
                total += len(str(key)) >> 6
        return total

    def _string_units(self, names: frozenset[str]) -> int:
        """The size of the caller's target and method strings among `names`: they only matter to a
        condition that walks them inside a loop (degree 2); a linear scan of the longest is milliseconds."""
        total = 0
        for name in _CALLER_STRINGS:
            if name in names:
                value = getattr(self, name)
                if type(value) is str:
                    total += 1 + (len(value) >> 6)
        return total

    @staticmethod
    def _too_large(size: int, max_units: int) -> CelEvaluationError:
        shown = f"more than {MAX_UNITS:,}" if size > MAX_UNITS else f"{size:,}"
        return CelEvaluationError(
            f"the call's data this condition reads is too large to evaluate: {shown} values (a value per "
            f"64 bytes of text), and this condition may be given {max_units:,}"
            + (" because its work grows with the square of its input" if max_units < MAX_UNITS else ""))

    def context_for(
        self, names: frozenset[str], arg_fields: frozenset[str] | None = None, max_units: int = MAX_UNITS
    ) -> Any:
        """The interpreter's variables for a condition reading `names` (and of `args`, `arg_fields`), which
        may be handed at most `max_units` of the caller's data (CelEvaluationError beyond).

        The interpreter copies a map whole when it is added (about 3.5 µs a value, holding the interpreter
        lock): a 4 MB argument of small objects took a second, during which no other call moved. A condition
        reading `args.amount` needs the one field, so only the fields the conditions so far read are added.
        Fields are added by handing over the union again, so once the union would pass MAX_UNITS a condition
        gets a context of its own instead: what one decision converts stays linear in its conditions."""
        reads_args = "args" in names
        if reads_args or max_units < MAX_UNITS:
            have = self._arg_fields
            # the shared context holds at most MAX_UNITS (a union is only extended within it), so a condition
            # with that bound reading fields already in it needs no measuring: the hot path measures once
            covered = reads_args and (have is None or (arg_fields is not None and arg_fields <= have))
            if not covered or max_units < MAX_UNITS:
                size = self._args_units(arg_fields) if reads_args else 0
                if max_units < MAX_UNITS:
                    size += self._string_units(names)
                if size > max_units:
                    raise self._too_large(size, max_units)
                if reads_args and not covered and have and arg_fields is not None \
                        and self._args_units(have | arg_fields) > MAX_UNITS:
                    return self._private_context(names, arg_fields)
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

    def _private_context(self, names: frozenset[str], arg_fields: frozenset[str] | None) -> Any:
        """A context holding only this condition's argument fields (already measured within its bound)."""
        ctx = _cel.Context()
        for name in names:
            ctx.add_variable(name, self._value(name, arg_fields) if name == "args" else self._value(name))
        return ctx
