"""Load-time checks of a CEL condition that the interpreter does not make: types, and cost.

The binding (`common-expression-language`) compiles a condition without type-checking it, so
`1 + 'a'`, `principal.groups + 1` or a condition that evaluates to a string loaded and then failed
on every call (an erroring deny rule denies everything, an erroring allow rule grants nothing). It
also evaluates without any bound while holding the interpreter lock: `map`/`filter` copy their
accumulator on every step (quadratic), nested loops multiply, and the caller chooses how long
`args` lists are. This module parses the condition itself (the grammar of the CEL spec,
langdef.md "Syntax") and walks the tree twice.

Types (langdef.md "Gradual Type Checking"). Every sub-expression gets the set of runtime kinds its
value can have. The gateway knows its own variables exactly (`principal.subject` is a string,
`principal.groups` a list of strings, `time` a timestamp); a value decoded from JSON (an argument, a
token claim) can be any JSON kind, `dyn(x)` any kind at all. Whether an operator or function is defined for a
combination of kinds is not written down here: it is asked of the interpreter, by evaluating the
operation on one sample value of each kind (cached), so the check cannot drift from what the
interpreter does. A sub-expression is refused only when *no* combination of the kinds its operands
can have is defined (`1 + 'a'`; `args.x * 'a'`, which no JSON value makes work), when `==` compares
kinds that can never be equal, when a `&&`/`||`/`?:`/macro predicate can never be a boolean, when
the whole condition can never be a boolean, or when a sub-expression made only of literals fails
(`int('abc')`, a bad regular expression). Anything that depends on the caller's values
(`args.amount > 'x'`: the amount may be a string) loads; if it fails at run time, the engine treats
the error fail-closed.

Cost. `degree` is the exponent of the condition's work in n, the size of the caller's data it reads
(`args`, and the `tool`/`resource`/`prompt`/`method` strings): a loop (macro) over caller data
multiplies its body by n; `map`/`filter` over caller data are n²
because of the accumulator copy; an operation that walks a whole caller value (`+`, `in`, string
functions, `==` of two caller values) is n. A loop over an element of an outer loop's range
(`args.items.exists(i, i.tags.exists(...))`) is amortized: its ranges add up to n. The engine refuses
degree 3 and more at load and caps the size of what a condition may be handed by its degree (cel.py).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import cel as _cel

# --- syntax (langdef.md "Syntax") --------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<double>(?:[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|\.[0-9]+(?:[eE][+-]?[0-9]+)?))
  | (?P<uint>(?:0[xX][0-9a-fA-F]+|[0-9]+)[uU])
  | (?P<int>0[xX][0-9a-fA-F]+|[0-9]+)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''|\"\"\"|'|"))
  | (?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>!+\-*/%?:.,\[\](){}])
""", re.VERBOSE)

