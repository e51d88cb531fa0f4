"""CEL conditions name only functions the interpreter defines (probe report #4): a typo (`startwith`) or
an unknown function is a load error naming the rule and its line, not a deny rule that denies every call
or an allow rule that never matches; syntax errors are one line with the column; every policy problem
of a file is reported at once, each at its own line (a duplicate name at the duplicate)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cel
import pytest

from ledgergate.config import ConfigError, parse_config
from ledgergate.policy import cel as cel_module
from ledgergate.policy.cel import CelCompileError, Condition

#: one expression per supported function that is true only if the interpreter really runs it
_PROOF = {
    "contains": '"abc".contains("b") && !"abc".contains("z")',
    "endsWith": '"abc".endsWith("bc")',
    "matches": '"abc".matches("^a.c$")',
    "size": 'size("abc") == 3 && size([1, 2]) == 2',
    "startsWith": '"abc".startsWith("ab")',
    "bytes": 'bytes("a") == b"a"',
    "double": "double(3) == 3.0",
    "duration": 'duration("90s") == duration("1m30s")',
    "dyn": "dyn(1) == 1",
    "int": 'int("42") == 42',
    "string": 'string(42) == "42"',
    "timestamp": 'timestamp("2020-01-01T00:00:00Z") < timestamp("2020-01-02T00:00:00Z")',
    "type": "type(1) == int && type('a') == string",
    "uint": "uint(3) == 3u",
    "getDate": 'timestamp("2020-03-04T05:06:07.008Z").getDate() == 4',
    "getDayOfMonth": 'timestamp("2020-03-04T05:06:07.008Z").getDayOfMonth() == 3',
    "getDayOfWeek": 'timestamp("2020-03-04T05:06:07.008Z").getDayOfWeek() == 3',
    "getDayOfYear": 'timestamp("2020-03-04T05:06:07.008Z").getDayOfYear() == 63',
    "getFullYear": 'timestamp("2020-03-04T05:06:07.008Z").getFullYear() == 2020',
    "getHours": 'timestamp("2020-03-04T05:06:07.008Z").getHours() == 5',
    "getMilliseconds": 'timestamp("2020-03-04T05:06:07.008Z").getMilliseconds() == 8',
    "getMinutes": 'timestamp("2020-03-04T05:06:07.008Z").getMinutes() == 6',
    "getSeconds": 'timestamp("2020-03-04T05:06:07.008Z").getSeconds() == 7',
    "getMonth": 'timestamp("2020-03-04T05:06:07.008Z").getMonth() == 2',
}


def test_every_supported_function_is_proven() -> None:
    assert set(_PROOF) == getattr(cel_module, "FUNCTIONS", None)


@pytest.mark.parametrize("name", sorted(_PROOF))
def test_the_interpreter_defines_each_supported_function(name: str) -> None:
    """An upgrade of the binding that drops one fails here, not in a deployed policy."""
    program = cel.compile(_PROOF[name])
    assert name in program.functions()
    assert program.execute({}) is True


@pytest.mark.parametrize("source", [
    'args.path.startwith("/etc")', "nosuchfn(args)", 'args.path.lowerAscii() == "x"', "max(args.a, 1) > 2",
    "_hidden(args)",
])
def test_an_unknown_function_is_refused_at_compile(source: str) -> None:
    with pytest.raises(CelCompileError) as caught:
        Condition.compile(source)
    assert "unknown function(s)" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("source", [
    'has(args.force) && args.force', 'args.path.startsWith("/etc") || args.path.matches("(^|/)\\\\.ssh/")',
    '"oncall" in principal.groups && time.getHours() >= 18', "size(args.recipients) > 10",
    "args.items.exists(i, i.amount > 10000)", "args.items.all(i, i.amount > 0)",
    "args.items.map(i, i.amount).filter(a, a > 1).size() > 0 && args.items.exists_one(i, true)",
    "-args.a < 0 && args.a % 2 == 0 && args.a / 2 - 1 * 3 != 4 && args.l[0] <= 1 && !(args.a >= 9) ? true : false",
    'int(args.n) + 1 > 0 && string(args.n) != "" && duration("1s") > duration("0s")',
])
def test_operators_macros_and_supported_functions_still_compile(source: str) -> None:
    Condition.compile(source)


def test_a_syntax_error_is_one_line_with_its_column() -> None:
    with pytest.raises(CelCompileError) as caught:
        Condition.compile("args.amount >")
    text = str(caught.value)
    assert "\n" not in text and text.startswith("invalid CEL: column 14: Syntax error"), text
    with pytest.raises(CelCompileError) as caught:
        Condition.compile("args.a > 1 &&\n  )")
    assert str(caught.value).startswith("invalid CEL: line 2 of the condition, column 3: Syntax error"), caught.value


POLICY = """\
identity: {api_keys: true}
servers:
  bank: {url: 'http://127.0.0.1:1/mcp'}
policies:
  - {name: allow-all, match: {servers: [bank]}, effect: allow}
  - name: no-etc
    match: {servers: [bank]}
    when: 'args.path.startwith("/etc")'
    effect: deny
  - name: bad-syntax
    when: 'args.amount >'
    effect: deny
  - name: approve-noone
    effect: approve
  - name: masked-deny
    effect: deny
    mask: nosuch
"""


def test_every_policy_problem_is_reported_with_its_rule_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(POLICY, "p.yaml", env={})
    problems = caught.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith("line 8: policies[1].when: policy rule 'no-etc': unknown function(s) 'startwith'")
    assert problems[1].startswith("line 11: policies[2].when: policy rule 'bad-syntax': invalid CEL: column 14: ")
    assert problems[2] == ("line 13: policies[3].approvers: policy rule 'approve-noone': an approve rule needs "
                           "approvers (groups and/or subjects)")
    assert problems[3].startswith("line 17: policies[4].mask: policy rule 'masked-deny': unknown masking profile")
    assert all("\n" not in p for p in problems)


def test_a_duplicate_rule_name_names_the_line_of_the_duplicate() -> None:
    text = ("identity: {api_keys: true}\nservers:\n  bank: {url: 'http://127.0.0.1:1/mcp'}\npolicies:\n"
            "  - name: r1\n    effect: allow\n  - name: r2\n    effect: allow\n  - name: r1\n    effect: deny\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "d.yaml", env={})
    assert caught.value.problems == [("line 9: policies[2].name: policy rule name 'r1' is used twice "
                                      "(first by policies[0])")]


def test_config_validate_refuses_a_misspelled_function_on_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "celtypo.yaml"
    cfg.write_text(POLICY.split("  - name: bad-syntax")[0])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LEDGERGATE_DEBUG")}
    run = subprocess.run([sys.executable, "-m", "ledgergate.cli", "config", "validate", "-c", str(cfg)],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert "line 8: policies[1].when: policy rule 'no-etc': unknown function(s) 'startwith'" in lines[0], lines[0]
