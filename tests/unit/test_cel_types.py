"""CEL conditions that cannot work are refused at load, and evaluation is bounded (policy/celcheck.py).

The binding has no type checker: `1 + 'a'`, `principal.groups + 1` or a condition that is a string loaded
and then failed on every call (a deny rule denying everything, an allow rule granting nothing). And it
evaluates holding the interpreter lock with no bound: `map`/`filter` copy their accumulator on every
step, loops multiply, and the caller chooses how long `args` lists are, so one call could stall the
gateway for hours.

Every refusal below is checked against the interpreter itself over synthetic activations (each JSON kind
in every argument field and claim, a target and none): the part of the condition the message names never
evaluates, is always the same boolean, or the condition is never a boolean. What depends on the caller's
values (`args.amount > 'x'`: the amount may be a string) loads, and fails closed at run time.

Only the public surface is imported at module level, so the file also runs on the code before this check
(where the refusals and the bounds fail and the acceptances pass)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cel
import pytest

from ledgergate.config import ConfigError, parse_config
from ledgergate.policy import cel as cel_module
from ledgergate.policy.cel import (
    Activation,
    CelCompileError,
    CelEvaluationError,
    Condition,
)
from ledgergate.policy.engine import PolicyEngine
from ledgergate.policy.settings import PolicyRuleSettings
from ledgergate.principal import Principal

MAX_UNITS: int = getattr(cel_module, "MAX_UNITS", 50_000)
MAX_UNITS_QUADRATIC: int = getattr(cel_module, "MAX_UNITS_QUADRATIC", 500)

ALICE = Principal("https://idp", "alice", "human", frozenset({"staff"}))

ACCEPTED = [
    "args.amount > 1000",
    "has(args.x) && args.x > 1",
    "size(args) < 5",
    "'admin' in principal.groups",
    "args.items.all(i, i.qty < 10)",
    "args.amount > 'x'",  # the amount may be a string: decided at run time, fail closed
    "args.force",  # may be a JSON boolean
    "args.a == true",
    "args.items.exists(i, i.tags.exists(t, t == 'x'))",
    "[1, 2].exists(args, args > 1) && args.amount == 1",  # a macro variable shadows `args`
    "tool == null || tool.startsWith('read-')",
    "resource.matches('^file:///docs/')",
    "time.getHours() >= 9 && time.getDayOfWeek() in [1, 2, 3, 4, 5]",
    "time > timestamp('2026-01-01T00:00:00Z') - duration('24h')",
    "principal.claims.ref == 'refs/heads/main' && principal.claims.workflow_ref.startsWith('org/')",
    "principal.kind == 'service' && principal.subject.endsWith('@ci')",
    "size(principal.groups) > 0 && principal.groups.exists(g, g.startsWith('team-'))",
    "int(args.n) + 1 > 0 && string(args.n) != ''",
    "double(args.rate) * 2.0 < 1.0",
    "args.l[0] <= 1 && args.m['k'] == 'v'",
    "-args.a < 0 && args.a % 2 == 0",
    "!(args.a >= 9) ? true : false",
    "type(args.x) == type(1)",
    "timestamp(args.when) < time",
    "args.items.map(i, i.amount).filter(a, a > 1).size() > 0",
    "args.items.exists(i, i.owner == args.user)",
    "args.l.exists(a, args.l.exists(b, a != b))",
    "{'a': 1}.a == 1 && 1 == 1.0 && 1u < 2",
    "b'abc'.size() == 3 && bytes(args.s).size() < 100",
    "args.x in {'a': 1, 'b': 2}",
    "args.amount > 1000 // a comment\n  && has(args.to)",
    "'''multi\nline''' != args.note && r'\\d' != \"\\\\d\"",
    "args.code.matches(r'^[0-9]{4}$')",
    "!!args.flag",  # the interpreter drops an even run of `!`: this is `args.flag`
    "principal['subject'] == 'alice' && method == 'tools/call' && server != 'prod' && prompt == null",
    "args.items.all(i, has(i.qty) && i.qty < 10) && size(args.items) <= 100",
]

#: (condition, what the one-line message says)
REFUSED = [
    ("1 + 'a'", "`+` is not defined for int and string"),
    ("principal.groups + 1", "`+` is not defined for list and int"),
    ("'yes'", "evaluates to string, never to true or false"),
    ("1 + 2", "evaluates to int, never to true or false"),
    ("principal.subject", "evaluates to string"),
    ("args.items.map(i, i.qty)", "evaluates to list"),
    ("principal.sub == 'alice'", "has no field 'sub'"),
    ("principal.kind.size > 1", "is string, which has no fields"),
    ("principal.subject == 1", "is always false: it compares string with int"),
    ("principal.groups == 'admin'", "is always false: it compares list with string"),
    ("time > 5", "`>` is not defined for timestamp and int"),
    ("time.getHours('Europe/Paris') > 9", "getHours() is not defined for timestamp and string"),
    ("tool.startsWith(1)", "startsWith() is not defined for null or string and int"),
    ("size(time) > 1", "size() is not defined for timestamp"),
    ("args.x * 'a' > 1", "`*` is not defined for any JSON value and string"),
    ("args.a in 'abc'", "`in` is not defined for any JSON value and string"),
    ("args.s.contains(1)", "contains() is not defined for any JSON value and int"),
    ("args.a > 1 || 1 + 'a' == 2", "`1 + 'a'` can never be evaluated"),
    ("principal.groups.exists(g, g + 1 > 0)", "`+` is not defined for string and int"),
    ("args.items.all(i, 1)", "the all() predicate must be a boolean, and this is int"),
    ("args.a > 1 && 'x'", "each side of && must be a boolean"),
    ("int('abc') > 1", "always fails: Function 'int' error"),
    ("1 / 0 == 1", "always fails: division by zero"),
    ("duration('1x') < duration('1s')", "always fails"),
    ("args.p.matches('[')", "is not a regular expression"),
]

#: refused because their work grows with the cube (or more) of the caller's data
TOO_COSTLY = [
    "args.l.all(a, args.l.all(b, args.l.all(c, true)))",
    "args.l.map(a, args.l).size() > 0",  # every step copies lists as long as the input: 1,000 items took 30 s
    "args.l.map(a, args.l + args.l).size() < 0",
    "args.l.exists(a, args.l.exists(b, b in args.l))",
    "args.l.map(a, args.l.filter(b, b == a)).size() > 0",
]

#: (condition, degree): how its work grows with the size of the caller's data
DEGREES = [
    ("args.amount > 1000", 0),
    ("'admin' in principal.groups && principal.groups.exists(g, g == 'x')", 0),
    ("[1, 2, 3].all(x, [4, 5].all(y, x < y))", 0),
    ("size(args) < 5", 1),
    ("args.items.all(i, i.qty < 10)", 1),
    ("args.items.exists(i, i.tags.exists(t, t == 'x'))", 1),  # the inner ranges add up to the outer one
    ("args.items.exists(i, i.owner == args.user)", 1),  # equality stops at the shorter side
    ("args.s.matches('a+b')", 1),
    ("args.l.exists(a, args.l.exists(b, a != b))", 2),
    ("args.items.filter(i, i.qty > 1).size() > 0", 2),  # the interpreter copies the accumulator each step
    ("args.items.exists(i, i.to in args.allowed)", 2),
    ("args.items.exists(i, i.name.contains(args.q))", 2),
    ("args.items.exists(i, i.tags.map(t, t).size() > 0)", 2),
]


# --- synthetic activations --------------------------------------------------------------------------

_SAMPLES: list[Any] = [None, True, 0, 1, 2**63, 1.5, "a", "2020-01-01T00:00:00Z", [1], ["a"], [{"qty": 1}],
                       {"f": 1}, {}]
_FIELDS = ("a", "x", "s", "p", "l", "items", "amount", "user")


def _activations() -> list[dict[str, Any]]:
    out = []
    for value in _SAMPLES:
        for tool in ("t", None):
            out.append({
                "args": dict.fromkeys(_FIELDS, value),
                "principal": {"issuer": "https://idp", "subject": "alice", "kind": "human", "groups": ["g"],
                              "claims": {"x": value}},
                "tool": tool, "resource": None, "prompt": None, "server": "s", "method": "tools/call",
                "time": dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC),
            })
    return out


ACTIVATIONS = _activations()


def outcomes(source: str) -> set[object]:
    """What the interpreter makes of `source` over the synthetic activations: booleans, the kind of any
    other value, "error"."""
    program = cel.compile(source)
    seen: set[object] = set()
    for variables in ACTIVATIONS:
        try:
            result = program.execute(variables)
        except (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError):
            seen.add("error")
            continue
        seen.add(result if isinstance(result, bool) else type(result).__name__)
    return seen


def refusal(source: str) -> str:
    with pytest.raises(CelCompileError) as caught:
        Condition.compile(source)
    return str(caught.value)


# --- load: acceptance and refusal ---------------------------------------------------------------------

@pytest.mark.parametrize("source", ACCEPTED)
def test_a_condition_that_can_work_loads(source: str) -> None:
    Condition.compile(source)


@pytest.mark.parametrize("source", ACCEPTED)
def test_the_checker_models_every_accepted_condition(source: str) -> None:
    """Not loaded unchecked: the parser reads each of them (syntax it cannot read is bounded, not checked)."""
    from ledgergate.policy import celcheck

    assert celcheck.analyse(source).checked


@pytest.mark.parametrize(("source", "message"), REFUSED)
def test_a_condition_that_cannot_work_is_refused_at_load(source: str, message: str) -> None:
    text = refusal(source)
    assert message in text, text
    assert "\n" not in text and len(text) < 400


@pytest.mark.parametrize(("source", "message"), REFUSED)
def test_every_refusal_is_what_the_interpreter_does(source: str, message: str) -> None:
    """The honesty check: the part the refusal names never evaluates, is a constant boolean, or the whole
    condition is never a boolean, for every synthetic activation."""
    from ledgergate.policy import celcheck

    with pytest.raises(celcheck.Refusal) as caught:
        celcheck.analyse(source)
    node = caught.value.node
    assert node is not None
    part = source[node.start:node.end]
    loop_bound = bool(set(cel.compile(part).variables()) - set(cel_module.VARIABLES))
    text = str(caught.value)
    if "never to true or false" in text or "must be a boolean" in text:
        assert not {True, False} & outcomes(part if not loop_bound else source)
    elif "is always" in text:
        constant = "is always true" in text
        assert outcomes(part) - {"error"} <= {constant}
    elif "regular expression" in text:
        assert outcomes(f"''.matches({part})") == {"error"}
    else:
        assert outcomes(source if loop_bound else part) == {"error"}, (part, outcomes(part))


@pytest.mark.parametrize("source", TOO_COSTLY)
def test_work_growing_with_the_cube_of_the_arguments_is_refused(source: str) -> None:
    text = refusal(source)
    assert "costs n^3" in text and "at most n^2" in text and "\n" not in text, text


@pytest.mark.parametrize(("source", "degree"), DEGREES)
def test_the_cost_degree_of_a_condition(source: str, degree: int) -> None:
    condition = Condition.compile(source)
    assert getattr(condition, "degree", None) == degree
    assert getattr(condition, "max_units", None) == (MAX_UNITS if degree <= 1 else MAX_UNITS_QUADRATIC)


def test_dyn_switches_the_check_off_for_a_value() -> None:
    """CEL's own escape hatch (langdef "Dynamic values"): `dyn(x)` may be anything, so it is not refused;
    an error at run time then fails closed as before."""
    Condition.compile("dyn(principal.subject) + 1 > 0")
    assert refusal("principal.subject + 1 > 0")


def test_the_type_rules_are_the_interpreters() -> None:
    """The checker does not hold a table of overloads: it asks the interpreter with one sample value per
    kind (trying a timestamp-shaped string for `timestamp(s)`), so an upgrade cannot make it disagree."""
    from ledgergate.policy.celcheck import TYPE_ERROR, probe

    assert probe("{0} + {1}", ("int", "string")) == TYPE_ERROR
    assert probe("{0} + {1}", ("int", "int")) == "int"
    assert probe("{0} + {1}", ("timestamp", "duration")) == "timestamp"
    assert probe("{0} < {1}", ("int", "double")) == "bool"  # numbers compare across kinds
    assert probe("timestamp({0})", ("string",)) == "timestamp"
    assert probe("{0}.getHours({1})", ("timestamp", "string")) == TYPE_ERROR  # no time-zone form here
    assert probe("{0} in {1}", ("double", "map")) == TYPE_ERROR  # not a map key kind


def test_a_condition_the_parser_cannot_read_loads_unchecked_but_bounded() -> None:
    """Syntax the interpreter takes and this parser does not model is not refused (no false refusal);
    it gets the bound of a quadratic condition."""
    from ledgergate.policy import celcheck

    assert cel.compile("Foo{a: 1} == args")  # message construction: parsed by the interpreter, not here
    analysis = celcheck.analyse("Foo{a: 1} == args")
    assert not analysis.checked and analysis.degree == celcheck.MAX_DEGREE


# --- the operator sees it where other load errors show ----------------------------------------------

POLICY = """\
identity: {api_keys: true}
servers:
  bank: {url: 'http://127.0.0.1:1/mcp'}