_RESERVED = frozenset({"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
                       "loop", "package", "namespace", "return", "var", "void", "while"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class Unsupported(Exception):
    """Syntax this parser does not model (message construction, `.name` from the root, optional
    syntax). The interpreter accepted the condition; it is then loaded unchecked and treated as
    costly (see `Analysis`)."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # int uint double string bytes ident op eof
    text: str
    start: int
    end: int


def string_end(source: str, start: int, raw: bool) -> int:
    """The index just past the string literal opening at `start` (CEL: '…', "…", triple-quoted, raw), or
    len(source) when it never closes. One scanner for both readers of a condition's text: this module's tokens
    and `cel.args_fields`."""
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


def _tokens(source: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(source):
        m = _TOKEN.match(source, i)
        if m is None:
            raise Unsupported(f"unexpected character {source[i]!r}")
        kind = m.lastgroup or ""
        if kind == "space":
            i = m.end()
            continue
        if kind == "string":
            prefix = m.group().rstrip("'\"").lower()
            quote = m.group()[len(prefix):]
            end = string_end(source, m.end() - len(quote), raw="r" in prefix)
            if not source[:end].endswith(quote) or end - len(quote) < m.end():
                raise Unsupported("unterminated string")
            out.append(_Token("bytes" if "b" in prefix else "string", source[i:end], i, end))
            i = end
            continue
        text = m.group()
        if kind == "ident":
            if text in ("true", "false"):
                kind = "bool"
            elif text == "null":
                kind = "null"
            elif text == "in":
                kind = "op"
            elif text in _RESERVED:
                raise Unsupported(f"reserved word {text!r}")
        out.append(_Token(kind, text, i, m.end()))
        i = m.end()
    out.append(_Token("eof", "", len(source), len(source)))
    return out


@dataclass(frozen=True, slots=True)
class Node:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Lit(Node):
    kind: str  # int uint double string bytes bool null


@dataclass(frozen=True, slots=True)
class Ident(Node):
    name: str


@dataclass(frozen=True, slots=True)
class Select(Node):
    operand: Node
    field: str
    test: bool  # has(operand.field)


@dataclass(frozen=True, slots=True)
class Call(Node):
    """A function or operator: `fn` is `size`, `contains`, ... or an operator (`+`, `!_`, `-_`, `[]`,
    `?:`, `&&`, `in`, ...). `target` is the receiver of `x.f(...)`."""

    fn: str
    target: Node | None
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class ListLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class MapLit(Node):
    entries: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True, slots=True)
class Loop(Node):
    """A comprehension macro (langdef.md "Macros"): `range.macro(var, body)`."""

    macro: str
    range: Node
    var: str
    body: Node


_RELATIONS = ("<", "<=", ">", ">=", "==", "!=", "in")


class _Parser:
    """Recursive descent over the grammar of langdef.md "Syntax", one method per production."""

    def __init__(self, source: str) -> None:
        self.toks = _tokens(source)
        self.i = 0

    def peek(self) -> _Token:
        return self.toks[self.i]

    def take(self, text: str | None = None) -> _Token:
        tok = self.toks[self.i]
        if text is not None and not (tok.kind == "op" and tok.text == text):
            raise Unsupported(f"expected {text!r} at {tok.start}")
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.toks[self.i]
        return tok.kind == "op" and tok.text in texts

    def parse(self) -> Node:
        node = self.expr()
        if self.peek().kind != "eof":
            raise Unsupported("trailing input")
        return node

    def expr(self) -> Node:
        cond = self.binary(0)
        if not self.at("?"):
            return cond
        self.take("?")
        yes = self.binary(0)
        self.take(":")
        no = self.expr()
        return Call(cond.start, no.end, "?:", None, (cond, yes, no))

    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), _RELATIONS, ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.at(*self._LEVELS[level]):
            op = self.take().text
            right = self.binary(level + 1)
            left = Call(left.start, right.end, op, None, (left, right))
        return left

    def unary(self) -> Node:
        """`"!" {"!"} Member | "-" {"-"} Member`: like the reference parser, the interpreter drops an even
        run of the same operator (`!!x` is `x`, whatever `x` is) and applies an odd run once."""
        if not self.at("!", "-"):
            return self.member()
        first = self.peek()
        count = 0
        while self.at(first.text):
            self.take()
            count += 1
        if self.at("!", "-"):
            raise Unsupported("a run of mixed unary operators")
        operand = self.member()
        if count % 2 == 0:
            return dataclasses.replace(operand, start=first.start)
        if first.text == "-" and isinstance(operand, Lit) and operand.kind in ("int", "double"):
            return Lit(first.start, operand.end, operand.kind)  # `-9223372036854775808` is one literal
        return Call(first.start, operand.end, first.text + "_", None, (operand,))

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.take(".")
                name = self.take()
                if name.kind != "ident":
                    raise Unsupported("expected a field name")
                if self.at("("):
                    args, end = self.call_args()
                    node = self.method(node, name.text, args, end)
                else:
                    node = Select(node.start, name.end, node, name.text, False)
            elif self.at("["):
                self.take("[")
                index = self.expr()
                end = self.take("]").end
                node = Call(node.start, end, "[]", None, (node, index))
            elif self.at("{"):
                raise Unsupported("message construction")
            else:
                return node

    def method(self, target: Node, name: str, args: tuple[Node, ...], end: int) -> Node:
        if name in _MACROS:
            if len(args) != 2 or not isinstance(args[0], Ident):
                raise Unsupported(f"the {name} macro with {len(args)} arguments")
            return Loop(target.start, end, name, target, args[0].name, args[1])
        return Call(target.start, end, name, target, args)

    def call_args(self) -> tuple[tuple[Node, ...], int]:
        self.take("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.expr())
            if not self.at(")"):
                self.take(",")
        return tuple(args), self.take(")").end

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind in ("int", "uint", "double", "string", "bytes", "bool", "null"):
            self.i += 1
            return Lit(tok.start, tok.end, tok.kind)
        if tok.kind == "ident":
            self.i += 1
            if not self.at("("):
                return Ident(tok.start, tok.end, tok.text)
            args, end = self.call_args()
            if tok.text == "has":
                if len(args) != 1 or not isinstance(args[0], Select):
                    raise Unsupported("has() of something other than a field")
                field_ = args[0]
                return Select(tok.start, end, field_.operand, field_.field, True)
            return Call(tok.start, end, tok.text, None, args)
        if self.at("("):
            start = self.take("(").start
            grouped = self.expr()
            return dataclasses.replace(grouped, start=start, end=self.take(")").end)  # spans quote the parentheses
        if self.at("["):
            start = self.take("[").start
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.expr())
                if not self.at("]"):
                    self.take(",")
            return ListLit(start, self.take("]").end, tuple(items))
        if self.at("{"):
            start = self.take("{").start
            entries: list[tuple[Node, Node]] = []
            while not self.at("}"):
                key = self.expr()
                self.take(":")
                entries.append((key, self.expr()))
                if not self.at("}"):
                    self.take(",")
            return MapLit(start, self.take("}").end, tuple(entries))
        raise Unsupported(f"unexpected {tok.text!r}")


def parse(source: str) -> Node:
    """The syntax tree of a condition the interpreter has already compiled; Unsupported otherwise."""
    return _Parser(source).parse()


# --- types (langdef.md "Gradual Type Checking") --------------------------------------------------------

ALL_KINDS = frozenset({"int", "uint", "double", "bool", "string", "bytes", "null", "list", "map",
                       "timestamp", "duration", "type"})
#: what a value decoded from JSON (the call's arguments, a token's claims) can be when the interpreter sees
#: it; an integer above 2**63 - 1 becomes a uint
JSON_KINDS = frozenset({"int", "uint", "double", "bool", "string", "null", "list", "map"})
_NUMERIC = frozenset({"int", "uint", "double"})


@dataclass(frozen=True, slots=True)
class Ty:
    """The kinds a value can have; for lists and maps also what they hold (None: any JSON value)."""

    kinds: frozenset[str]
    item: Ty | None = None  # a list's elements, a map's values
    key: Ty | None = None  # a map's keys (None: any key kind)
    fields: tuple[tuple[str, Ty], ...] | None = None  # a map whose keys the gateway defines, and their types

    def describe(self) -> str:
        if self.kinds == ALL_KINDS:
            return "any value"
        if self.kinds >= JSON_KINDS:
            return "any JSON value"
        return " or ".join(sorted(self.kinds)) if self.kinds else "nothing"


def _t(*kinds: str, item: Ty | None = None, key: Ty | None = None) -> Ty:
    return Ty(frozenset(kinds), item, key)


STRING = _t("string")
JSON = Ty(JSON_KINDS, key=STRING)
ANY = Ty(ALL_KINDS)
BOOL = _t("bool")
_KEY_KINDS = _t("int", "uint", "bool", "string")

PRINCIPAL = Ty(frozenset({"map"}), item=JSON, key=STRING, fields=(
    ("issuer", STRING), ("subject", STRING), ("kind", STRING),
    ("groups", _t("list", item=STRING)), ("claims", _t("map", item=JSON, key=STRING)),
))
#: the variables of a condition (cel.py `VARIABLES`) and what the gateway puts in them
VARIABLE_TYPES: dict[str, Ty] = {
    "principal": PRINCIPAL,
    "server": STRING,
    "method": STRING,
    "tool": _t("string", "null"),
    "resource": _t("string", "null"),
    "prompt": _t("string", "null"),
    "args": _t("map", item=JSON, key=STRING),
    "time": _t("timestamp"),
}


def _item(t: Ty) -> Ty:
    return JSON if t.item is None else t.item


def _key(t: Ty) -> Ty:
    return _KEY_KINDS if t.key is None else t.key


def join(a: Ty | None, b: Ty | None) -> Ty | None:
    """A type holding every value of either (None is any JSON value)."""
    if a is None or b is None:
        other = b if a is None else a
        if other is None:
            return None
        return Ty(other.kinds | JSON_KINDS, None, None)
    if a == b:
        return a
    return Ty(a.kinds | b.kinds, join(a.item, b.item), join(a.key, b.key),
              a.fields if a.fields == b.fields else None)


def _join_all(types: Iterable[Ty]) -> Ty | None:
    out: Ty | None = Ty(frozenset())
    for t in types:
        out = t if out is not None and not out.kinds else join(out, t)
    return out


# The interpreter is the oracle for which operations exist: one sample literal per kind (the first
# that the operation accepts is used, so `timestamp(s)` is tried with a timestamp-shaped string).
_SAMPLES: dict[str, tuple[str, ...]] = {
    "int": ("1", "0"),
    "uint": ("1u", "0u"),
    "double": ("1.5",),
    "bool": ("true",),
    "string": ("'1'", "'2020-01-01T00:00:00Z'", "'1s'"),
    "bytes": ("b'1'",),
    "null": ("null",),
    "list": ("[0]",),
    "map": ("{'f': 0}",),
    "timestamp": ("timestamp('2020-01-01T00:00:00Z')",),
    "duration": ("duration('1s')",),
    "type": ("type(1)",),
}
_KIND_OF_TYPE_NAME = {
    "int": "int", "uint": "uint", "double": "double", "bool": "bool", "string": "string", "bytes": "bytes",
    "null_type": "null", "list": "list", "map": "map", "google.protobuf.Timestamp": "timestamp",
    "google.protobuf.Duration": "duration", "type": "type",
}
BINDING_ERRORS = (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError)
"""What the binding raises for an expression that does not evaluate (KeyError, IndexError, OverflowError,
ZeroDivisionError, RuntimeError, TypeError) or compile (ValueError)."""
TYPE_ERROR = "type-error"
UNKNOWN = "unknown"


def _is_type_error(exc: BaseException) -> bool:
    """The interpreter's "not defined for these operand types": a TypeError (no such overload,
    unsupported operation, unexpected type, not a map key kind) or, for a named function called with
    arguments it has no overload for, "Undefined variable or function"."""
    return isinstance(exc, TypeError) or str(exc).startswith("Undefined variable or function")


@functools.lru_cache(maxsize=4096)
def probe(template: str, kinds: tuple[str, ...]) -> str:
    """What the interpreter makes of `template` (`{0} + {1}`, `{0}.contains({1})`) over one value of each
    kind: the result's kind, TYPE_ERROR when it is not defined for these kinds, or UNKNOWN when every
    sample failed for its value (overflow, a string that does not parse)."""
    for samples in itertools.product(*(_SAMPLES[k] for k in kinds)):
        source = "type(" + template.format(*(f"({s})" for s in samples)) + ")"
        try:
            name = _cel.evaluate(source, {})
        except BINDING_ERRORS as exc:
            if _is_type_error(exc):
                return TYPE_ERROR
            continue
        return _KIND_OF_TYPE_NAME.get(str(name), UNKNOWN)
    return UNKNOWN


_OPERATOR_TEMPLATES = {
    "+": "{0} + {1}", "-": "{0} - {1}", "*": "{0} * {1}", "/": "{0} / {1}", "%": "{0} % {1}",
    "<": "{0} < {1}", "<=": "{0} <= {1}", ">": "{0} > {1}", ">=": "{0} >= {1}", "in": "{0} in {1}",
    "!_": "!{0}", "-_": "-{0}", "[]": "{0}[{1}]",
}


def template_for(call: Call) -> str:
    """The probe template of a call: an operator, `f(a, b)` or `r.f(a)`."""
    if call.fn in _OPERATOR_TEMPLATES:
        return _OPERATOR_TEMPLATES[call.fn]
    n = len(call.args)
    if call.target is None:
        return f"{call.fn}(" + ", ".join(f"{{{i}}}" for i in range(n)) + ")"
    return "{0}." + call.fn + "(" + ", ".join(f"{{{i + 1}}}" for i in range(n)) + ")"


class Refusal(Exception):
    """A condition that cannot work, phrased for an operator (one line); `node` is the part at fault."""

    def __init__(self, message: str, node: Node | None = None) -> None:
        super().__init__(message)
        self.node = node


@dataclass(slots=True)
class _Checker:
    source: str
    scope: dict[str, Ty] = field(default_factory=dict)

    def text(self, node: Node) -> str:
        shown = " ".join(self.source[node.start:node.end].split())
        return f"`{shown}`" if len(shown) <= 80 else f"`{shown[:77]}...`"

    def refuse(self, node: Node, why: str) -> Refusal:
        return Refusal(f"{self.text(node)} can never be evaluated: {why}", node)

    def check(self, node: Node) -> Ty:
        if isinstance(node, Lit):
            return _t(node.kind)
        if isinstance(node, Ident):
            if node.name in self.scope:
                return self.scope[node.name]
            return VARIABLE_TYPES.get(node.name, ANY)
        if isinstance(node, Select):
            return self.select(node)
        if isinstance(node, ListLit):
            return _t("list", item=_join_all(self.check(i) for i in node.items) if node.items else ANY)
        if isinstance(node, MapLit):
            keys = [self.check(k) for k, _ in node.entries]
            values = [self.check(v) for _, v in node.entries]
            if not node.entries:
                return _t("map", item=ANY)
            return _t("map", item=_join_all(values), key=_join_all(keys))
        if isinstance(node, Loop):
            return self.loop(node)
        assert isinstance(node, Call)
        return self.call(node)

    def boolean(self, node: Node, role: str) -> None:
        t = self.check(node)
        if "bool" not in t.kinds:
            raise self.refuse(node, f"{role} must be a boolean, and this is {t.describe()}")

    def select(self, node: Select) -> Ty:
        operand = self.check(node.operand)
        if "map" not in operand.kinds:
            raise self.refuse(node, f"{self.text(node.operand)} is {operand.describe()}, which has no fields")
        if node.test:
            return BOOL
        if operand.fields is not None and operand.kinds == {"map"}:
            fields = dict(operand.fields)
            if node.field not in fields:
                raise self.refuse(node, f"{self.text(node.operand)} has no field {node.field!r} "
                                        f"(it has {', '.join(fields)})")
            return fields[node.field]
        return _item(operand)

    def loop(self, node: Loop) -> Ty:
        r = self.check(node.range)
        if not r.kinds & {"list", "map"}:
            raise self.refuse(node, f"{self.text(node.range)} is {r.describe()}, not a list or map to loop over")
        var_types = ([_item(r)] if "list" in r.kinds else []) + ([_key(r)] if "map" in r.kinds else [])
        var = _join_all(var_types)
        saved = self.scope.get(node.var)
        self.scope[node.var] = JSON if var is None else var
        try:
            if node.macro == "map":
                body = self.check(node.body)
                return _t("list", item=body)
            self.boolean(node.body, f"the {node.macro}() predicate")
        finally:
            if saved is None:
                del self.scope[node.var]
            else:
                self.scope[node.var] = saved
        if node.macro == "filter":
            return _t("list", item=var)
        return BOOL

    def call(self, node: Call) -> Ty:
        fn = node.fn
        if fn in ("&&", "||"):
            for operand in node.args:
                self.boolean(operand, f"each side of {fn}")
            return BOOL
        if fn == "?:":
            self.boolean(node.args[0], "the condition of ?:")
            return join(self.check(node.args[1]), self.check(node.args[2])) or JSON
        operands = ([node.target] if node.target is not None else []) + list(node.args)
        types = [self.check(o) for o in operands]
        if fn in ("==", "!="):
            a, b = types
            if not any(_comparable(x, y) for x in a.kinds for y in b.kinds):
                raise Refusal(f"{self.text(node)} is always {'false' if fn == '==' else 'true'}: it compares "
                              f"{a.describe()} with {b.describe()}, which are never equal", node)
            return BOOL
        if fn == "dyn":
            return ANY  # CEL's way to switch the check off for a value (langdef.md "Dynamic values")
        template = template_for(node)
        results: set[str] = set()
        for combo in itertools.product(*(sorted(t.kinds) for t in types)):
            result = probe(template, combo)
            if result != TYPE_ERROR:
                results.add(result)
        if not results:
            what = f"`{fn.rstrip('_')}`" if fn in _OPERATOR_TEMPLATES else f"{fn}()"
            given = " and ".join(t.describe() for t in types)
            raise self.refuse(node, f"{what} is not defined for {given}")
        kinds = ALL_KINDS if UNKNOWN in results else frozenset(results)
        if fn == "[]":
            container, _ = types
            if not container.kinds & {"list", "map"}:
                return ANY
            return _item(container)
        if fn == "+" and kinds == {"list"}:
            return _t("list", item=_join_all(_item(t) for t in types if "list" in t.kinds))
        return Ty(kinds)


def _comparable(a: str, b: str) -> bool:
    """Whether a value of kind `a` can equal one of kind `b` (langdef.md "Equality": numbers compare
    across int, uint and double; null is only equal to null, but comparing with null is how a caller
    asks whether a value is there, so it is never refused)."""
    return a == b or "null" in (a, b) or (a in _NUMERIC and b in _NUMERIC)


def _free(node: Node) -> bool:
    """Whether `node` holds no variable and no loop (a constant the interpreter can evaluate alone)."""
    if isinstance(node, Lit):
        return True
    if isinstance(node, (Ident, Loop)):
        return False
    if isinstance(node, Select):
        return _free(node.operand)
    if isinstance(node, ListLit):
        return all(_free(i) for i in node.items)
    if isinstance(node, MapLit):
        return all(_free(k) and _free(v) for k, v in node.entries)
    assert isinstance(node, Call)
    return (node.target is None or _free(node.target)) and all(_free(a) for a in node.args)


def _children(node: Node) -> list[Node]:
    if isinstance(node, Select):
        return [node.operand]
    if isinstance(node, ListLit):
        return list(node.items)
    if isinstance(node, MapLit):
        return [n for pair in node.entries for n in pair]
    if isinstance(node, Loop):
        return [node.range, node.body]
    if isinstance(node, Call):
        return ([node.target] if node.target is not None else []) + list(node.args)
    return []


def _error_text(exc: Exception) -> str:
    text = " ".join(str(exc).split()).replace(" Check function arguments and their types.", "")
    return text[:160]


def _failing_constant(source: str, node: Node) -> tuple[Node, str] | None:
    """The first sub-expression made only of literals that fails when evaluated (`int('abc')`, `1 / 0`,
    `duration('1x')`), or the pattern of a `matches` that is not a regular expression: (the node, why)."""
    if not isinstance(node, Lit) and _free(node):
        try:
            _cel.evaluate(source[node.start:node.end], {})
        except BINDING_ERRORS as exc:
            return node, f"always fails: {_error_text(exc)}"
        return None
    if isinstance(node, Call) and node.fn == "matches" and node.args and _free(node.args[-1]):
        pattern = node.args[-1]
        try:
            _cel.evaluate(f"''.matches({source[pattern.start:pattern.end]})", {})
        except BINDING_ERRORS as exc:
            return pattern, f"is not a regular expression the interpreter accepts: {_error_text(exc)}"
    for child in _children(node):
        found = _failing_constant(source, child)
        if found is not None:
            return found
    return None


# --- cost ------------------------------------------------------------------------------------------

NONE, PART, WHOLE = 0, 1, 2
"""How big a value can be in the caller's terms: bounded by the gateway or the config (NONE), an element
of a loop over caller data, whose sizes add up to the caller's (PART), or as big as the caller makes it
(WHOLE)."""

_CALLER_VARIABLES = frozenset({"args", "tool", "resource", "prompt", "method"})
_WALKS_BOTH = frozenset({"==", "!=", "<", "<=", ">", ">="})  # stop at the shorter operand
_WALKS_ANY = frozenset({"+", "size", "contains", "startsWith", "endsWith", "matches", "string", "bytes",
                        "int", "uint", "double", "timestamp", "duration"})
_SIZED_RESULT = frozenset({"+", "string", "bytes", "dyn", "[]", "?:"})


@dataclass(slots=True)
class _Cost:
    source: str
    scope: dict[str, int] = field(default_factory=dict)
    worst: tuple[int, Node | None] = (0, None)

    def note(self, degree: int, node: Node) -> int:
        if degree > self.worst[0]:
            self.worst = (degree, node)
        return degree

    def cost(self, node: Node) -> tuple[int, int]:
        """(degree, size class) of `node`."""
        if isinstance(node, Lit):
            return 0, NONE
        if isinstance(node, Ident):
            if node.name in self.scope:
                return 0, self.scope[node.name]
            return 0, WHOLE if node.name in _CALLER_VARIABLES else NONE
        if isinstance(node, Loop):
            return self.loop(node)
        parts = [self.cost(c) for c in _children(node)]
        degree = max((d for d, _ in parts), default=0)
        sizes = [s for _, s in parts]
        if isinstance(node, Select) and node.test:
            return degree, NONE
        if isinstance(node, (Select, ListLit, MapLit)):
            return degree, max(sizes, default=NONE)
        assert isinstance(node, Call)
        fn = node.fn
        if fn == "in":
            walks = sizes[1] == WHOLE
        elif fn in _WALKS_BOTH:
            walks = sizes[0] == WHOLE and sizes[1] == WHOLE
        else:
            walks = fn in _WALKS_ANY and WHOLE in sizes
        if walks:
            degree = self.note(max(degree, 1), node)
        if fn == "?:":
            sizes = sizes[1:]
        return degree, max(sizes, default=NONE) if fn in _SIZED_RESULT else NONE

    def loop(self, node: Loop) -> tuple[int, int]:
        range_degree, size = self.cost(node.range)
        saved = self.scope.get(node.var)
        self.scope[node.var] = PART if size != NONE else NONE
        try:
            body_degree, body_size = self.cost(node.body)
        finally:
            if saved is None:
                del self.scope[node.var]
            else:
                self.scope[node.var] = saved
        degree = body_degree + (1 if size == WHOLE else 0)
        if node.macro in ("map", "filter") and size != NONE:
            # the accumulator is copied on every step: n² over caller data, n³ when each element is as big
            # as the caller's data
            elements = body_size if node.macro == "map" else PART
            degree = max(degree, (2 if size == WHOLE else 1) + (1 if elements == WHOLE else 0))
        degree = self.note(max(range_degree, degree), node)
        result = NONE if node.macro not in ("map", "filter") else max(size, body_size if node.macro == "map" else 0)
        return degree, result


# --- the analysis ----------------------------------------------------------------------------------

MAX_DEGREE = 2


@dataclass(frozen=True, slots=True)
class Analysis:
    #: the exponent of the condition's work in the size of the caller's data (MAX_DEGREE when the
    #: condition could not be parsed here: the interpreter accepted syntax this module does not model)
    degree: int
    checked: bool


def analyse(source: str) -> Analysis:
    """Check a condition the interpreter compiled; raises Refusal (one line) for one that cannot work
    or costs more than MAX_DEGREE allows."""
    meter = _Cost(source)
    try:
        tree = parse(source)
        result = _Checker(source).check(tree)
        failing = _failing_constant(source, tree)
        degree, _ = meter.cost(tree)
    except (Unsupported, RecursionError):  # syntax not modelled here, or nesting deeper than Python recurses
        return Analysis(degree=MAX_DEGREE, checked=False)
    if failing is not None:
        node, why = failing
        raise Refusal(f"{_Checker(source).text(node)} {why}", node)
    if "bool" not in result.kinds:
        raise Refusal(f"the condition evaluates to {result.describe()}, never to true or false "
                      "(compare it, e.g. `args.amount > 0`)", tree)
    if degree > MAX_DEGREE:
        node = meter.worst[1] or tree
        raise Refusal(
            f"{_Checker(source).text(node)} costs n^{degree} for arguments of size n (a loop over the "
            f"arguments inside a loop over them; map and filter copy as they go, n^2 alone); at most "
            f"n^{MAX_DEGREE} can be bounded: loop over an element instead, as in `args.items.all(i, "
            f"i.tags.exists(t, ...))`", node)
    return Analysis(degree=degree, checked=True)