policies:
  - {name: allow-all, match: {servers: [bank]}, effect: allow}
  - name: groups-typo
    match: {servers: [bank]}
    when: 'principal.groups == "admin"'
    effect: deny
  - name: level-vs-name
    when: "principal.claims.level + 1 > principal.subject"
    effect: deny
  - name: pairs
    when: args.l.all(a, args.l.all(b, args.l.all(c, a != b)))
    effect: deny
"""


def test_each_refusal_names_its_rule_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(POLICY, "p.yaml", env={})
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith("line 8: policies[1].when: policy rule 'groups-typo': "
                                  "`principal.groups == \"admin\"` is always false"), problems[0]
    assert problems[1].startswith("line 11: policies[2].when: policy rule 'level-vs-name': `principal.claims."
                                  "level + 1 > principal.subject` can never be evaluated: `>` is not defined for "
                                  "int and string"), problems[1]
    assert problems[2].startswith("line 14: policies[3].when: policy rule 'pairs': "), problems[2]
    assert all("\n" not in p for p in problems)


def test_config_validate_shows_the_refusal_on_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "celtype.yaml"
    cfg.write_text(POLICY.split("  - name: level-vs-name")[0])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "-c", str(cfg)],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert "line 8: policies[1].when: policy rule 'groups-typo': `principal.groups == \"admin\"` is always " \
           "false" in lines[0], lines[0]


# --- evaluation is bounded, and an exceeded bound fails closed ---------------------------------------

def _engine(*rules: dict[str, Any]) -> PolicyEngine:
    return PolicyEngine.from_settings([PolicyRuleSettings.model_validate(r) for r in rules])


def _timed(engine: PolicyEngine, args: dict[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    decision = engine.decide(ALICE, "s", "tools/call", "t", args, 0.0)
    return decision, time.perf_counter() - started


def test_a_4_mib_argument_is_refused_before_it_reaches_the_interpreter() -> None:
    """`size(args.l) > 0` over the 2 million numbers of a 4 MiB body converted for 2 s holding the
    interpreter lock (1.4 million `{}` for 3 s); now it is refused after one `len()`."""
    guard = _engine({"name": "base", "effect": "allow"}, {"name": "guard", "when": "size(args.l) > 0",
                                                          "effect": "deny"})
    decision, took = _timed(guard, {"l": [0] * 2_000_000})
    assert (decision.effect, decision.rule) == ("deny", "guard")
    assert "too large to evaluate" in decision.condition_errors[0], decision.condition_errors
    assert "fail-closed" in decision.reason
    assert took < 0.05, took


def test_an_allow_rule_over_too_much_data_grants_nothing() -> None:
    grant = _engine({"name": "grant", "when": "args.l.all(x, x < 10)", "effect": "allow"})
    assert grant.decide(ALICE, "s", "tools/call", "t", {"l": [1] * (MAX_UNITS - 1)}, 0.0).effect == "allow"
    decision = grant.decide(ALICE, "s", "tools/call", "t", {"l": [1] * (MAX_UNITS + 1)}, 0.0)
    assert (decision.effect, decision.rule) == ("deny", None)
    assert "too large to evaluate" in decision.condition_errors[0]


def test_a_quadratic_condition_gets_a_smaller_bound() -> None:
    """`filter` copies its accumulator every step: over 8,000 numbers it took 1.8 s, over the 2 million of
    a 4 MiB body about a day. A quadratic condition may be handed MAX_UNITS_QUADRATIC values."""
    grant = _engine({"name": "grant", "when": "args.l.filter(x, x > 0).size() == size(args.l)",
                     "effect": "allow"})
    decision, took = _timed(grant, {"l": [1] * (MAX_UNITS_QUADRATIC - 1)})
    assert decision.effect == "allow" and took < 0.5, (decision, took)
    decision, took = _timed(grant, {"l": [1] * 4_000})
    assert decision.effect == "deny" and "square" in decision.condition_errors[0], decision
    assert took < 0.05, took


def test_a_long_string_counts_by_its_length_for_a_quadratic_condition() -> None:
    """Inside a loop over the arguments a string is scanned once per step: a 60 KiB needle and 500 items
    would be 30 MB of scanning; text counts one value per 64 bytes."""
    deny = _engine({"name": "base", "effect": "allow"},
                   {"name": "needle", "when": "args.items.exists(i, args.q.contains(i))", "effect": "deny"})
    ok = deny.decide(ALICE, "s", "tools/call", "t", {"items": ["zz"] * 10, "q": "a" * 64 * 100}, 0.0)
    assert (ok.effect, ok.condition_errors) == ("allow", ())
    big = deny.decide(ALICE, "s", "tools/call", "t", {"items": ["zz"] * 10, "q": "a" * 64 * 1000}, 0.0)
    assert (big.effect, big.rule) == ("deny", "needle") and "too large" in big.condition_errors[0]


def test_the_target_string_counts_for_a_quadratic_condition() -> None:
    condition = Condition.compile("args.l.exists(x, resource.contains(x))")
    small = Activation(ALICE, "s", "resources/read", resource="file:///a", args={"l": ["a"]})
    assert condition.evaluate(small) is True
    huge = Activation(ALICE, "s", "resources/read", resource="file:///" + "a" * 64 * 1000, args={"l": ["b"]})
    with pytest.raises(CelEvaluationError, match="too large"):
        condition.evaluate(huge)


def test_conditions_reading_different_large_fields_do_not_reconvert_their_union() -> None:
    """Fields are handed over by re-adding the union of what the decision's conditions read; once that
    union would pass MAX_UNITS, a condition gets a context of its own. Outcomes are unchanged."""
    n = MAX_UNITS * 3 // 4
    rules = [{"name": f"r{k}", "when": f"size(args.f{k}) == {n}", "effect": "allow"} for k in range(4)]
    engine = _engine(*rules)
    args = {f"f{k}": [0] * n for k in range(4)}
    decision, took = _timed(engine, args)
    assert decision.matched == ("r0", "r1", "r2", "r3") and decision.condition_errors == ()
    assert took < 2.0, took


@pytest.mark.parametrize("depth", [61, 62, 63, 64])
def test_the_depth_limit_is_where_it_was(depth: int) -> None:
    """The field sits one level below `args`: nested containers up to MAX_VALUE_DEPTH levels deep in all."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    condition = Condition.compile("size(args.a) >= 0")
    act = Activation(ALICE, "s", "tools/call", tool="t", args={"a": value})
    if depth < cel_module.MAX_VALUE_DEPTH:
        assert condition.evaluate(act) is True
    else:
        with pytest.raises(CelEvaluationError, match="deeper than"):
            condition.evaluate(act)


def test_an_unread_large_field_costs_nothing() -> None:
    """The bound applies to what the condition reads (the projection), not to the whole call."""
    condition = Condition.compile("args.amount > 1000")
    act = Activation(ALICE, "s", "tools/call", tool="t", args={"amount": 5000, "bulk": [0] * (MAX_UNITS * 4)})
    assert condition.evaluate(act) is True
